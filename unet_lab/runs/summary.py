"""A run's summary file, ``metrics.json``: its status, best and test scores, and where its
checkpoints and pictures are."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

SUMMARY_FILE = "metrics.json"

log = logging.getLogger("unet_lab")


def finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a run folder whose run completed, else None."""
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") == "completed" else None


def finite_values(value: Any) -> Any:
    """``value`` (nested dicts and lists) with non-finite floats as None, for JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_values(v) for v in value]
    return value


def write_run_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Writes ``metrics.json`` (non-finite scores such as NaN for absent classes become null)."""
    path = run_dir / SUMMARY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(finite_values(summary), indent=2) + "\n")
    tmp.replace(path)
    return path


def report(summary: dict[str, Any], offline_runs: list[Path]) -> None:
    """Logs a run's final lines from its summary: status, best and test scores (with Dice per
    class), the predictions picture, and how to upload offline W&B runs."""
    log.info("run %s: %s", summary["status"], summary["run_dir"])
    metric = summary.get("optimized_metric") or {}
    if metric.get("value") is not None:
        log.info(
            "best %s = %.4f (epoch %s)", metric["name"], metric["value"], summary["best_epoch"]
        )
    for stage in ("val", "test"):
        scores = summary.get(stage) or {}
        if scores:
            shown = ", ".join(
                f"{k}={v:.4f}"
                for k, v in scores.items()
                if k in ("loss", "dice", "iou", "acc", "hd95", "asd", "rand_error")
            )
            log.info("%s (best checkpoint): %s", stage, shown)
            per_class = ", ".join(
                f"{k.removeprefix('dice_')} {v:.4f}"
                for k, v in scores.items()
                if k.startswith("dice_") and math.isfinite(v)
            )
            if per_class:
                log.info("%s Dice per class: %s", stage, per_class)
    if summary.get("predictions"):
        log.info(
            "validation images, truth and prediction of the best checkpoint: %s",
            Path(summary["run_dir"]) / summary["predictions"],
        )
    for folder in offline_runs:
        log.info("W&B run saved offline; upload it with: wandb sync %s", folder)
