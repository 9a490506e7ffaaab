"""The experiment scripts stay runnable: each answers --help, and the time-to-quality, GPU
throughput, data pipeline and overhead benchmarks run end to end on tiny settings (a recipe that
fails is a failed row, not a crash)."""

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


def test_the_gpu_throughput_script_runs_on_the_cpu(tmp_path: Path) -> None:
    # Made for a GPU; here (no GPU in CI) its quick sizes run on the CPU, and the table says
    # that its GPU rows are pending.
    stem = tmp_path / "gpu"
    subprocess.run(
        [sys.executable, str(REPO / "experiments/benchmarks/gpu_throughput.py"), "--quick",
         "--precisions", "32-true", "--variants", "plain", "--name", str(stem)],
        check=True, capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    result = json.loads(stem.with_suffix(".json").read_text())
    loops = {(row["config"], row["loop"]) for row in result["rows"]}
    assert ("default", "unet-lab stack") in loops and ("3d", "bare loop: MONAI BasicUNet") in loops
    assert all("error" not in row and row["images_per_s"] > 0 for row in result["rows"])
    assert all(row["tflops"] > 0 and row["peak_mib"] > 0 for row in result["rows"])
    table = stem.with_suffix(".md").read_text()
    assert "rows pending" in table and "of the bare loop" in table


def test_the_data_pipeline_reports_loader_and_device_augmentation(tmp_path: Path) -> None:
    stem = tmp_path / "pipeline"
    subprocess.run(
        [sys.executable, str(REPO / "experiments/benchmarks/data_pipeline.py"), "--quick",
         "--sizes", "32", "--volume-sizes", "16", "--batches", "2", "--name", str(stem)],
        check=True, capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    rows = {
        (row["size"], row["preset"]): row
        for row in json.loads(stem.with_suffix(".json").read_text())["rows"]
    }
    assert rows["32²", "medium"]["on_device"] > 0 and rows["32²", "medium"]["per_worker"] > 0
    assert rows["32²", "heavy"]["on_device"] is None  # blur and elastic have no batch form
    patches = rows["16³", "volume_medium"]
    assert patches["per_worker"] > 0 and patches["model_images_per_s"] > 0
    assert patches["on_device"] is None  # volumes augment in the loader


def test_the_overhead_with_a_negligible_network_is_reported_per_step(tmp_path: Path) -> None:
    stem = tmp_path / "overhead"
    subprocess.run(
        [sys.executable, str(REPO / "experiments/benchmarks/overhead.py"), "--negligible",
         "--repeats", "1", "--name", str(stem)],
        check=True, capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    result = json.loads(stem.with_suffix(".json").read_text())
    assert set(result["steps_per_s"]) == {"bare", "lightning", "unet-lab"}
    assert all(rate > 0 for rates in result["steps_per_s"].values() for rate in rates)
    # 100 timed steps per side, in windows of 10; each validation side has its windows too
    assert all(len(w) == 10 for w in result["step_ms_windows"].values())
    assert set(result["validation_ms_windows"]) == {"bare", "unet-lab"}
    assert isinstance(result["overhead_ms_per_step"], float)
    table = stem.with_suffix(".md").read_text()
    assert "ms per step" in table and "ms per validation batch" in table
    assert "defaults logger=csv model.depth=1" in table
