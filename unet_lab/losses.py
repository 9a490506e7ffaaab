"""Segmentation losses on logits ``(N, C, *spatial)`` and integer targets ``(N, *spatial)``.

All losses compute in at least float32 (also under autocast) and treat ``ignore_index`` pixels
the same way: they contribute nothing, neither to the numerator nor to the normalization.
:class:`BinaryCrossEntropyLoss` is the one for networks with a single output channel
(``out_channels = 1``); the others take one logit per class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from unet_lab.arguments import check_float, check_int


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


def _soft_counts(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None, pooled: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft true positives, false positives and false negatives per class, from softmax
    probabilities, over the batch (``pooled``) or per image: shapes ``(C,)`` or ``(N, C)``."""
    num_classes = logits.shape[1]
    probs = _full_precision(logits).softmax(dim=1)
    valid = _valid_mask(target, ignore_index)
    labels = target.long() if valid is None else target.long().where(valid, 0)
    # Compared with each class, not F.one_hot: that reads the labels' minimum back to check it
    # (a host synchronisation each step on a GPU); labels are checked when the data is read.
    classes = torch.arange(num_classes, device=labels.device).view(1, -1, *[1] * (labels.ndim - 1))
    one_hot = (labels.unsqueeze(1) == classes).to(probs.dtype)
    if valid is not None:
        keep = valid.unsqueeze(1).to(probs.dtype)
        probs, one_hot = probs * keep, one_hot * keep
    dims = [0, *range(2, probs.ndim)] if pooled else list(range(2, probs.ndim))
    tp = (probs * one_hot).sum(dims)
    return tp, probs.sum(dims) - tp, one_hot.sum(dims) - tp


def _class_mean(scores: torch.Tensor, include_background: bool) -> torch.Tensor:
    """Mean over classes (the last axis), without class 0 unless ``include_background``."""
    if not include_background and scores.shape[-1] > 1:
        scores = scores[..., 1:]
    return scores.mean()


class TverskyLoss(nn.Module):
    """Tversky loss (Salehi et al., 2017): ``1 - mean_c (TP + s) / (TP + a FP + b FN + s)`` on
    softmax probabilities; ``alpha = beta = 0.5`` is the Dice loss, ``beta > alpha`` weighs
    missed foreground more than false alarms (small structures). Other arguments as
    :class:`DiceLoss`."""

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        include_background: bool = False,
        batch_dice: bool = True,
        smooth: float = 1e-5,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.alpha = check_float("alpha", alpha, 0.0)
        self.beta = check_float("beta", beta, 0.0)
        check_float("smooth", smooth, 0.0)
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.smooth = smooth
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, fp, fn = _soft_counts(logits, target, self.ignore_index, self.batch_dice)
        denominator = (tp + self.alpha * fp + self.beta * fn + self.smooth).clamp_min(1e-12)
        return 1 - _class_mean((tp + self.smooth) / denominator, self.include_background)


class DiceLoss(TverskyLoss):
    """Soft Dice loss, ``1 - mean_c (2|P∩G| + s) / (|P| + |G| + s)`` over softmax probabilities:
    the Tversky loss with ``alpha = beta = 1/2`` (and ``s / 2``).

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
        check_float("smooth", smooth, 0.0)
        super().__init__(0.5, 0.5, include_background, batch_dice, smooth / 2, ignore_index)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017): ``-w_t (1 - p_t)^gamma log p_t`` per pixel, averaged over
    the pixels that are not ignored; ``gamma = 0`` is cross-entropy. ``class_weights`` are the
    per-class ``w`` (the paper's alpha)."""

    class_weights: torch.Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.gamma = check_float("gamma", gamma, 0.0)
        weights = None if class_weights is None else torch.tensor(list(class_weights))
        self.register_buffer("class_weights", weights, persistent=False)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_probs = _full_precision(logits).log_softmax(dim=1)
        valid = _valid_mask(target, self.ignore_index)
        labels = target.long() if valid is None else target.long().where(valid, 0)
        log_p = log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.class_weights is not None:
            loss = loss * self.class_weights.to(loss.dtype)[labels]
        if valid is None:
            return loss.mean()
        return (loss * valid).sum() / valid.sum().clamp_min(1)


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


class BinaryCrossEntropyLoss(nn.Module):
    """Binary cross-entropy for networks with one output channel (the foreground logit):
    ``loss=bce`` makes the network single-output; targets are 0 or 1. ``pos_weight``
    multiplies the foreground term (e.g. background/foreground pixel ratio)."""

    out_channels = 1

    def __init__(
        self,
        pos_weight: float | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if pos_weight is not None:
            check_float("pos_weight", pos_weight, 0.0)
        self.pos_weight = pos_weight
        self.ignore_index = ignore_index
        self.label_smoothing = check_float("label_smoothing", label_smoothing, 0.0, 1.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = _full_precision(logits)
        if logits.shape[1] != 1:
            raise ValueError(f"binary cross-entropy needs 1 output channel, got {logits.shape[1]}")
        valid = _valid_mask(target, self.ignore_index)
        labels = (target if valid is None else target.where(valid, 0)).to(logits.dtype)
        labels = labels * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        pos_weight = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
        loss = F.binary_cross_entropy_with_logits(
            logits[:, 0], labels, pos_weight=pos_weight, reduction="none"
        )
        if valid is None:
            return loss.mean()
        return (loss * valid).sum() / valid.sum().clamp_min(1)


def border_weight_map(
    target: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: Sequence[float] | None = None,
    ignore_index: int | None = None,
    boundary_class: int | None = None,
) -> np.ndarray:
    """The U-Net paper's weight map for one label image: ``w = w_c + w0 exp(-(d1 + d2)^2 /
    (2 sigma^2))``, where ``d1`` and ``d2`` are the distances to the nearest and second-nearest
    object, added on the pixels outside the objects, so that thin gaps between touching objects
    weigh most. Objects are 4-connected regions: of the foreground (class > 0), or, with
    ``boundary_class``, of the pixels of every other class, which that class separates (EM
    membranes between cells: the paper's objects are the cells, and a membrane is the gap).
    ``w_c``: ``class_weights`` of each pixel's class, or, without them, the image's inverse
    class frequencies (normalized so that a class-balanced image has weight 1 everywhere).
    Ignored pixels get weight 0 and belong to no object."""
    valid = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    labels = np.where(valid, target, 0).astype(np.int64)
    if class_weights is not None:
        weights = np.asarray(class_weights, np.float64)[labels]
    else:
        classes, counts = np.unique(labels[valid], return_counts=True)
        per_class = np.zeros(int(labels.max()) + 1)
        per_class[classes] = valid.sum() / (len(classes) * counts)
        weights = per_class[labels]
    inside = (labels > 0 if boundary_class is None else labels != boundary_class) & valid
    objects, count = ndimage.label(inside)
    if count >= 2:
        distances = np.stack(
            [ndimage.distance_transform_edt(objects != k) for k in range(1, count + 1)]
        )
        nearest = np.partition(distances, 1, axis=0)[:2]
        border = w0 * np.exp(-((nearest[0] + nearest[1]) ** 2) / (2 * sigma**2))
        weights = weights + np.where(inside, 0.0, border)
    return np.where(valid, weights, 0.0)


class BorderWeightedCrossEntropyLoss(nn.Module):
    """The U-Net paper's loss: cross-entropy weighted per pixel by :func:`border_weight_map`
    (``w0 = 10``, ``sigma = 5`` px), normalized by the total weight. The maps are computed from
    each target on the CPU (one distance transform per object). ``boundary_class``: the class
    that separates the objects (EM membranes: the objects are then the cells between them);
    None: the objects are the foreground regions."""

    def __init__(
        self,
        w0: float = 10.0,
        sigma: float = 5.0,
        class_weights: Sequence[float] | None = None,
        ignore_index: int | None = None,
        boundary_class: int | None = None,
    ) -> None:
        super().__init__()
        self.w0 = check_float("w0", w0, 0.0)
        self.sigma = check_float("sigma", sigma, 1e-6)
        self.class_weights = None if class_weights is None else list(class_weights)
        self.ignore_index = ignore_index
        self.boundary_class = (
            None if boundary_class is None else check_int("boundary_class", boundary_class, 0)
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = _full_precision(logits)
        maps = [
            border_weight_map(
                t, self.w0, self.sigma, self.class_weights, self.ignore_index, self.boundary_class
            )
            for t in target.detach().cpu().numpy()
        ]
        weights = torch.from_numpy(np.stack(maps)).to(logits.device, logits.dtype)
        valid = _valid_mask(target, self.ignore_index)
        labels = target.long() if valid is None else target.long().where(valid, 0)
        loss = F.cross_entropy(logits, labels, reduction="none")
        return (loss * weights).sum() / weights.sum().clamp_min(1e-12)


class RegionLoss(nn.Module):
    """Overlapping regions (``data.regions``): binary cross-entropy plus soft Dice, one sigmoid
    per region, against region targets ``(N, R, *spatial)`` of 0 and 1; pixels whose target is
    negative (ignored in the label map) count in neither term.

    Args:
        dice_weight, bce_weight: weights of the two terms.
        batch_dice: Dice over the whole batch per region (nnU-Net's), else per image.
        smooth: added to the Dice's numerator and denominator.
        ignore_index: the label value left out (``module.ignore_index`` reads it); it reaches
            the loss as negative targets, which :meth:`forward` leaves out.
    """

    multi_label = True  # the module gives it region targets, not a label map

    def __init__(
        self,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
        batch_dice: bool = True,
        smooth: float = 1e-5,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.dice_weight = check_float("dice_weight", dice_weight, 0.0)
        self.bce_weight = check_float("bce_weight", bce_weight, 0.0)
        self.batch_dice = batch_dice
        self.smooth = check_float("smooth", smooth, 0.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = _full_precision(logits)
        valid = (target >= 0).to(logits.dtype)
        truth = target.clamp_min(0).to(logits.dtype)
        cross = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
        bce = (cross * valid).sum() / valid.sum().clamp_min(1)
        probs = torch.sigmoid(logits) * valid
        truth = truth * valid
        dims = [0, *range(2, logits.ndim)] if self.batch_dice else list(range(2, logits.ndim))
        overlap = (probs * truth).sum(dims)
        dice = (2 * overlap + self.smooth) / (probs.sum(dims) + truth.sum(dims) + self.smooth)
        return self.bce_weight * bce + self.dice_weight * (1 - dice.mean())


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
