"""`unet-lab compare`: one table and one plot for many runs, from their folders alone."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from unet_lab.commands.compare import main
from unet_lab.runs.compare import find_runs, write_comparison


def _run(folder: Path, overrides: list[str], value: float | None, status: str = "completed",
         curve: tuple[float, ...] = (0.5, 0.7)) -> Path:  # fmt: skip
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    summary = {
        "status": status,
        "optimized_metric": {"name": "val/dice", "mode": "max", "value": value},
        "best_epoch": len(curve) - 1,
        "epochs_completed": len(curve),
        "val": {"dice": value},
        "test": {"dice": value, "hd95": 3.0},
        "duration_s": 12.5,
    }
    if status == "failed":
        summary["error"] = "FloatingPointError: loss is nan"
    (folder / "metrics.json").write_text(json.dumps(summary))
    (folder / "csv").mkdir()
    with (folder / "csv" / "metrics.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "step", "val/dice"])
        writer.writerows([e, e * 10, v] for e, v in enumerate(curve))
    return folder


def test_runs_best_first_failures_last_with_their_reason(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _run(sweep / "0_a", ["model.depth=3", "debug=fast"], 0.80)
    _run(sweep / "1_b", ["model.depth=4", "debug=fast"], None, status="failed", curve=(0.1,))
    _run(sweep / "2_c", ["model.depth=5", "debug=fast"], 0.90)
    written = write_comparison([sweep], sweep)
    assert written is not None
    rows = [line for line in written.read_text().splitlines() if line.startswith("| model")]
    assert [r.split(" | ")[0] for r in rows] == [
        "| model.depth=5",
        "| model.depth=3",
        "| model.depth=4",
    ]
    assert "FloatingPointError: loss is nan" in rows[-1] and "failed" in rows[-1]
    with (sweep / "summary.csv").open() as file:
        table = list(csv.DictReader(file))
    assert [t["overrides"] for t in table] == ["model.depth=5", "model.depth=3", "model.depth=4"]
    assert table[0]["best val/dice"] == "0.9000" and table[0]["test/hd95"] == "3.0"
    assert (sweep / "curves.png").stat().st_size > 1000


def test_folders_above_runs_and_single_runs(tmp_path: Path, capsys) -> None:
    one = _run(tmp_path / "runs" / "day" / "a", ["model.width=8"], 0.5)
    two = _run(tmp_path / "runs" / "day" / "b", [], 0.6)
    assert find_runs([tmp_path / "runs"]) == [one, two]
    assert find_runs([one, tmp_path / "runs"]) == [one, two]
    main([str(one), str(two), "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "| (defaults) |" in out and "| model.width=8 |" in out
    missing = tmp_path / "empty_dir_that_does_not_exist"
    with pytest.raises(SystemExit) as stop:
        main([str(missing)])
    assert stop.value.code == 2
    assert f"error: no run folders (with metrics.json) under {missing}" in capsys.readouterr().err
