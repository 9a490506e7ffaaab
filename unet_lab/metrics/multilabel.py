"""Scores of overlapping regions (one sigmoid per region): Dice, IoU and pixel accuracy per
region from counts accumulated over an epoch (DDP-synchronised), with the same names as the
class scores (``dice``, ``dice_<region>``, ...), so ``optimized_metric`` works alike."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


class MultiLabelScores(Metric):
    """Per-region true and false positives and negatives over all pixels of an epoch.

    Args:
        region_names: one per region (channel).

    ``update(predicted, target)``: predicted masks ``(N, R, *spatial)`` (bool or 0/1) and
    targets of the same shape (0/1; negative: ignored). ``compute()``: ``dice``, ``iou``
    (means over the regions present), ``acc`` (mean pixel accuracy) and ``dice_<name>``,
    ``iou_<name>`` (NaN for a region absent from both predictions and targets).
    """

    full_state_update = False
    counts: torch.Tensor  # (R, 4): true positives, false positives, false negatives, true negatives

    def __init__(self, region_names: Sequence[str]) -> None:
        super().__init__()
        self.region_names = list(region_names)
        zeros = torch.zeros(len(self.region_names), 4, dtype=torch.float64)
        self.add_state("counts", default=zeros, dist_reduce_fx="sum")

    @staticmethod
    def score_names(region_names: Sequence[str]) -> list[str]:
        """The keys :meth:`compute` returns for these regions."""
        per_region = [f"{kind}_{name}" for name in region_names for kind in ("dice", "iou")]
        return ["dice", "iou", "acc", *per_region]

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        valid = target >= 0
        truth = (target > 0) & valid
        guess = predicted.bool() & valid
        dims = [0, *range(2, target.ndim)]
        tp = (guess & truth).sum(dims)
        fp = (guess & ~truth & valid).sum(dims)
        fn = (~guess & truth).sum(dims)
        tn = (~guess & ~truth & valid).sum(dims)
        self.counts += torch.stack([tp, fp, fn, tn], dim=1).to(self.counts)

    def compute(self) -> dict[str, torch.Tensor]:
        tp, fp, fn, tn = self.counts.unbind(dim=1)
        union = tp + fp + fn
        nan = torch.full_like(tp, float("nan"))
        dice = torch.where(union > 0, 2 * tp / (2 * tp + fp + fn), nan)
        iou = torch.where(union > 0, tp / union, nan)
        scores = {
            "dice": dice.nanmean(),
            "iou": iou.nanmean(),
            "acc": ((tp + tn) / self.counts.sum(dim=1).clamp_min(1)).mean(),
        }
        for index, name in enumerate(self.region_names):
            scores[f"dice_{name}"] = dice[index]
            scores[f"iou_{name}"] = iou[index]
        return {key: value.float() for key, value in scores.items()}
