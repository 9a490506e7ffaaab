"""Segmentation scores from one accumulated confusion matrix (torchmetrics, DDP-synchronised).

Policy, the same for every stage:
- Scores are computed over all pixels of the epoch ("global" Dice/IoU per class), not averaged
  per image.
- A class absent from both the predictions and the targets of the epoch has no defined Dice or
  IoU: it is reported as NaN and left out of the means.
- The means (``dice``, ``iou``) are over the foreground classes (1..C-1) unless
  ``include_background`` is set; with a single class they are over that class.
- Pixels whose target is ``ignore_index`` are left out of everything.

The matrix accumulates without a host synchronisation, so a training step on a GPU never waits
for its scores (torchmetrics' update reads a maximum back for ``torch.bincount`` and a count
for the masking of ignored pixels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics.classification import MulticlassConfusionMatrix


def class_names_or_default(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    """The given names, or ``class0``, ``class1``, ...; their count must match."""
    names = list(class_names) if class_names else [f"class{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names for {num_classes} classes")
    return names


def first_scored_class(num_classes: int, include_background: bool) -> int:
    """Index of the first class in the means: 1 (foreground only) unless the background is
    included or there is a single class."""
    return 0 if include_background or num_classes == 1 else 1


def scores_from_confusion(
    confmat: torch.Tensor,
    class_names: Sequence[str],
    include_background: bool = False,
) -> dict[str, torch.Tensor]:
    """Dice, IoU per class and their means, and pixel accuracy, from a (true x pred) matrix."""
    confmat = confmat.double()
    true_positive = confmat.diag()
    target_total = confmat.sum(dim=1)
    pred_total = confmat.sum(dim=0)
    union = target_total + pred_total - true_positive
    nan = torch.tensor(float("nan"), dtype=confmat.dtype, device=confmat.device)
    present = union > 0
    dice = torch.where(present, 2 * true_positive / (target_total + pred_total), nan)
    iou = torch.where(present, true_positive / union, nan)
    mean_from = first_scored_class(len(class_names), include_background)
    scores = {
        "dice": dice[mean_from:].nanmean(),
        "iou": iou[mean_from:].nanmean(),
        "acc": true_positive.sum() / confmat.sum().clamp_min(1),
    }
    for index, name in enumerate(class_names):
        scores[f"dice_{name}"] = dice[index]
        scores[f"iou_{name}"] = iou[index]
    return {key: value.float() for key, value in scores.items()}


class SegmentationScores(MulticlassConfusionMatrix):
    """Accumulates a confusion matrix over label maps; ``compute()`` returns named scores."""

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = None,
        include_background: bool = False,
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)
        self.class_names = class_names_or_default(num_classes, class_names)
        self.include_background = include_background

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Adds predicted and true label maps (integer classes, the same shape, any number of
        spatial dimensions) to the matrix: each pixel's (true, predicted) pair is counted with
        ``scatter_add_`` into one bin per pair (ignored pixels into a spare bin, dropped), so no
        value is read back to the host (``torch.bincount`` reads the maximum back to size its
        output, and it is also slower on a CPU)."""
        classes = self.num_classes
        truths = target.reshape(-1).long()
        pairs = truths * classes + preds.reshape(-1).long()
        if self.ignore_index is not None:
            pairs = torch.where(truths == self.ignore_index, classes * classes, pairs)
        counts = torch.zeros(classes * classes + 1, dtype=torch.long, device=pairs.device)
        counts.scatter_add_(0, pairs, torch.ones_like(pairs))
        self.confmat += counts[:-1].reshape(classes, classes)

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return scores_from_confusion(self.confmat, self.class_names, self.include_background)
