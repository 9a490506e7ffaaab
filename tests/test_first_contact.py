"""What a newcomer sees: progress lines in a redirected log, a quiet start, predictions.png at the
end, and ``fit()`` from a plain Python script."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import FAST, REPO, TINY_DATA, compose_config, run_cli
from pytorch_lightning.callbacks import RichProgressBar

from unet_lab.pictures import COLOURS, IGNORED, foreground_dice, prediction_grid
from unet_lab.training import train
from unet_lab.training.progress import PlainProgress, progress

PROGRESS_LINE = re.compile(
    r"epoch (\d+)/2( done)?  step (\d+)/8  loss \d+\.\d{4}  \d+\.\d img/s  "
    r"elapsed \d+:\d\d  ETA \d+:\d\d"
)


def test_progress_is_a_bar_in_a_terminal_and_lines_elsewhere(monkeypatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert isinstance(progress("auto"), RichProgressBar)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert isinstance(progress("auto"), PlainProgress)
    assert isinstance(progress("lines", interval_s=5), PlainProgress)


def test_plain_progress_writes_steady_lines_with_the_latest_validation(
    tmp_path: Path, caplog
) -> None:
    cfg = compose_config(
        tmp_path,
        [*FAST, *TINY_DATA, "callbacks.progress.style=lines", "callbacks.progress.interval_s=0"],
    )
    with caplog.at_level(logging.INFO, logger="unet_lab.training.progress"):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "unet_lab.training.progress"]
    training = [line for line in lines if PROGRESS_LINE.match(line)]
    # interval 0: a line after each of the 2 x 4 training steps, and one at each epoch end
    assert len(training) == 8 + 2, lines
    steps = [int(PROGRESS_LINE.match(line).group(3)) for line in training]
    assert steps == sorted(steps) and steps[-1] == 8
    epoch_ends = [line for line in training if " done " in line]
    assert [PROGRESS_LINE.match(line).group(1) for line in epoch_ends] == ["1", "2"]
    # after the first validation, every line carries its scores
    assert all("val/dice " in line for line in training[4:]), training
    assert "ETA 0:00" in epoch_ends[-1]


def test_prediction_grid_shows_image_truth_prediction_and_a_legend() -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    truth = np.zeros((40, 60), np.uint8)
    truth[10:20, 10:20] = 1
    truth[0, :] = 255  # ignored pixels
    prediction = np.zeros((40, 60), np.int64)
    prediction[10:20, 10:15] = 1
    grid = prediction_grid([image, image], [truth, truth], [prediction, prediction], ["bg", "cell"])
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    # small images are enlarged to be legible: two rows of three tiles at least 160 px high
    assert grid.shape[0] > 2 * 160 and grid.shape[1] > 3 * 160
    colours = {tuple(c) for c in grid.reshape(-1, 3)}
    assert tuple(COLOURS[1]) in colours  # the class colour, in truth, prediction and legend
    assert tuple(IGNORED) in colours  # ignored truth pixels are grey, and in the legend
    # the class-1 square of the truth, predicted half: Dice 2 * 50 / (100 + 50)
    assert foreground_dice(truth, prediction, 2) == pytest.approx(2 / 3)
    assert np.isnan(foreground_dice(np.zeros((4, 4)), np.zeros((4, 4)), 2))


def test_a_redirected_run_shows_progress_our_lines_only_and_a_picture(tmp_path: Path) -> None:
    result = run_cli(["debug=fast", "model.depth=2", *TINY_DATA], cwd=tmp_path)
    output = result.stdout + result.stderr
    (run_dir,) = tmp_path.glob("runs/*/*")
    # progress outside a terminal: plain lines (stdout is a pipe here)
    assert re.search(r"epoch 2/2 done  step 8/8  loss \d", output), output
    assert "val/dice" in output
    # nothing of third parties that says nothing about the run
    for noise in ("litlogger", "anonymous setting", "FLOPs", "GPU available", "Seed set to"):
        assert noise not in output, noise
    # the picture of what was learned, named in the final lines
    picture = cv2.imread(str(run_dir / "predictions.png"))
    assert picture is not None and picture.shape[0] > 4 * 160
    assert str(run_dir / "predictions.png") in output
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["predictions"] == "predictions.png"


SCRIPT = """
from unet_lab import fit
from unet_lab.errors import ConfigError
from unet_lab.inference.trained import load_trained

summary = fit({overrides!r}, output_dir="mine")
print("status", summary["status"], summary["run_dir"])
trained = load_trained(summary["run_dir"] + "/" + summary["best_checkpoint"])
print("classes", trained.class_names)
again = fit({overrides!r}, output_dir="mine")  # completed: not trained again
print("again", again["status"], again["duration_s"] == summary["duration_s"])
default = fit({overrides!r})
print("default", default["run_dir"])
try:
    fit(["model.depth=0"])
except ConfigError as exc:
    print("error", exc)
"""


@pytest.mark.slow
def test_fit_trains_from_a_plain_script_as_the_command_does(tmp_path: Path) -> None:
    overrides = [*FAST, *TINY_DATA, "test=false"]
    script = tmp_path / "notebook.py"
    script.write_text(SCRIPT.format(overrides=overrides))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    mine = tmp_path / "mine"
    assert f"status completed {mine}" in out
    for name in ("metrics.json", "predictions.png", "train.log", ".hydra/overrides.yaml"):
        assert (mine / name).exists(), name
    assert "classes ['background', 'ellipse', 'rectangle', 'triangle']" in out
    assert "again completed True" in out
    (default_run,) = tmp_path.glob("runs/*/*")  # the failed start left no folder behind
    assert f"default {default_run}" in out
    assert "error model.depth=0 is not valid" in out
