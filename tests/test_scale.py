"""``data.scale``: training and validation while fitting at a working resolution; the final
validation, the test, eval.py and predict.py at each image's own size, with the network's
probabilities resampled back before the argmax; the factor travels in the checkpoint."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import FAST, compose_config, run_cli
from folders import write_dataset
from torch import nn

from unet_lab.commands.evaluate import main as eval_main
from unet_lab.commands.predict import main as predict_main
from unet_lab.data import FolderDataModule
from unet_lab.data.normalization import Normalizer
from unet_lab.data.scaling import (
    auto_scale,
    probabilities_at,
    resample_image,
    resample_mask,
    structure_depth,
    working_size,
)
from unet_lab.errors import one_line
from unet_lab.inference.sliding_window import SlidingWindowPredictor
from unet_lab.inference.trained import TrainedNetwork, load_trained
from unet_lab.training import build, train

SIZES = [(96, 128), (80, 112)]  # native; at data.scale=0.5: 48x64 and 40x56


def test_resampling_keeps_dtype_axes_labels_and_geometry() -> None:
    rng = np.random.default_rng(0)
    grey16 = rng.integers(0, 65535, (40, 50, 1)).astype(np.uint16)
    out = resample_image(grey16, 0.5)
    assert out.shape == (20, 25, 1) and out.dtype == np.uint16
    assert out[0, 0, 0] == round(grey16[:2, :2, 0].mean())  # area: the mean it covers
    wide = rng.integers(-5, 5, (40, 50, 7)).astype(np.int32)  # a type OpenCV cannot resize
    assert resample_image(wide, 0.5).shape == (20, 25, 7)
    assert resample_image(wide, 0.5).dtype == np.int32
    mask = np.zeros((40, 50), np.uint8)
    mask[8:16, 10:30] = 2
    mask[:2] = 255  # ignore_index: labels are picked, never mixed
    small = resample_mask(mask, 0.5)
    assert small.shape == (20, 25) and set(np.unique(small)) == {0, 2, 255}
    assert (small == 2).nonzero()[0].min() == 4 and (small == 2).nonzero()[1].max() == 14
    assert working_size(81, 113, 0.5) == (40, 56) and working_size(81, 113, 1.0) == (81, 113)
    probs = torch.softmax(torch.randn(1, 3, 10, 12), dim=1)
    native = probabilities_at(probs, (20, 24))
    assert native.shape == (1, 3, 20, 24) and torch.allclose(native.sum(1), torch.ones(1, 20, 24))


def test_auto_takes_the_median_shorter_side_to_two_patches_and_never_enlarges() -> None:
    assert auto_scale([1100, 1100, 900, 1300], 256) == 0.46  # 512 / 1100, two digits, down
    assert auto_scale([2048], None) == 0.25  # without data.patch_size: 256 px patches
    assert auto_scale([40000], 256) == 0.012
    assert auto_scale([512] * 30, 256) == 1.0  # ISBI 2012 with its 256 px patches: unchanged
    assert auto_scale([330, 600], None) == 1.0  # small images are never enlarged
    assert auto_scale([2048], None, depth=50.0) == 0.25  # large objects: no limit
    assert auto_scale([2048], None, depth=8.0) == 0.5  # small ones stay 4 px deep
    assert auto_scale([2048], None, depth=2.0) == 1.0  # thin ones (membranes): native


def test_auto_keeps_small_or_thin_structures_at_native_resolution() -> None:
    large = np.zeros((300, 400), np.uint8)
    cv2.circle(large, (200, 150), 100, 1, -1)  # a disk of radius 100: median depth ~29 px
    assert structure_depth([large], 2) == pytest.approx(29.3, abs=1.5)
    cells = np.zeros((300, 400), np.uint8)
    for x in range(20, 400, 40):
        cv2.circle(cells, (x, 150), 6, 2, -1)  # class 2: small cells, ~2 px deep
    cv2.line(cells, (0, 50), (399, 50), 1, 3)  # class 1: a thin line
    assert structure_depth([cells, large], 3) <= 2  # the thinnest class counts
    assert structure_depth([np.zeros((10, 10), np.uint8)], 2) is None


def test_the_data_module_serves_the_working_resolution_while_fitting(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, count=10, sizes=[SIZES[0]])
    dm = FolderDataModule(
        root=str(root), num_classes=3, scale=0.5, batch_size=2, val_fraction=0.2,
        test_fraction=0.2,
    )  # fmt: skip
    assert dm.scale == 0.5 and dm.patch_size == 48  # the default patch: working pixels
    assert dm.load_split("train")[0][0].shape == (96, 128, 3)  # kept as read
    images, masks = dm.working_split("train")
    assert images[0].shape == (48, 64, 3) and images[0].dtype == np.uint8
    assert masks[0].shape == (48, 64)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 48, 48)
    val = next(iter(dm.val_dataloader()))  # no trainer: fitting
    assert val["image"].shape[-2:] == (48, 64) and val["mask"].shape[-2:] == (48, 64)
    dm.setup("validate")  # the final validation: masks at their own size
    native = dm.datasets["val:native"][0]
    assert native["image"].shape == (3, 48, 64) and native["mask"].shape == (96, 128)
    dm.setup("test")
    assert dm.datasets["test:native"][0]["mask"].shape == (96, 128)
    # auto: 2 patches of 16 px would be 0.33, but the 12 px squares keep the native size.
    assert FolderDataModule(root=str(root), num_classes=3, scale="auto", patch_size=16).scale == 1
    for path in (root / "masks").iterdir():  # large objects instead: 0.33 it is
        mask = np.zeros(SIZES[0], np.uint8)
        mask[10:90, 20:120] = 1
        cv2.imwrite(str(path), mask)
    auto = FolderDataModule(root=str(root), num_classes=3, scale="auto", patch_size=16)
    assert auto.scale == 0.33  # median shorter side 96 px -> 32 px
    assert auto.working_split("train")[0][0].shape == (32, 42, 3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "data.scale=0 is not valid: expected a number in (0, 1] or auto"),
        ("1.5", "data.scale=1.5 is not valid: expected a number in (0, 1] or auto"),
        ("big", "data.scale='big' is not valid: expected one of auto or a number"),
    ],
)
def test_bad_scales_are_refused_naming_the_key(value: str, expected: str, tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", count=6)
    overrides = [*FAST, "data=folder", f"data.root={root}", "data.num_classes=3"]
    with pytest.raises(Exception) as failure:
        build(compose_config(tmp_path / "run", [*overrides, f"data.scale={value}"]))
    assert one_line(failure.value) == expected


def test_a_bad_scale_on_the_command_line_exits_with_one_line(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", count=6)
    args = ["data=folder", f"data.root={root}", "data.num_classes=3", "data.scale=-0.5"]
    result = run_cli([*args, "logger=csv"], cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: data.scale=-0.5 is not valid: expected a number in (0, 1] or auto"]
    assert not list(tmp_path.glob("runs/*/*"))


def test_probabilities_are_resampled_before_the_argmax() -> None:
    """A ramp whose class boundary falls between two working-resolution pixels: resampling
    the probabilities finds the native column, upsampling the labels would not."""
    net = nn.Conv2d(1, 2, 1)
    with torch.no_grad():  # logit of class 1: (column - 20.2); of class 0: 0
        net.weight.copy_(torch.tensor([0.0, 63.0]).view(2, 1, 1, 1))
        net.bias.copy_(torch.tensor([0.0, -20.2]))
    trained = TrainedNetwork(net.eval(), ["a", "b"], 1, Normalizer("none"), {}, scale=0.5)
    ramp = np.tile(np.arange(64, dtype=np.float32) / 63, (8, 1))[..., None]  # value: column/63
    assert trained.prepare(ramp).shape == (1, 1, 4, 32)
    labels = trained.predict(ramp).argmax(dim=0).numpy()
    assert labels.shape == (8, 64)
    assert (labels == (np.arange(64) >= 21)).all()  # the native boundary, exactly
    with torch.no_grad():
        working = net(trained.prepare(ramp))[0].argmax(0).numpy()  # labels at (4, 32)
    upsampled_labels = working[0].repeat(2)
    assert (upsampled_labels != (np.arange(64) >= 21)).any()  # what upsampling labels gives


@pytest.fixture(scope="module")
def scaled_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("scaled")
    root = write_dataset(tmp / "data", count=10, sizes=SIZES)
    overrides = [*FAST, "data=folder", f"data.root={root}", "data.num_classes=3"]
    overrides += ["data.scale=0.5", "data.patch_size=32", "data.test_fraction=0.2"]
    # float32, as eval.py predicts: the run's scores are then reproduced exactly.
    summary = train(compose_config(tmp / "run", [*overrides, "trainer.precision=32-true"]))
    return root, tmp / "run", summary


def test_final_validation_and_test_score_at_native_size(scaled_run, tmp_path: Path) -> None:
    _, run, summary = scaled_run
    assert summary["status"] == "completed" and summary["data_scale"] == 0.5
    assert set(summary["val_working_resolution"]) == set(summary["val"])  # while fitting
    assert summary["optimized_metric"]["value"] == summary["val"]["dice"]
    checkpoint = run / summary["best_checkpoint"]
    facts = torch.load(checkpoint, weights_only=True)["unet_lab_data"]
    assert facts["scale"] == 0.5 and load_trained(checkpoint).scale == 0.5
    # eval.py scores each image at its own size against the mask as stored: the run's
    # final validation and test scores are the same numbers.
    for split in ("val", "test"):
        eval_main([f"ckpt_path={checkpoint}", f"split={split}", f"output={tmp_path / split}"])
        scores = json.loads((tmp_path / split / "metrics.json").read_text())
        assert scores["scale"] == 0.5
        for key in ("dice", "iou", "acc"):
            expected = summary[split][key]
            assert scores["scores"][key] == pytest.approx(expected, rel=1e-4, abs=1e-6), key


def test_predict_writes_masks_at_each_inputs_size(scaled_run, tmp_path: Path) -> None:
    root, run, summary = scaled_run
    checkpoint = run / summary["best_checkpoint"]
    out = tmp_path / "masks"
    predict_main([f"ckpt_path={checkpoint}", f"input={root / 'images'}", f"output={out}",
                  "probabilities=true"])  # fmt: skip
    trained = load_trained(checkpoint)
    for path in sorted((root / "images").iterdir())[:2]:
        image = cv2.imread(str(path))
        labels = cv2.imread(str(out / path.name), cv2.IMREAD_UNCHANGED)
        assert labels.shape == image.shape[:2] in SIZES
        assert np.load(out / f"{path.stem}_probs.npy").shape == (3, *image.shape[:2])
        # The probabilities of the working resolution, resampled, then the argmax.
        rgb = image[..., ::-1].copy()
        working = SlidingWindowPredictor()(trained.net, trained.prepare(rgb)[0])
        assert working.shape[-2:] == (image.shape[0] // 2, image.shape[1] // 2)
        expected = probabilities_at(working, image.shape[:2]).argmax(dim=0).numpy()
        assert (labels == expected).all()
