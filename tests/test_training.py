"""Short real trainings through Hydra's compose API."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, TINY_DATA, compose_config

from unet_lab.callbacks import ConfigInCheckpoint
from unet_lab.inference import load_trained
from unet_lab.train import build, train

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
    config = checkpoint[ConfigInCheckpoint.KEY]
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


def test_accumulation_and_clipping(tmp_path: Path) -> None:
    """Two batches per optimizer step: half the steps of the plain run, same epochs."""
    base = [*FAST, *TINY_DATA, "test=false", "trainer.limit_train_batches=4"]
    plain = train(compose_config(tmp_path / "plain", base))
    accumulated = train(
        compose_config(
            tmp_path / "acc",
            [*base, "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=0.5"],
        )
    )
    assert accumulated["status"] == "completed"
    assert accumulated["global_step"] * 2 == plain["global_step"]
