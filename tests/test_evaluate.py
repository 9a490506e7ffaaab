"""`python eval.py`: a checkpoint's scores per class and per image, from the checkpoint alone."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, REPO, TINY_DATA, compose_config
from folders import write_dataset

from unet_lab.commands.evaluate import main
from unet_lab.training import train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("run")
    # float32, as eval predicts: the test stage's scores are then reproduced exactly.
    summary = train(compose_config(run, [*FAST, *TINY_DATA, "trainer.precision=32-true"]))
    return run, summary


def test_eval_reproduces_the_test_stage_and_writes_its_files(trained_run, capsys) -> None:
    run, summary = trained_run
    main([f"ckpt_path={run / summary['best_checkpoint']}", "worst=2"])
    (folder,) = (run / "eval").iterdir()
    scores = json.loads((folder / "metrics.json").read_text())["scores"]
    for key in ("dice", "iou", "acc", "hd95", "asd"):
        assert scores[key] == pytest.approx(summary["test"][key], rel=1e-4, abs=1e-6), key
    with (folder / "per_image.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 8 and {"image", "dice", "hd95", "dice_ellipse"} <= set(rows[0])
    assert len(list(folder.glob("worst_*.png"))) == 2
    out = capsys.readouterr().out
    assert "ellipse" in out and "HD95" in out


def test_eval_on_other_data_given_on_the_command_line(trained_run, tmp_path: Path) -> None:
    run, summary = trained_run
    ckpt = run / summary["best_checkpoint"]
    root = write_dataset(tmp_path / "cells", count=5, num_classes=4)
    args = [f"ckpt_path={ckpt}", "data=folder", f"data.root={root}", "data.num_classes=4"]
    args += ["data.test_fraction=0.4", "output=out"]
    done = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["images"] == 2
    bad = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), f"ckpt_path={ckpt}", "data.roots=x"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown config key 'data.roots'" in bad.stderr
