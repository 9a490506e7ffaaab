"""The experiment scripts stay runnable: each answers --help, and the time-to-quality harness
runs end to end on tiny settings (a recipe that fails is a failed row, not a crash)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SMALL_UNET, TINY_DATA

SCRIPTS = sorted(path for path in (REPO / "experiments").glob("*/*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_experiment_script_answers_help(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def _time_to_quality(tmp_path: Path, *arguments: str) -> dict:
    stem = tmp_path / "ttq"
    subprocess.run(
        [sys.executable, str(REPO / "experiments/benchmarks/time_to_quality.py"),
         "--minutes", "0.5", "--name", str(stem), *arguments],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    result = json.loads(stem.with_suffix(".json").read_text())
    result["table"] = stem.with_suffix(".md").read_text()
    return result


def test_time_to_quality_times_each_recipe_to_each_level(tmp_path: Path) -> None:
    tiny = [*TINY_DATA, *SMALL_UNET, "trainer.max_epochs=2"]
    result = _time_to_quality(
        tmp_path, "--recipes", "unet-lab", "--targets", "0", "1.01", "--overrides", *tiny
    )
    (row,) = result["rows"]
    assert row["error"] is None
    assert len(row["curve"]) == 2  # one validation per epoch, sanity check not counted
    first_time = row["curve"][0][0]
    assert row["seconds_to"] == {"0.0": first_time, "1.01": None}
    assert f"| unet-lab default | {first_time:.0f} (1.00x) | not reached |" in result["table"]


def test_a_failing_recipe_is_a_failed_row(tmp_path: Path) -> None:
    result = _time_to_quality(
        tmp_path,
        "--recipes",
        "unet-lab",
        "--overrides",
        *TINY_DATA,
        "trainer.max_epochs=1",
        "model.depth=0",
    )
    (row,) = result["rows"]
    assert row["curve"] == []
    assert "model.depth" in row["error"]
    assert "| unet-lab default | failed: exit 2: error:" in result["table"]
