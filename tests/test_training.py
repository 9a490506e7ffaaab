"""Short real trainings through Hydra's compose API."""

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import FAST, TINY_DATA, compose_config

from unet_lab.inference.trained import load_trained
from unet_lab.runs.checkpoints import CONFIG_KEY
from unet_lab.training import build, train

SMALL = [
    "logger=csv",
    "callbacks.validation_images=null",
    "data.num_classes=2",
    "data.image_size=64",
    "data.train_size=256",
    "data.val_size=32",
    "data.test_size=32",
    "model.depth=3",
    "model.width=8",
    "trainer.max_epochs=5",
    "trainer.enable_progress_bar=false",
]


def _chance_dice(tmp_path: Path) -> float:
    """Dice of the best trivial answer: every pixel foreground."""
    datamodule = build(compose_config(tmp_path, SMALL)).datamodule
    masks = np.stack(datamodule.load_split("val")[1])
    p = float((masks > 0).mean())
    return 2 * p / (1 + p)


def test_short_training_learns_well_above_chance(tmp_path: Path) -> None:
    summary = train(compose_config(tmp_path, SMALL))
    chance = _chance_dice(tmp_path / "chance")
    val_dice = summary["val"]["dice"]
    assert summary["status"] == "completed"
    assert val_dice > max(0.6, chance + 0.25), (val_dice, chance)
    assert summary["test"]["dice"] > max(0.6, chance + 0.25)
    assert summary["optimized_metric"]["value"] == val_dice

    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["val"]["dice"] == val_dice
    assert written["epochs_completed"] == 5
    assert (tmp_path / "checkpoints" / "best.ckpt").exists()
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()

    checkpoint = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)
    config = checkpoint[CONFIG_KEY]
    assert config["model"]["depth"] == 3 and config["data"]["num_classes"] == 2
    assert checkpoint["epoch"] == summary["best_epoch"]


def test_surface_distances_and_rand_error_are_logged(tmp_path: Path) -> None:
    overrides = [*FAST, *TINY_DATA, "data.num_classes=2", "module.boundary_class=1"]
    summary = train(compose_config(tmp_path, overrides))
    assert {"hd95", "asd", "hd95_shape", "asd_shape", "rand_error"} <= set(summary["test"])
    assert all(0 <= summary["test"][k] < 100 for k in ("hd95", "asd"))  # pixels, 32 px images
    assert 0.0 <= summary["val"]["rand_error"] <= 1.0


@pytest.mark.slow
def test_a_compiled_network_trains_and_its_checkpoint_loads(tmp_path: Path) -> None:
    """``module.compile=true`` (``torch.compile`` in place): checkpoints keep the plain names."""
    overrides = [*FAST, *TINY_DATA, "module.compile=true", "trainer.max_epochs=1", "test=false"]
    summary = train(compose_config(tmp_path, overrides))
    assert summary["status"] == "completed"
    trained = load_trained(tmp_path / summary["best_checkpoint"])  # strict: same keys as UNet
    assert not any("_orig_mod" in key for key in trained.net.state_dict())


def _gradient_norm(module: torch.nn.Module) -> float:
    norms = [p.grad.norm() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(norms).norm())


class GradientRecord(pl.Callback):
    """The gradient norm of each optimizer step before clipping (Lightning calls
    ``on_before_optimizer_step`` between the backward pass and the clipping) and as the
    optimizer used it (at the end of the step's batch: gradients are zeroed only when the next
    accumulation begins), and the optimizer steps taken after each batch."""

    def __init__(self) -> None:
        self.before: list[float] = []
        self.after: list[float] = []
        self.steps: list[int] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before.append(_gradient_norm(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > (self.steps[-1] if self.steps else 0):
            self.after.append(_gradient_norm(pl_module))
        self.steps.append(trainer.global_step)


def test_accumulation_and_clipping(tmp_path: Path) -> None:
    """Two batches per optimizer step (4 batches an epoch, 2 epochs: a step after every second
    batch), and every step's gradients clipped to the norm gradient_clip_val."""
    clip = 0.01  # below the gradient norm of every step here: each one must be clipped
    overrides = [
        *FAST,
        *TINY_DATA,
        "trainer.limit_train_batches=4",
        "trainer.accumulate_grad_batches=2",
        f"trainer.gradient_clip_val={clip}",
    ]
    experiment = build(compose_config(tmp_path, overrides))
    record = GradientRecord()
    experiment.trainer.callbacks.append(record)
    experiment.trainer.fit(experiment.module, datamodule=experiment.datamodule)
    assert record.steps == [0, 1, 1, 2, 2, 3, 3, 4]
    assert experiment.trainer.global_step == len(record.before) == len(record.after) == 4
    assert min(record.before) > clip, record.before
    assert record.after == pytest.approx([clip] * 4, rel=1e-3)
