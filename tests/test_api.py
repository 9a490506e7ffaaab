"""The public Python API, used as the README shows (at a tiny size)."""

import functools

import pytorch_lightning as pl
import torch

from unet_lab import DiceCELoss, SegmentationModule, SyntheticShapesDataModule, UNet


def test_readme_python_api(tmp_path) -> None:
    net = UNet(in_channels=3, num_classes=4, depth=2, width=8, up_mode="bilinear")
    data = SyntheticShapesDataModule(
        image_size=32, num_classes=4, train_size=16, val_size=4, test_size=4, batch_size=8
    )
    module = SegmentationModule(
        net,
        DiceCELoss(),
        functools.partial(torch.optim.AdamW, lr=3e-3),
        class_names=data.class_names,
        channels_last=True,
    )
    trainer = pl.Trainer(
        max_epochs=1,
        precision="bf16-mixed",
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, datamodule=data)
    scores = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert {"val/dice", "val/iou", "val/acc", "val/dice_triangle"} <= set(scores)
    assert trainer.global_step == 2
