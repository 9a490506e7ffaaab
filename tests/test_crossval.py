"""Fold ensembles and ``unet-lab cv``: the ensemble is the mean of its networks' probabilities
(each with its own normalization), and one command trains every fold, summarizes them, picks
postprocessing and leaves an ensemble that predict, eval and export take."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import run_unet_lab
from folders import write_dataset, write_volume_dataset

from unet_lab.data.normalization import Normalizer
from unet_lab.errors import InputError
from unet_lab.inference.ensemble import Ensemble, ensemble_of
from unet_lab.inference.trained import TrainedNetwork, class_probabilities
from unet_lab.models import UNet

FAST_CV = [
    "debug=fast",
    "logger=csv",
    "callbacks.validation_images=null",
    "model.depth=2",
    "model.width=8",
    "data.folds=2",
    "test=false",
]


def _member(seed: int, normalizer: Normalizer, names: list[str] | None = None) -> TrainedNetwork:
    torch.manual_seed(seed)
    net = UNet(in_channels=1, num_classes=3, depth=2, width=8).eval()
    return TrainedNetwork(net, names or ["bg", "a", "b"], 1, normalizer, {"model": {}})


def test_the_ensemble_is_the_mean_of_its_networks_probabilities() -> None:
    nets = [UNet(in_channels=1, num_classes=3, depth=2, width=8).eval() for _ in range(3)]
    image = torch.randn(2, 1, 24, 40)
    with torch.no_grad():
        expected = torch.stack([class_probabilities(n(image)) for n in nets]).mean(0)
        got = class_probabilities(Ensemble(nets)(image))
    torch.testing.assert_close(got, expected)


def test_members_with_their_own_statistics_see_their_own_normalization() -> None:
    first = _member(0, Normalizer("fixed", [0.2], [0.1]))
    second = _member(1, Normalizer("fixed", [0.5], [0.3]))
    ensemble = ensemble_of([first, second], [Path("a.ckpt"), Path("b.ckpt")])
    image = np.random.default_rng(0).integers(0, 255, (24, 40), dtype=np.uint8)
    expected = (first.probabilities(image) + second.probabilities(image)) / 2
    np.testing.assert_allclose(ensemble.probabilities(image), expected, atol=1e-5)


def test_networks_of_different_tasks_are_refused_naming_the_file() -> None:
    first = _member(0, Normalizer("image"))
    other = _member(1, Normalizer("image"), ["bg", "a", "c"])
    with pytest.raises(InputError, match=r"b\.ckpt: class names"):
        ensemble_of([first, other], [Path("a.ckpt"), Path("b.ckpt")])
    mixed = _member(1, Normalizer("none"))
    with pytest.raises(InputError, match=r"b\.ckpt: normalization"):
        ensemble_of([first, mixed], [Path("a.ckpt"), Path("b.ckpt")])


def _sweeps(cwd: Path) -> list[Path]:
    return sorted((cwd / "multirun").glob("*/*"))


def test_cv_trains_every_fold_summarizes_and_leaves_an_ensemble(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", count=8, channels=1)
    # An absolute data.root, as users type it: job folders are still one folder each.
    args = ["cv", "data=folder", f"data.root={tmp_path / 'data'}", "data.num_classes=3"]
    args += ["data.patch_size=32", *FAST_CV, "model.up_mode=transpose,bilinear"]
    done = run_unet_lab(args, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (sweep,) = _sweeps(tmp_path)
    record = json.loads((sweep / "cv" / "cv.json").read_text())
    names = [c["name"] for c in record["configurations"]]
    assert names == ["model.up_mode=transpose", "model.up_mode=bilinear"]
    for configuration in record["configurations"]:
        assert sorted(configuration["folds"]) == ["0", "1"]
        assert set(configuration["val_mean"]) >= {"dice", "iou", "loss"}
        assert 0 <= configuration["pooled"]["dice"] <= 1
        folder = sweep / "cv" / configuration["folder"]
        assert len(list((folder / "oof").glob("*.npz"))) == 8  # every case, out of its fold
        assert len(json.loads((folder / "ensemble.json").read_text())["checkpoints"]) == 2
    assert record["best"] in [c["folder"] for c in record["configurations"]]
    other = next(c for c in record["configurations"] if c["folder"] != record["best"])
    assert len(other["paired_vs_best"]["differences"]) == 2
    summary = (sweep / "cv" / "summary.md").read_text()
    assert "## Comparison" in summary and "Best: **" in summary
    assert (sweep / "cv" / "dice_per_class.png").stat().st_size > 0
    assert f"ckpt_path={sweep.relative_to(tmp_path)}" in done.stdout

    # predict takes the sweep folder: the best configuration's folds with its rules (one set
    # here by hand, so that there is one to apply), unless postprocess=false.
    manifest_file = sweep / "cv" / record["best"] / "ensemble.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["postprocessing"]["rules"] = [{"class_index": 1, "kind": "largest", "min_size": 0}]
    manifest_file.write_text(json.dumps(manifest))
    predict = ["predict", f"ckpt_path={sweep}", "input=data/images", "output=masks"]
    predicted = run_unet_lab(predict, tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert "an ensemble of 2 networks; postprocessing: class1: keep the largest" in predicted.stdout
    assert len(list((tmp_path / "masks").glob("*.png"))) == 8
    without = run_unet_lab([*predict, "postprocess=false"], tmp_path)
    assert "postprocessing: none" in without.stdout

    exported = run_unet_lab(["export", f"ckpt_path={sweep}"], tmp_path)
    assert exported.returncode == 0, exported.stderr
    sidecar = json.loads((sweep / "export" / "cv_ensemble.json").read_text())
    assert len(sidecar["ensemble_of"]) == 2 and sidecar["postprocessing"] is not None
    onnx = sweep / "export" / "cv_ensemble.onnx"
    from_onnx = run_unet_lab(
        ["predict", f"ckpt_path={onnx}", "input=data/images", "output=o"], tmp_path
    )
    assert from_onnx.returncode == 0, from_onnx.stderr
    for name in ("img00.png", "img05.png"):  # the masks the checkpoints give (up to ties)
        exported = cv2.imread(str(tmp_path / "o" / name), cv2.IMREAD_UNCHANGED)
        expected = cv2.imread(str(tmp_path / "masks" / name), cv2.IMREAD_UNCHANGED)
        assert (exported == expected).mean() > 0.999

    # The same command again finds its sweep: nothing is trained twice.
    again = run_unet_lab(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert _sweeps(tmp_path) == [sweep]
    assert "already completed, skipped" in again.stdout + again.stderr


def test_cv_on_volumes_scores_out_of_fold_cases_in_mm(tmp_path: Path) -> None:
    write_volume_dataset(tmp_path / "volumes", count=4)
    args = ["cv", "data=volumes", "data.root=volumes", "data.num_classes=3"]
    args += ["data.patch_size=[8,16,16]", "data.samples_per_epoch=4", *FAST_CV]
    done = run_unet_lab(args, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (sweep,) = _sweeps(tmp_path)
    (configuration,) = json.loads((sweep / "cv" / "cv.json").read_text())["configurations"]
    assert configuration["name"] == "all"
    oof = sorted((sweep / "cv" / "all" / "oof").glob("*.npz"))
    assert len(oof) == 4
    with np.load(oof[0]) as case:
        assert case["prediction"].shape == case["truth"].shape == (16, 20, 12)  # file geometry
        assert case["spacing"].tolist() == pytest.approx([0.8, 0.8, 2.0])
    assert configuration["pooled"]["hd95"] is None or configuration["pooled"]["hd95"] >= 0


FOLDER = ["data=folder", "data.root=data", "data.num_classes=3"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ([*FOLDER, "data.fold=1"], "data.fold"),
        ([*FOLDER, "data.folds=1"], "data.folds"),
        (["data=synthetic"], "no folds"),
    ],
)
def test_cv_refuses_what_it_cannot_run_in_one_line(
    tmp_path: Path, overrides: list[str], named: str
) -> None:
    write_dataset(tmp_path / "data", count=4, channels=1)
    done = run_unet_lab(["cv", *overrides], tmp_path)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0]
    assert not (tmp_path / "multirun").exists()
