"""Segmentation losses on logits ``(N, C, *spatial)`` and integer targets ``(N, *spatial)``.

All losses compute in at least float32 (also under autocast) and treat ``ignore_index`` pixels
the same way: they contribute nothing, neither to the numerator nor to the normalization.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from unet_lab.validation import check_float


def _full_precision(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (from autocast) in float32; float32/float64 as they are."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _valid_mask(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor | None:
    return None if ignore_index is None else target != ignore_index


class CrossEntropyLoss(nn.Module):
    """Pixel-wise cross-entropy with optional class weights, label smoothing and ignore_index.

    The mean is taken over the pixels that are not ignored (weighted by their class weight).
    """

    class_weights: torch.Tensor | None

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        check_float("label_smoothing", label_smoothing, 0.0, 1.0)
        weights = None if class_weights is None else torch.tensor(list(class_weights))
        self.register_buffer("class_weights", weights, persistent=False)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = _full_precision(logits)
        weights = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        return F.cross_entropy(
            logits,
            target.long(),
            weight=weights,
            ignore_index=-100 if self.ignore_index is None else self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


class DiceLoss(nn.Module):
    """Soft Dice loss, ``1 - mean_c (2|P∩G| + s) / (|P| + |G| + s)`` over softmax probabilities.

    Args:
        include_background: count class 0 in the mean.
        batch_dice: pool the whole batch into one volume per class (nnU-Net's default, stable
            with small objects); otherwise compute per image and average.
        smooth: ``s`` above; keeps classes absent from the target well defined (their Dice
            rewards predicting nothing).
        ignore_index: target value whose pixels are left out.
    """

    def __init__(
        self,
        include_background: bool = False,
        batch_dice: bool = True,
        smooth: float = 1e-5,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        check_float("smooth", smooth, 0.0)
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.smooth = smooth
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        probs = _full_precision(logits).softmax(dim=1)
        valid = _valid_mask(target, self.ignore_index)
        labels = target.long() if valid is None else target.long().where(valid, 0)
        one_hot = F.one_hot(labels, num_classes).movedim(-1, 1).to(probs.dtype)
        if valid is not None:
            keep = valid.unsqueeze(1).to(probs.dtype)
            probs, one_hot = probs * keep, one_hot * keep
        dims = [0, *range(2, probs.ndim)] if self.batch_dice else list(range(2, probs.ndim))
        intersection = (probs * one_hot).sum(dims)
        total = probs.sum(dims) + one_hot.sum(dims)
        dice = (2 * intersection + self.smooth) / (total + self.smooth).clamp_min(1e-12)
        if not self.include_background and num_classes > 1:
            dice = dice[..., 1:]
        return 1 - dice.mean()


class DiceCELoss(nn.Module):
    """Weighted sum of :class:`DiceLoss` and :class:`CrossEntropyLoss` (nnU-Net's default)."""

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        include_background: bool = False,
        batch_dice: bool = True,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        self.dice_weight = check_float("dice_weight", dice_weight, 0.0)
        self.ce_weight = check_float("ce_weight", ce_weight, 0.0)
        self.dice = DiceLoss(include_background, batch_dice, smooth, ignore_index)
        self.ce = CrossEntropyLoss(class_weights, ignore_index, label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * self.ce(
            logits, target
        )


class DeepSupervisionLoss(nn.Module):
    """``loss`` over a network's outputs ``[main, aux_1, ..., aux_k]`` (all at the target's
    size), weighted ``1, 1/2, ..., 1/2^k`` and normalized to sum to 1; a single tensor is
    passed to ``loss`` as it is (evaluation)."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(
        self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        weights = [0.5**i for i in range(len(outputs))]
        total = sum(w * self.loss(o, target) for w, o in zip(weights, outputs, strict=True))
        return total / sum(weights)
