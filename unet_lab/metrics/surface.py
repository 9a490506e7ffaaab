"""Boundary distances between predicted and true masks, for the test stage: the 95th-percentile
Hausdorff distance (HD95) and the average symmetric surface distance (ASD), for images and
volumes alike: in pixels (voxels), or in the units of a voxel ``spacing`` (one value per spatial
axis, e.g. millimetres for a CT volume of spacing (3, 0.8, 0.8)).

Definitions (the same as MONAI's ``compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)``): a mask's surface is its pixels with a
face-connected neighbour outside it (4 in 2D, 6 in 3D; borders count as outside); for every
surface pixel of one mask, the Euclidean distance (scaled by the spacing) to the nearest
surface pixel of the other.
HD95 = max(95th percentile of prediction -> truth, 95th percentile of truth -> prediction);
ASD = mean of both sets of distances together.

Per image and class: a class absent from both prediction and truth has no distance (NaN, left
out of the means, like Dice); a class present in only one of them gets the image diagonal
(scaled by the spacing), the largest distance possible, so a missed or hallucinated object is
penalized, not skipped. Scores are averaged over images per class, then over the foreground
classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from unet_lab.metrics.scores import class_names_or_default, first_scored_class

Spacing = Sequence[float] | np.ndarray | torch.Tensor


def checked_spacing(spacing: Spacing | None, spatial_dims: int) -> tuple[float, ...] | None:
    """``spacing`` as floats, one positive value per spatial axis (None: pixels)."""
    if spacing is None:
        return None
    values = tuple(float(v) for v in np.asarray(spacing, dtype=np.float64).reshape(-1))
    if len(values) != spatial_dims or not all(v > 0 for v in values):
        raise ValueError(
            f"spacing={list(values)} is not valid: expected {spatial_dims} positive values, "
            "one per spatial axis"
        )
    return values


def spacing_per_image(
    spacing: Spacing | None, images: int, spatial_dims: int
) -> list[tuple[float, ...] | None]:
    """One checked spacing per image: ``spacing`` shared by all, or one row per image."""
    if spacing is None:
        return [None] * images
    rows = np.asarray(spacing.cpu() if isinstance(spacing, torch.Tensor) else spacing, float)
    if rows.ndim < 2:
        return [checked_spacing(rows, spatial_dims)] * images
    if len(rows) != images:
        raise ValueError(f"spacing has {len(rows)} rows for {images} images")
    return [checked_spacing(row, spatial_dims) for row in rows]


def surface_distances(
    prediction: np.ndarray, truth: np.ndarray, spacing: Spacing | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface pixel of ``prediction`` to the surface of ``truth``, and
    the other way round (both masks boolean and non-empty, 2D or 3D), in pixels or in the
    units of ``spacing`` (one value per axis)."""
    sampling = checked_spacing(spacing, prediction.ndim)
    prediction_surface = prediction & ~ndimage.binary_erosion(prediction)
    truth_surface = truth & ~ndimage.binary_erosion(truth)
    to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=sampling)
    to_prediction = ndimage.distance_transform_edt(~prediction_surface, sampling=sampling)
    return to_truth[prediction_surface], to_prediction[truth_surface]


def hd95_and_asd(
    prediction: np.ndarray, truth: np.ndarray, spacing: Spacing | None = None
) -> tuple[float, float]:
    """HD95 and ASD of two boolean masks (2D or 3D), in pixels or in the units of
    ``spacing``, with the policy of the module docstring."""
    sampling = checked_spacing(spacing, prediction.ndim)
    has_prediction, has_truth = bool(prediction.any()), bool(truth.any())
    if not has_prediction and not has_truth:
        return math.nan, math.nan
    if not (has_prediction and has_truth):
        scale = sampling or (1,) * prediction.ndim
        sides = [side * step for side, step in zip(prediction.shape, scale, strict=True)]
        diagonal = math.hypot(*sides)
        return diagonal, diagonal
    to_truth, to_prediction = surface_distances(prediction, truth, sampling)
    hd95 = max(np.percentile(to_truth, 95), np.percentile(to_prediction, 95))
    asd = np.concatenate([to_truth, to_prediction]).mean()
    return float(hd95), float(asd)


class SurfaceDistances(Metric):
    """HD95 and ASD per class over label maps ``(N, *spatial)`` (images or volumes);
    ``compute()`` returns ``hd95``, ``asd`` (foreground means) and ``hd95_<class>``,
    ``asd_<class>``. Computed on the CPU with SciPy, image by image: meant for the test stage.

    ``spacing`` (one value per spatial axis, e.g. millimetres per voxel) scales the distances;
    None counts pixels. ``update(..., spacing=...)`` overrides it for the images of that update,
    since cases differ in spacing: one spacing for all of them, or one row per image
    ``(N, spatial_dims)``, as a batch collates them.
    """

    full_state_update = False
    values: list[torch.Tensor]  # per update: (images, classes, 2) with HD95 and ASD

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = None,
        include_background: bool = False,
        spacing: Spacing | None = None,
    ) -> None:
        super().__init__()
        self.class_names = class_names_or_default(num_classes, class_names)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.include_background = include_background
        self.spacing = None if spacing is None else checked_spacing(spacing, len(spacing))
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(
        self, preds: torch.Tensor, target: torch.Tensor, spacing: Spacing | None = None
    ) -> None:
        predictions, truths = preds.detach().cpu().numpy(), target.detach().cpu().numpy()
        spacings = spacing_per_image(
            self.spacing if spacing is None else spacing, len(predictions), predictions.ndim - 1
        )
        rows = []
        for prediction, truth, sampling in zip(predictions, truths, spacings, strict=True):
            valid = (
                np.ones(truth.shape, bool)
                if self.ignore_index is None
                else truth != self.ignore_index
            )
            row = [
                hd95_and_asd((prediction == c) & valid, (truth == c) & valid, sampling)
                for c in range(self.num_classes)
            ]
            rows.append(row)
        self.values.append(torch.tensor(rows, dtype=torch.float64, device=self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        values = dim_zero_cat(self.values)
        per_class = values.nanmean(dim=0)  # (classes, 2)
        first = first_scored_class(self.num_classes, self.include_background)
        means = per_class[first:].nanmean(dim=0)
        scores = {"hd95": means[0], "asd": means[1]}
        for index, name in enumerate(self.class_names):
            scores[f"hd95_{name}"] = per_class[index, 0]
            scores[f"asd_{name}"] = per_class[index, 1]
        return {key: value.float() for key, value in scores.items()}
