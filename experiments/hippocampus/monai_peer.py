"""The MONAI peer recipe for the hippocampus comparison, as MONAI's own tutorials train a 3D
network: MONAI's transforms (load, orientation, spacing, per-volume z-score over non-zero
voxels, crop to the foreground, positive/negative patch sampling, flips, intensity shifts),
its residual ``UNet``, ``DiceCELoss`` and ``sliding_window_inference`` with Gaussian blending.

Two sub-commands, each run by ``run.py`` in a process of its own (so that its peak memory is its
own):

    train    trains on the given cases for a number of steps (the same as unet-lab's run),
             validating every ``--validate-every`` steps and keeping the best mean Dice, then
             writes the best network's label volume for each validation case (file geometry)
    predict  predicts one volume with a saved network (peak memory of a large volume)

Settings that both frameworks share come from ``run.py``: patch size, batch size, steps,
optimizer (AdamW, lr 1e-3, weight decay 1e-4), warm-up + cosine schedule, fp32.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from unet_lab.training.schedulers import warmup_cosine

KEYS = ["image", "label"]


def _network(num_classes: int) -> torch.nn.Module:
    from monai.networks.nets import UNet

    # MONAI's tutorial network (residual units), three poolings like unet-lab's recipe.
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=num_classes,
        channels=(16, 32, 64, 128),
        strides=(2, 2, 2),
        num_res_units=2,
        norm="batch",
    )


def _load_transforms() -> list[Any]:
    from monai.transforms import (
        EnsureChannelFirstd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        Spacingd,
    )

    return [
        LoadImaged(keys=KEYS, allow_missing_keys=True),
        EnsureChannelFirstd(keys=KEYS, allow_missing_keys=True),
        Orientationd(keys=KEYS, axcodes="RAS", allow_missing_keys=True),
        Spacingd(
            keys=KEYS,
            pixdim=(1.0, 1.0, 1.0),
            mode=("bilinear", "nearest"),
            allow_missing_keys=True,
        ),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
    ]


def _train_transforms(patch: tuple[int, int, int]) -> Any:
    from monai.transforms import (
        Compose,
        CropForegroundd,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    return Compose(
        [
            *_load_transforms(),
            CropForegroundd(keys=KEYS, source_key="image", allow_smaller=True),
            SpatialPadd(keys=KEYS, spatial_size=patch),
            # One patch in three centred on foreground, as nnU-Net (and unet-lab) oversample.
            RandCropByPosNegLabeld(
                keys=KEYS, label_key="label", spatial_size=patch, pos=1, neg=2, num_samples=1
            ),
            *[RandFlipd(keys=KEYS, prob=0.5, spatial_axis=axis) for axis in range(3)],
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        ]
    )


def _infer(net: torch.nn.Module, image: torch.Tensor, patch: tuple[int, ...], overlap: float):
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        return sliding_window_inference(
            image, roi_size=patch, sw_batch_size=4, predictor=net, overlap=overlap,
            mode="gaussian",
        )  # fmt: skip


def _mean_dice(net: torch.nn.Module, loader: Any, patch: tuple[int, ...], classes: int) -> float:
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    metric = DiceMetric(include_background=False, reduction="mean")
    net.eval()
    for batch in loader:
        logits = _infer(net, batch["image"], patch, 0.5)
        predicted = one_hot(logits.argmax(1, keepdim=True), classes)
        metric(predicted, one_hot(batch["label"].long(), classes))
    net.train()
    return float(metric.aggregate().item())


def train(spec: dict[str, Any]) -> dict[str, Any]:
    """Trains on ``spec["train"]`` (image/label paths) and predicts ``spec["val"]``."""
    from monai.data import CacheDataset, DataLoader, Dataset
    from monai.losses import DiceCELoss
    from monai.transforms import Compose
    from monai.utils import set_determinism

    set_determinism(seed=spec["seed"])
    patch = tuple(spec["patch_size"])
    classes = spec["num_classes"]
    train_data = CacheDataset(spec["train"], _train_transforms(patch), progress=False)
    loader = DataLoader(train_data, batch_size=spec["batch_size"], shuffle=True, drop_last=True)
    val_loader = DataLoader(Dataset(spec["val"], Compose(_load_transforms())), batch_size=1)
    net = _network(classes)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = warmup_cosine(optimizer, spec["steps"])  # unet-lab's schedule, as its run
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    step, best, best_step = 0, -1.0, 0
    weights = Path(spec["output"]) / "best.pt"
    started = time.perf_counter()  # training with its validations, as unet-lab's time counts
    while step < spec["steps"]:
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(net(batch["image"]), batch["label"])
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % spec["validate_every"] == 0 or step == spec["steps"]:
                dice = _mean_dice(net, val_loader, patch, classes)
                if dice > best:
                    best, best_step = dice, step
                    torch.save(net.state_dict(), weights)
            if step == spec["steps"]:
                break
    training_seconds = time.perf_counter() - started
    net.load_state_dict(torch.load(weights))
    net.eval()
    for case, batch in zip(spec["val"], val_loader, strict=True):
        logits = _infer(net, batch["image"], patch, 0.5)
        _write_label(logits, batch["image"], Path(spec["output"]) / Path(case["image"]).name)
    return {
        "steps": step,
        "seconds_per_step": round(training_seconds / step, 3),
        "best_step": best_step,
        "best_val_dice_monai": round(best, 4),
    }


def _write_label(logits: torch.Tensor, image: Any, path: Path) -> None:
    """The argmax label volume, with the (RAS) affine of the image it was predicted on."""
    label = logits.argmax(1)[0].numpy().astype(np.uint8)
    affine = np.asarray(image.affine[0] if image.affine.ndim == 3 else image.affine)
    nib.save(nib.Nifti1Image(label, affine), path)


def predict(spec: dict[str, Any]) -> dict[str, Any]:
    """One volume through the saved network, as the peer would predict a new scan."""
    from monai.transforms import Compose

    patch = tuple(spec["patch_size"])
    net = _network(spec["num_classes"])
    net.load_state_dict(torch.load(spec["weights"]))
    net.eval()
    started = time.perf_counter()
    batch = Compose(_load_transforms())({"image": spec["input"]})
    image = batch["image"][None]
    logits = _infer(net, image, patch, spec["overlap"])
    _write_label(logits, image, Path(spec["output"]))
    return {"seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["train", "predict"])
    parser.add_argument("spec", type=Path, help="JSON settings written by run.py")
    parser.add_argument("result", type=Path, help="JSON file to write")
    options = parser.parse_args()
    spec = json.loads(options.spec.read_text())
    result = (train if options.command == "train" else predict)(spec)
    result["peak_memory_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    options.result.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
