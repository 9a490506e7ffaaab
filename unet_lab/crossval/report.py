"""What ``unet-lab cv`` reports: per configuration the validation scores of every fold with
their mean and standard deviation, the pooled out-of-fold scores with and without the chosen
postprocessing, and across configurations a comparison naming the best, with paired per-fold
differences; as ``cv.json``, ``summary.md`` and a box plot of per-case Dice per class."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unet_lab.crossval.folds import Configuration
from unet_lab.crossval.postprocessing import Trial
from unet_lab.inference.postprocessing import Postprocessing

BOX_PLOT = "dice_per_class.png"
SUMMARY = "summary.md"


@dataclass
class Result:
    """One configuration's cross-validation: its runs, pooled out-of-fold scores (``pooled``
    raw, ``processed`` after ``postprocessing``), per-case rows and postprocessing trials."""

    configuration: Configuration
    folds: int
    class_names: list[str] = field(default_factory=list)
    pooled: dict[str, float] = field(default_factory=dict)
    processed: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    postprocessing: Postprocessing | None = None
    trials: list[Trial] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.configuration.missing(self.folds)

    def fold_scores(self) -> dict[int, dict[str, float]]:
        return {k: run.validation() for k, run in sorted(self.configuration.runs.items())}

    def objective(self) -> dict[int, float]:
        """The optimized metric of each completed fold, by fold."""
        return {
            k: float(run.summary["optimized_metric"]["value"])
            for k, run in sorted(self.configuration.runs.items())
            if run.completed and run.summary.get("optimized_metric", {}).get("value") is not None
        }


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (NaN where there are none;
    sd 0 for one value)."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def best_result(results: Sequence[Result], mode: str) -> Result | None:
    """The complete configuration with the best mean optimized metric (``mode`` max or min)."""
    complete = [r for r in results if r.complete and r.objective()]
    if not complete:
        return None
    sign = 1 if mode == "max" else -1
    return max(complete, key=lambda r: sign * statistics.fmean(r.objective().values()))


def paired_differences(result: Result, best: Result) -> dict[str, Any]:
    """Per fold, ``result``'s optimized metric minus ``best``'s (folds both completed)."""
    ours, theirs = result.objective(), best.objective()
    folds = sorted(set(ours) & set(theirs))
    differences = [ours[k] - theirs[k] for k in folds]
    mean, sd = mean_sd(differences)
    return {"folds": folds, "differences": differences, "mean": mean, "sd": sd}


def record(results: Sequence[Result], best: Result | None, metric: str, mode: str) -> dict:
    """The content of ``cv.json``."""

    def one(result: Result) -> dict[str, Any]:
        scores = result.fold_scores()
        keys = sorted({k for s in scores.values() for k in s})
        summary = {k: mean_sd([s.get(k, math.nan) for s in scores.values()]) for k in keys}
        return {
            "name": result.configuration.name,
            "folder": result.configuration.slug,
            "overrides": result.configuration.overrides,
            "missing_folds": result.configuration.missing(result.folds),
            "folds": {
                str(k): {
                    "run_dir": str(run.run_dir),
                    "status": run.summary.get("status"),
                    "optimized_metric": run.summary.get("optimized_metric", {}).get("value"),
                    "val": scores[k],
                }
                for k, run in sorted(result.configuration.runs.items())
            },
            "val_mean": {k: v[0] for k, v in summary.items()},
            "val_sd": {k: v[1] for k, v in summary.items()},
            "pooled": result.pooled,
            "pooled_postprocessed": result.processed,
            "postprocessing": (
                result.postprocessing.state_dict() if result.postprocessing else None
            ),
            "postprocessing_trials": [vars(t) for t in result.trials],
            "paired_vs_best": paired_differences(result, best) if best else None,
        }

    return {
        "metric": metric,
        "mode": mode,
        "best": best.configuration.slug if best else None,
        "configurations": [one(r) for r in results],
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _scores_table(rows: list[tuple[str, dict[str, float]]], keys: list[str]) -> list[str]:
    lines = ["| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for label, scores in rows:
        cells = " | ".join(_cell(scores.get(k, math.nan)) for k in keys)
        lines.append(f"| {label} | {cells} |")
    return lines


def _section(result: Result) -> list[str]:
    """One configuration: its folds' validation scores, then its pooled out-of-fold scores."""
    c = result.configuration
    lines = [f"## {c.name}", "", f"Overrides: `{' '.join(c.overrides) or '(none)'}`", ""]
    missing = c.missing(result.folds)
    if missing:
        lines += [f"Folds without a completed run: {missing} (see their train.log).", ""]
    scores = result.fold_scores()
    present = {k for s in scores.values() for k in s}
    keys: list[str] = [k for k in ("dice", "iou", "hd95", "asd", "loss") if k in present]
    keys += sorted(k for k in present if k.startswith("dice_"))
    rows = [(f"fold {k}", s) for k, s in scores.items()]
    spread = {k: mean_sd([s.get(k, math.nan) for s in scores.values()]) for k in keys}
    rows += [("mean", {k: v[0] for k, v in spread.items()})]
    rows += [("sd", {k: v[1] for k, v in spread.items()})]
    lines += ["Validation scores of each fold's best checkpoint:", ""]
    lines += [*_scores_table(rows, keys), ""]
    if result.pooled:
        pooled_keys = ["dice", *(k for k in result.pooled if k.startswith("dice_")), "hd95"]
        rules = result.postprocessing
        pooled = [("raw", result.pooled), ("postprocessed", result.processed)]
        lines += [f"Out-of-fold predictions of all {len(result.rows)} cases, pooled:", ""]
        lines += [*_scores_table(pooled, pooled_keys), ""]
        shown = rules.describe(result.class_names) if rules else "none"
        lines += [f"Postprocessing chosen on them: {shown}.", ""]
    return lines


def _comparison(
    results: Sequence[Result], best: Result | None, metric: str, mode: str
) -> list[str]:
    lines = [
        "## Comparison",
        "",
        f"{metric} ({mode}): mean ± sd over folds, and the paired difference from the best "
        "(per fold, mean ± sd).",
        "",
        "| configuration | mean ± sd | pooled Dice | pooled Dice, postprocessed | vs best |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        mean, sd = mean_sd(list(result.objective().values()))
        if result is best:
            versus = "best"
        elif best is not None:
            paired = paired_differences(result, best)
            versus = f"{paired['mean']:+.4f} ± {paired['sd']:.4f}"
        else:
            versus = "–"
        pooled = _cell(result.pooled.get("dice", math.nan))
        processed = _cell(result.processed.get("dice", math.nan))
        lines.append(
            f"| {result.configuration.name} | {_cell(mean)} ± {_cell(sd)} | {pooled} | "
            f"{processed} | {versus} |"
        )
    return [*lines, ""]


def markdown(results: Sequence[Result], best: Result | None, metric: str, mode: str) -> str:
    """``summary.md``: per configuration its folds and pooled scores, then the comparison."""
    lines = [f"# Cross-validation: {results[0].folds} folds", ""]
    for result in results:
        lines += _section(result)
    if len(results) > 1:
        lines += _comparison(results, best, metric, mode)
    if best is not None:
        lines += [f"Best: **{best.configuration.name}** (`cv/{best.configuration.slug}`)", ""]
    return "\n".join(lines)


def box_plot(results: Sequence[Result], class_names: Sequence[str], path: Path) -> None:
    """Per-case out-of-fold Dice of each foreground class, one box per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in results if r.rows]
    figure, axes = plt.subplots(figsize=(2 + 1.6 * len(class_names) * len(scored), 4))
    positions, data, labels = [], [], []
    for c, name in enumerate(class_names):
        for i, result in enumerate(scored):
            values = [
                row[f"dice_{name}"] for row in result.rows if not math.isnan(row[f"dice_{name}"])
            ]
            positions.append(c * (len(scored) + 1) + i)
            data.append(values or [math.nan])
            labels.append(name if len(scored) == 1 else f"{name}\n{result.configuration.name}")
    axes.boxplot(data, positions=positions)
    axes.set_xticks(positions, labels, fontsize=7)
    axes.set_ylabel("Dice per case (out of fold)")
    axes.set_ylim(0, 1.02)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
