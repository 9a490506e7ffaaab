"""Comparing runs (``unet-lab compare``): one table and one plot for many runs, from their
folders alone (``metrics.json``, ``csv/metrics.csv``, ``.hydra/overrides.yaml``), no network.

Each DIR is a run folder or any folder above run folders (a sweep, ``runs/``). Writes
``summary.md``, ``summary.csv`` (every run's overrides, status, best epoch and final val/test
scores, best first by the optimized metric, failures last with their reason) and
``curves.png`` (the validation metric per epoch, one line per run). Sweeps write it into their
sweep folder when they end (:class:`SweepSummary`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from unet_lab.runs.folders import HYDRA_DIR
from unet_lab.runs.resume import saved_overrides
from unet_lab.runs.summary import SUMMARY_FILE

# Scores shown per stage (HD95 is computed at test time only).
SCORES = {"val": ("dice", "iou"), "test": ("dice", "iou", "hd95")}


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Run folders (with a ``metrics.json``) at or below ``paths``, in path order."""
    runs: list[Path] = []
    for path in paths:
        found = [path] if (path / SUMMARY_FILE).is_file() else sorted(
            p.parent for p in path.rglob(SUMMARY_FILE) if (p.parent / HYDRA_DIR).is_dir()
        )  # fmt: skip
        runs += [r for r in found if r not in runs]
    return runs


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def run_row(run_dir: Path) -> dict[str, Any]:
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    metric = summary.get("optimized_metric") or {}
    row: dict[str, Any] = {
        "run": str(run_dir),
        "overrides": saved_overrides(run_dir) if (run_dir / HYDRA_DIR).is_dir() else [],
        "status": summary.get("status", "?"),
        "metric": metric.get("name"),
        "mode": metric.get("mode", "max"),
        "value": _number(metric.get("value")),
        "best_epoch": summary.get("best_epoch"),
        "epochs": summary.get("epochs_completed"),
        "duration_s": summary.get("duration_s"),
        "error": summary.get("error", ""),
    }
    for stage, scores in SCORES.items():
        for score in scores:
            row[f"{stage}/{score}"] = _number((summary.get(stage) or {}).get(score))
    return row


def _labels(rows: list[dict[str, Any]]) -> list[str]:
    """Each run's overrides that not every run shares (all of them when there is one run)."""
    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    return [", ".join(o for o in r["overrides"] if o not in shared) or "(defaults)" for r in rows]


def _sort_key(row: dict[str, Any]) -> tuple[int, float]:
    value = row["value"]
    if row["status"] != "completed" or math.isnan(value):
        return (1, 0.0)
    return (0, -value if row["mode"] == "max" else value)


def _cell(value: Any, column: str = "") -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.1f}" if column in ("duration_s",) or "hd95" in column else f"{value:.4f}"
    return "" if value is None else str(value)


def write_comparison(paths: Sequence[Path], output: Path, metric: str = "val/dice") -> Path | None:
    """Writes summary.md, summary.csv and curves.png into ``output``; None when no runs."""
    runs = find_runs(paths)
    if not runs:
        return None
    rows = sorted((run_row(r) for r in runs), key=_sort_key)
    labels = _labels(rows)
    columns = ["overrides", "status", "value", "best_epoch", "epochs"]
    columns += [f"{stage}/{k}" for stage, scores in SCORES.items() for k in scores]
    columns += ["duration_s", "error"]
    name = next((r["metric"] for r in rows if r["metric"]), "optimized metric")
    header = [c if c != "value" else f"best {name}" for c in columns]
    table = [
        [label if c == "overrides" else _cell(row[c], c) for c in columns]
        for label, row in zip(labels, rows, strict=True)
    ]
    output.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# {len(rows)} runs, best first by {name}\n",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cells).replace("\n", " ") + " |" for cells in table),
        "\nFolders, in the same order:\n",
        *(f"{i + 1}. `{row['run']}`" for i, row in enumerate(rows)),
    ]
    (output / "summary.md").write_text("\n".join(lines) + "\n")
    with (output / "summary.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["run", *header])
        writer.writerows([row["run"], *cells] for row, cells in zip(rows, table, strict=True))
    plot_curves([Path(r["run"]) for r in rows], labels, metric, output / "curves.png")
    return output / "summary.md"


def _curve(run_dir: Path, metric: str) -> tuple[list[int], list[float]]:
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return [], []
    epochs, values = [], []
    with path.open() as file:
        for record in csv.DictReader(file):
            if record.get(metric) not in (None, "") and record.get("epoch") not in (None, ""):
                epochs.append(int(record["epoch"]))
                values.append(float(record[metric]))
    return epochs, values


def plot_curves(runs: Sequence[Path], labels: Sequence[str], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    seen: set[int] = set()
    for run, label in zip(runs, labels, strict=True):
        epochs, values = _curve(run, metric)
        if epochs:
            axes.plot(epochs, values, marker="o", markersize=3, label=label)
            seen.update(epochs)
    if 0 < len(seen) <= 20:
        axes.set_xticks(sorted(seen))  # whole epochs, also for a single one
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


class SweepSummary(Callback):
    """Hydra callback: at the end of a ``-m`` sweep, the comparison of its jobs in its folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        written = write_comparison([sweep_dir], sweep_dir, str(config.get("optimized_metric")))
        if written is None:
            return
        rows = [run_row(run) for run in find_runs([sweep_dir])]
        failed = [row for row in rows if row["status"] != "completed"]
        print(f"sweep summary: {written} (and summary.csv, curves.png)")
        if failed:
            print(f"{len(failed)} of {len(rows)} jobs did not complete:")
            for row in failed:
                print(f"  {row['status']}: {row['run']}: {row['error']}")
