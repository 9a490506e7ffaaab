"""Checkpoints written before the package was laid out by concern (unet-lab 0.1, commit e005d08)
still evaluate, predict, export and resume. The fixture is that release's run folder of a tiny
U-Net trained one epoch on folder data (``tests/fixtures/run_v0.1``: ``last.ckpt``, ``.hydra/``,
``split.json``); its config still names ``data.split_file``, which data modules no longer take."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from conftest import REPO, run_cli
from folders import write_dataset

from unet_lab.inference import load_trained

FIXTURE = Path(__file__).parent / "fixtures" / "run_v0.1"


@pytest.fixture
def old_run(tmp_path: Path) -> tuple[Path, Path]:
    """(a copy of the 0.1 run folder, the data it was trained on, made again)."""
    run = tmp_path / "run_v0.1"
    shutil.copytree(FIXTURE, run)
    data = write_dataset(tmp_path / "data", count=6, sizes=[(32, 32)], channels=1)
    return run, data


def _unet_lab(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "unet_lab.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"unet-lab {' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def test_the_fixture_is_a_release_checkpoint() -> None:
    state = torch.load(FIXTURE / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["unet_lab_config"]["data"]["split_file"].endswith("split.json")
    assert state["unet_lab_config"]["callbacks"]["elapsed_time"]["_target_"] == (
        "unet_lab.callbacks.ElapsedTime"  # the module path before the move
    )


@pytest.mark.slow
def test_an_old_checkpoint_evaluates_predicts_and_exports(
    old_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run, data = old_run
    ckpt = run / "checkpoints" / "last.ckpt"
    trained = load_trained(ckpt)
    assert trained.class_names == ["background", "class1", "class2"] and trained.in_channels == 1

    _unet_lab(["eval", f"ckpt_path={ckpt}", f"data.root={data}", "split=val"], tmp_path)
    (report,) = (run / "eval").glob("val-*/metrics.json")
    scores = json.loads(report.read_text())
    assert scores["images"] == 1 and 0 <= scores["scores"]["acc"] <= 1

    masks = tmp_path / "masks"
    predicted = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), f"ckpt_path={ckpt}",
         f"input={data / 'images'}", f"output={masks}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    labels = cv2.imread(str(masks / "img00.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (32, 32) and labels.max() <= 2

    _unet_lab(["export", f"ckpt_path={ckpt}"], tmp_path)
    model = run / "export" / "last.onnx"
    sidecar = json.loads(model.with_suffix(".json").read_text())
    assert sidecar["class_names"] == trained.class_names
    assert sidecar["max_abs_difference_vs_pytorch"] < 1e-3


@pytest.mark.slow
def test_an_old_run_resumes_in_its_folder(old_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = old_run
    before = json.loads((run / "metrics.json").read_text())
    assert before["epochs_completed"] == 1
    last = run / "checkpoints" / "last.ckpt"
    run_cli([f"ckpt_path={last}", "trainer.max_epochs=2", f"data.root={data}"], cwd=tmp_path)
    after = json.loads((run / "metrics.json").read_text())
    assert after["status"] == "completed" and after["epochs_completed"] == 2
    assert after["global_step"] > before["global_step"]
    assert len(list((run / ".hydra").glob("resume-*"))) == 1  # the earlier start kept
    split = json.loads((run / "split.json").read_text())
    assert split["root"] == str(data.resolve()) and len(split["train"]) + len(split["val"]) == 6
