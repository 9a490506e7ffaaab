"""Choosing the connected-component postprocessing on out-of-fold predictions, as nnU-Net does:
per class, each rule is tried on every case and kept only where it raises the class's mean Dice
over the cases."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from unet_lab.inference.postprocessing import ComponentRule, Postprocessing, components

SMALLEST_THRESHOLD = 8  # pixels or voxels: min_size candidates are 8, 32, 128, ...
THRESHOLD_STEP = 4


@dataclass
class _ClassCase:
    """One case's predicted components of one class: their sizes, their pixels outside the
    ignored ones, and how many of those are true; and the number of true pixels."""

    sizes: np.ndarray
    counted: np.ndarray
    hits: np.ndarray
    truth: int

    def dice(self, keep: np.ndarray) -> float:
        predicted = int(self.counted[keep].sum())
        if predicted + self.truth == 0:
            return float("nan")  # absent from both: no Dice (as the scores leave it out)
        return 2 * int(self.hits[keep].sum()) / (predicted + self.truth)


@dataclass
class Trial:
    """A rule tried on one class and the class's mean Dice over the cases with it."""

    class_index: int
    rule: str
    mean_dice: float
    kept: bool = False


def _measure(
    cases: Iterable[tuple[np.ndarray, np.ndarray]],
    classes: int,
    ignore_index: int | None,
    connectivity: str,
) -> tuple[dict[int, list[_ClassCase]], dict[int, list[int]]]:
    """Per foreground class, each case's components; and the sizes of the true components."""
    measured: dict[int, list[_ClassCase]] = {c: [] for c in range(1, classes)}
    true_sizes: dict[int, list[int]] = {c: [] for c in range(1, classes)}
    for prediction, truth in cases:
        valid = truth != ignore_index if ignore_index is not None else np.ones(truth.shape, bool)
        for c in measured:
            labelled, sizes = components(prediction == c, connectivity)
            true_mask = (truth == c) & valid
            counted = np.bincount(labelled[valid], minlength=len(sizes) + 1)[1:]
            hits = np.bincount(labelled[true_mask], minlength=len(sizes) + 1)[1:]
            measured[c].append(_ClassCase(sizes, counted, hits, int(true_mask.sum())))
            true_sizes[c] += components(true_mask, connectivity)[1].tolist()
    return measured, true_sizes


def _mean_dice(cases: list[_ClassCase], rule: ComponentRule | None) -> float:
    values = []
    for case in cases:
        keep = np.ones(len(case.sizes), bool)
        if rule is not None and len(case.sizes):
            if rule.kind == "largest":
                keep[:] = False
                keep[int(np.argmax(case.sizes))] = True
            else:
                keep = case.sizes >= rule.min_size
        values.append(case.dice(keep))
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def candidate_rules(class_index: int, true_sizes: list[int]) -> list[ComponentRule]:
    """``largest``, and ``min_size`` at 8, 32, 128, ... pixels up to half the median size of
    the class's true components (no threshold that would remove a typical object)."""
    rules = [ComponentRule(class_index, "largest")]
    if not true_sizes:
        return rules
    limit = float(np.median(true_sizes)) / 2
    threshold = SMALLEST_THRESHOLD
    while threshold <= limit:
        rules.append(ComponentRule(class_index, "min_size", threshold))
        threshold *= THRESHOLD_STEP
    return rules


def choose_postprocessing(
    cases: Iterable[tuple[np.ndarray, np.ndarray]],
    class_names: list[str],
    ignore_index: int | None = None,
    connectivity: str = "full",
) -> tuple[Postprocessing, list[Trial]]:
    """The rules that raise each foreground class's mean Dice over ``cases`` ((prediction,
    truth) label maps, out of fold), at most one per class (the best), and every trial.

    A class's Dice depends only on its own pixels, and removed pixels become background, so
    the classes are chosen independently."""
    measured, true_sizes = _measure(cases, len(class_names), ignore_index, connectivity)
    chosen: list[ComponentRule] = []
    trials: list[Trial] = []
    for c, class_cases in measured.items():
        baseline = Trial(c, "none", _mean_dice(class_cases, None))
        tried = [
            (rule, Trial(c, rule.describe(class_names), _mean_dice(class_cases, rule)))
            for rule in candidate_rules(c, true_sizes[c])
        ]
        better = [(r, t) for r, t in tried if t.mean_dice > baseline.mean_dice]
        if better:
            rule, trial = max(better, key=lambda pair: pair[1].mean_dice)
            trial.kept = True
            chosen.append(rule)
        else:
            baseline.kept = True
        trials += [baseline, *(t for _, t in tried)]
    return Postprocessing(chosen, connectivity), trials
