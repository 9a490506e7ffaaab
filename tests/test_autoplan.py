"""unet-lab autoplan: the rules (a fingerprint in, a plan out), the fingerprint of a folder, and
the command end to end (its plan trains with the printed command)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli, run_unet_lab
from folders import write_dataset, write_volume_dataset
from omegaconf import OmegaConf

from unet_lab.autoplan.budget import Rates, apply_budget, validation_voxels, working_shape
from unet_lab.autoplan.fingerprint import CaseFacts, ClassFacts, Fingerprint
from unet_lab.autoplan.measure import parse_budget
from unet_lab.autoplan.rules import (
    MEDIUM_BRIGHTNESS,
    MEDIUM_CONTRAST,
    MEDIUM_GAMMA,
    Device,
    plan_from,
)
from unet_lab.autoplan.sources import fingerprint_of
from unet_lab.config.compose import compose_train_config
from unet_lab.training.build import build_datamodule, warn_if_data_changed

CPU = Device("cpu", 4 * 2**30, "test CPU")


def _bytes(model: dict, patch: list[int]) -> int:
    return 4 * 40 * model["width"] * math.prod(patch)  # about what a U-Net keeps, per sample


def _fingerprint(
    kind: str = "images",
    shapes: list[list[int]] | None = None,
    spacing: list[float] | None = None,
    shares: tuple[float, ...] = (0.9, 0.1),
    diameters: tuple[float, ...] = (0.0, 20.0),
    depths: tuple[float | None, ...] = (None, 6.0),
    names: tuple[str, ...] = ("background", "object"),
    largest: float = 1.0,
    channels: int = 1,
    dtype: str = "uint8",
    low: float = 0.0,
    means: list[list[float]] | None = None,
    spread: float = 60.0,
) -> Fingerprint:
    shapes = shapes or [[512, 512]] * 10
    means = means or [[100.0] * channels] * len(shapes)
    cases = [
        CaseFacts(f"case{i}", shape, spacing, dtype, mean, [20.0] * channels,
                  [int(s * 1000) for s in shares], 0)
        for i, (shape, mean) in enumerate(zip(shapes, means, strict=True))
    ]  # fmt: skip
    dims = len(shapes[0])
    classes = []
    for index, (name, share, diameter, depth) in enumerate(
        zip(names, shares, diameters, depths, strict=True)
    ):
        size = math.pi * (diameter / 2) ** 2 if dims == 2 else math.pi * diameter**3 / 6
        classes.append(
            ClassFacts(
                name, share, 1.0, largest if index == 0 else 0.0, 1.0,
                {"p10": size / 2, "median": size, "p90": size * 2} if index else {},
                diameter, depth,
            )
        )  # fmt: skip
    return Fingerprint(
        kind=kind, root="/data", files_hash="0" * 16, num_classes=len(names),
        class_names=list(names), channels=channels, dtypes=[dtype], sizes_vary=False,
        median_shape=[float(v) for v in np.median(shapes, axis=0)],
        median_spacing=spacing,
        intensity=[{"overall": {"min": low, "p99_5": 1000.0, "mean": float(np.mean(means)),
                                "std": spread}, "foreground": {}}] * channels,
        classes=classes, cases=cases,
    )  # fmt: skip


def test_thick_slices_get_nnunets_spacing_patch_and_pooling() -> None:
    fingerprint = _fingerprint("volumes", [[40, 300, 300]] * 8, [5.0, 0.7, 0.7])
    plan = plan_from(fingerprint, CPU, _bytes)
    assert plan.get("data.target_spacing") == [5.0, 0.7, 0.7]
    patch = plan.get("data.patch_size")
    assert math.prod(patch) <= 2**18 and patch[0] <= 40 and patch[0] < min(patch[1:])
    assert abs(patch[1] - patch[2]) <= 8  # in-plane shrunk in turns, on the pooling grid of 8
    # shrunk from the longest physical extent: z and in-plane span similar millimetres
    assert 0.5 < patch[0] * 5.0 / (patch[1] * 0.7) < 2
    assert plan.get("model.spacing") == "auto" and plan.get("model.depth") >= 3
    assert plan.get("data.normalization") == "mr" and plan.defaults["data"] == "volumes"


def test_small_cases_fit_whole_in_a_patch_on_the_pooling_grid() -> None:
    fingerprint = _fingerprint("volumes", [[36, 50, 35]] * 6, [1.0, 1.0, 1.0])
    plan = plan_from(fingerprint, CPU, _bytes)
    assert plan.get("data.patch_size") == [40, 56, 40] and plan.get("model.depth") == 3


def test_volumes_on_a_cpu_get_at_most_three_levels_and_on_a_gpu_more() -> None:
    fingerprint = _fingerprint("volumes", [[20, 80, 80]] * 8, [4.0, 0.8, 0.8])
    assert plan_from(fingerprint, CPU, _bytes).get("model.depth") == 3
    gpu = Device("cuda", 40 * 2**30, "test GPU")
    assert plan_from(fingerprint, gpu, _bytes).get("model.depth") == 4  # 20 / 4 >= 4 voxels


def test_hounsfield_units_get_ct_normalization() -> None:
    fingerprint = _fingerprint("volumes", [[64, 64, 64]] * 4, [1.0, 1.0, 1.0],
                               dtype="int16", low=-1024.0)  # fmt: skip
    assert plan_from(fingerprint, CPU, _bytes).get("data.normalization") == "ct"


def test_large_objects_in_large_photographs_lower_the_working_resolution() -> None:
    large = _fingerprint(shapes=[[3000, 4000]] * 5, diameters=(0.0, 1500.0), depths=(None, 400))
    plan = plan_from(large, CPU, _bytes)
    assert plan.get("data.scale") <= 0.75 * 256 / (1500 * math.sqrt(2)) + 1e-9
    assert plan.get("data.patch_size") == 256
    # thin structures keep the native resolution, whatever the image size
    thin = _fingerprint(shapes=[[3000, 4000]] * 5, diameters=(0.0, 1500.0), depths=(None, 2.0))
    assert plan_from(thin, CPU, _bytes).get("data.scale") == 1.0
    small = _fingerprint(shapes=[[96, 96]] * 5)
    plan = plan_from(small, CPU, _bytes)
    assert plan.get("data.scale") == 1.0 and plan.get("data.patch_size") is None  # whole


def test_rare_small_classes_get_oversampling_and_larger_weights() -> None:
    fingerprint = _fingerprint(
        shapes=[[1024, 1024]] * 10,
        shares=(0.895, 0.1, 0.005),
        diameters=(0.0, 200.0, 8.0),
        depths=(None, 50.0, 4.0),
        names=("background", "organ", "lesion"),
    )
    plan = plan_from(fingerprint, CPU, _bytes)
    assert plan.get("data.foreground_oversample") == 0.5
    weights = plan.get("loss.class_weights")
    assert weights[0] == 1.0 and weights[1] == 1.0 and weights[2] > 3
    balanced = _fingerprint(shares=(0.8, 0.1, 0.1), diameters=(0, 20, 20), depths=(None, 6, 6),
                            names=("background", "a", "b"))  # fmt: skip
    assert plan_from(balanced, CPU, _bytes).get("loss.class_weights") is None


def test_tiny_rare_spots_get_smaller_patches_and_a_weighted_cross_entropy() -> None:
    spots = _fingerprint(shapes=[[768, 1024]] * 10, shares=(0.9998, 0.0002),
                         diameters=(0.0, 5.0), depths=(None, 1.0))  # fmt: skip
    plan = plan_from(spots, CPU, _bytes)
    # p90 objects of 2 x 19.6 px (diameter 7.1): 16 diameters -> 114 -> 128 px, not 256
    assert plan.get("data.patch_size") == 128
    assert plan.get("model.depth") == 5  # 128 px pooled to 4 px
    assert plan.get("data.foreground_oversample") == 0.5
    assert plan.get("loss.class_weights") == [1.0, 10.0]
    # objects as large as the patch allows, and a common class, keep the defaults
    common = _fingerprint(shapes=[[768, 1024]] * 10, shares=(0.9, 0.1), diameters=(0.0, 40.0))
    plan = plan_from(common, CPU, _bytes)
    assert plan.get("data.patch_size") == 256 and plan.get("loss.class_weights") is None


def test_class_zero_is_background_only_when_it_dominates_and_is_named_so() -> None:
    assert plan_from(_fingerprint(), CPU, _bytes).get("module.include_background") is False
    sky = _fingerprint(names=("sky", "road"))
    assert plan_from(sky, CPU, _bytes).get("module.include_background") is True
    minority = _fingerprint(largest=0.3)
    assert plan_from(minority, CPU, _bytes).get("module.include_background") is True


def test_colour_photographs_keep_up_and_down_and_the_flag_keeps_left_and_right() -> None:
    photos = _fingerprint(channels=3, means=[[120.0, 100.0, 80.0]] * 10)
    plan = plan_from(photos, CPU, _bytes, orientation_matters=True)
    transforms = plan.get("augmentation.train.transforms")
    assert transforms == {"vflip": None, "rotate90": None, "hflip": None}
    grey = plan_from(_fingerprint(), CPU, _bytes)
    assert grey.get("augmentation.train.transforms") is None  # every flip and rotation
    grey_fixed = plan_from(_fingerprint(), CPU, _bytes, orientation_matters=True)
    assert grey_fixed.get("augmentation.train.transforms") == {"hflip": None, "rotate90": None}
    volumes = _fingerprint("volumes", [[40, 60, 60]] * 4, [1.0, 1.0, 1.0])
    fixed = plan_from(volumes, CPU, _bytes, orientation_matters=True)
    assert fixed.get("augmentation.train.transforms") == {
        "flip": {"axes": [0, 1]},
        "rotate90": None,
    }


def test_normalization_follows_the_spread_of_image_brightness() -> None:
    steady = _fingerprint(means=[[100.0]] * 10)
    assert plan_from(steady, CPU, _bytes).get("data.normalization") == "dataset"
    varying = _fingerprint(means=[[v] for v in (20.0, 200.0) * 5])
    assert plan_from(varying, CPU, _bytes).get("data.normalization") == "image"


def test_intensity_augmentation_moves_the_mean_by_at_most_one_standard_deviation() -> None:
    medium = OmegaConf.load(REPO / "conf" / "augmentation" / "medium.yaml").train.transforms
    assert medium.brightness_contrast.brightness_limit == MEDIUM_BRIGHTNESS
    assert medium.brightness_contrast.contrast_limit == MEDIUM_CONTRAST
    assert list(medium.gamma.gamma_limit) == [100 * (1 - MEDIUM_GAMMA), 100 * (1 + MEDIUM_GAMMA)]
    # 8-bit photographs spread over the range: the preset as it is
    wide = plan_from(_fingerprint(spread=60.0), CPU, _bytes)
    assert wide.get("augmentation.train.transforms") is None
    # 16-bit spots: a background of 20,000 +- 3,000 grey values
    narrow = _fingerprint(dtype="uint16", means=[[20000.0]] * 10, spread=3000.0)
    transforms = plan_from(narrow, CPU, _bytes).get("augmentation.train.transforms")
    spread, mean = 3000 / 65535, 20000 / 65535
    limits = transforms["brightness_contrast"]
    assert 0.9 * spread <= limits["brightness_limit"] <= spread
    assert 0.9 * spread / mean <= limits["contrast_limit"] <= spread / mean
    low, high = transforms["gamma"]["gamma_limit"]
    assert high - 100 == 100 - low and 0 < (high - 100) / 100 <= spread / abs(mean * math.log(mean))


def test_the_budget_becomes_epochs_at_the_measured_rate() -> None:
    plan = plan_from(_fingerprint(), CPU, _bytes)
    cheap = Rates(steps_per_second=2.0, inference_voxels_per_second=1e9)  # validation: ~2 s
    apply_budget(plan, budget_seconds=630, rates=cheap, train_cases=10, validation_voxels=10**6)
    one_validation = 2.0 + 1e-3
    steps = int((630 - 5 - 20 * one_validation) * 0.9 * 2.0)
    per_epoch = plan.get("data.samples_per_epoch") // plan.get("data.batch_size")
    assert plan.get("trainer.max_epochs") == steps // per_epoch == 20
    assert [reason for reason in plan.reasons if reason[0].startswith("trainer.max_epochs")]


def test_a_costly_validation_is_run_less_often_and_its_time_is_not_planned_for_training() -> None:
    plan = plan_from(_fingerprint(), CPU, _bytes)
    slow = Rates(steps_per_second=2.0, inference_voxels_per_second=1e6)
    apply_budget(plan, budget_seconds=630, rates=slow, train_cases=10, validation_voxels=28 * 10**6)
    # 30 s per validation: 15 % of 625 s pays for 3 of them
    per_epoch = plan.get("data.samples_per_epoch") // plan.get("data.batch_size")
    steps = int((625 - 3 * 30.0) * 0.9 * 2.0)
    assert plan.get("trainer.max_epochs") == 3
    assert per_epoch == steps // 3
    # one validation even when it costs more than the share
    apply_budget(plan, budget_seconds=60, rates=slow, train_cases=10, validation_voxels=10**8)
    assert plan.get("trainer.max_epochs") == 1


def test_validation_voxels_follow_the_sliding_window() -> None:
    assert validation_voxels([100, 120], cases=3, tile=None, overlap=0.5) == 3 * 100 * 120
    # 64-voxel tiles at overlap 0.5 step by 32: 0, 32, 36 along 100 (3 tiles); one along 64
    assert validation_voxels([100, 64], cases=1, tile=[64, 64], overlap=0.5) == 3 * 64 * 64
    # an image smaller than the tile is padded to it
    assert validation_voxels([40, 40], cases=2, tile=[64, 64], overlap=0.5) == 2 * 64 * 64


def test_the_working_shape_is_the_median_case_at_the_planned_resolution() -> None:
    images = plan_from(_fingerprint(), CPU, _bytes)
    images.set("data.scale", 0.5, "test")
    assert working_shape(images, _fingerprint()) == [
        round(side * 0.5) for side in _fingerprint().median_shape
    ]
    volumes = _fingerprint("volumes", [[40, 60, 60]] * 4, [2.0, 1.0, 1.0])
    plan = plan_from(volumes, CPU, _bytes)
    plan.set("data.target_spacing", [1.0, 1.0, 1.0], "test")
    assert working_shape(plan, volumes) == [80, 60, 60]


def test_short_volume_runs_get_light_augmentation_and_long_ones_nnunets() -> None:
    volumes = _fingerprint("volumes", [[40, 60, 60]] * 4, [1.0, 1.0, 1.0])
    short, long = plan_from(volumes, CPU, _bytes), plan_from(volumes, CPU, _bytes)
    rates = Rates(steps_per_second=2.0, inference_voxels_per_second=1e9)
    apply_budget(short, 600, rates, train_cases=4, validation_voxels=10**5)  # 999 steps
    apply_budget(long, 7200, rates, train_cases=4, validation_voxels=10**5)  # 12,879
    assert short.defaults["augmentation"] == "volume_light"
    assert long.defaults["augmentation"] == "volume_medium"
    chosen = [key for key, _ in short.reasons if key.startswith("augmentation=")]
    assert chosen == ["augmentation=volume_light"]  # the earlier choice's reason is replaced


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("2h", 7200), ("90s", 90),
                                               ("45", 2700)])  # fmt: skip
def test_budgets_read_as_durations(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


def test_the_fingerprint_of_a_folder_and_of_volumes(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "images", count=6, channels=3, num_classes=3)
    cfg = compose_train_config(["data=folder", f"data.root={root}", "data.num_classes=3"])
    fingerprint = fingerprint_of(cfg.data)
    assert fingerprint.kind == "images" and len(fingerprint.cases) == 6
    assert fingerprint.channels == 3 and fingerprint.median_shape == [48.0, 64.0]
    assert abs(sum(c.share for c in fingerprint.classes) - 1) < 1e-6
    assert fingerprint.classes[1].diameter > 0 and fingerprint.classes[0].largest == 1.0
    assert Fingerprint.from_json(fingerprint.to_json()) == fingerprint
    volumes = write_volume_dataset(tmp_path / "volumes")
    cfg = compose_train_config(["data=volumes", f"data.root={volumes}", "data.num_classes=3"])
    fingerprint = fingerprint_of(cfg.data)
    assert fingerprint.kind == "volumes" and fingerprint.median_spacing is not None
    assert all(len(c.shape) == 3 for c in fingerprint.cases)


def test_square_images_of_one_size_are_planned_whole(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", count=6, sizes=[(32, 32)], num_classes=3)
    args = ["autoplan", "data=folder", f"data.root={root}", "data.num_classes=3", "budget=1m"]
    done = run_unet_lab(args, tmp_path)
    assert done.returncode == 0, done.stderr  # the step rate is measured on whole images
    assert "`data.patch_size=null`" in done.stdout


def test_a_plan_may_not_take_a_built_in_experiments_name(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", count=4)
    done = run_unet_lab(
        ["autoplan", "data=folder", f"data.root={root}", "--name", "isbi2012"], tmp_path
    )
    assert done.returncode == 2 and "--name isbi2012: a built-in experiment" in done.stderr
    assert not (tmp_path / "plans").exists()


def test_generated_data_and_a_bad_budget_are_refused_naming_the_key(tmp_path: Path) -> None:
    done = run_unet_lab(["autoplan", "data=synthetic"], tmp_path)
    assert done.returncode == 2 and "data=folder or data=volumes" in done.stderr
    root = write_dataset(tmp_path / "data")
    done = run_unet_lab(["autoplan", "data=folder", f"data.root={root}", "budget=soon"], tmp_path)
    assert done.returncode == 2 and "budget='soon'" in done.stderr


def test_autoplan_writes_a_plan_that_trains_with_the_printed_command(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_dataset(tmp_path / "data", count=8, channels=1, num_classes=3)
    args = ["autoplan", "data=folder", f"data.root={root}", "data.num_classes=3", "budget=1m",
            "--output", "plans", "--name", "mine"]  # fmt: skip
    explained = run_unet_lab([*args, "--explain"], tmp_path)
    assert explained.returncode == 0, explained.stderr
    assert "| choice | why |" in explained.stdout and not (tmp_path / "plans").exists()
    done = run_unet_lab(args, tmp_path)
    assert done.returncode == 0, done.stderr
    experiment = tmp_path / "plans" / "experiment" / "mine.yaml"
    assert experiment.exists() and (tmp_path / "plans" / "mine" / "fingerprint.json").exists()
    plan_md = (tmp_path / "plans" / "mine" / "plan.md").read_text()
    assert "`data.scale=1`" in plan_md and "`trainer.max_epochs=" in plan_md
    command = done.stdout.strip().splitlines()[-1].removeprefix("train it with: ")
    assert command == f"python train.py --config-dir {tmp_path / 'plans'} experiment=mine"
    trained = run_cli(
        [*command.split()[2:], "trainer.max_epochs=1", "logger=csv",
         "callbacks.validation_images=null", "hydra.run.dir=run"],
        cwd=tmp_path,
    )  # fmt: skip
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert "data changed since" not in trained.stderr
    for folder in ("images", "masks"):  # one more case
        first = sorted((root / folder).iterdir())[0]
        (root / folder / f"extra{first.suffix}").write_bytes(first.read_bytes())
    cfg = compose_train_config(
        [f"hydra.searchpath=[file://{tmp_path / 'plans'}]", "experiment=mine"]
    )
    with caplog.at_level(logging.WARNING):
        warn_if_data_changed(cfg, build_datamodule(cfg))
    assert "data changed since unet-lab autoplan planned" in caplog.text


def test_check_data_says_whether_class_zero_counts(capsys: pytest.CaptureFixture) -> None:
    from unet_lab.commands import check_data

    check_data.main(["data.train_size=4", "data.val_size=2", "data.test_size=2"])
    assert "mean scores leave class 0 (background) out" in capsys.readouterr().out
    check_data.main(["data.train_size=4", "data.val_size=2", "data.test_size=2",
                     "module.include_background=true"])  # fmt: skip
    assert "mean scores include class 0" in capsys.readouterr().out


def test_autoplan_explains_a_plan_for_volumes(tmp_path: Path) -> None:
    volumes = write_volume_dataset(tmp_path / "volumes")
    done = run_unet_lab(
        ["autoplan", "data=volumes", f"data.root={volumes}", "data.num_classes=3", "budget=2m",
         "--explain", "--output", "plans"],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        "`model.spacing=auto`" in done.stdout and "`data.target_spacing=[2,0.8,0.8]`" in done.stdout
    )
    assert not (tmp_path / "plans").exists()
