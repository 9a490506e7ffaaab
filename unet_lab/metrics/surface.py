"""Boundary distances between predicted and true masks, for the test stage: the 95th-percentile
Hausdorff distance (HD95) and the average symmetric surface distance (ASD), in pixels.

Definitions (the same as MONAI's ``compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)``): a mask's surface is its pixels with a
4-connected neighbour outside it (image borders count as outside); for every surface pixel of
one mask, the Euclidean distance to the nearest surface pixel of the other.
HD95 = max(95th percentile of prediction -> truth, 95th percentile of truth -> prediction);
ASD = mean of both sets of distances together.

Per image and class: a class absent from both prediction and truth has no distance (NaN, left
out of the means, like Dice); a class present in only one of them gets the image diagonal,
the largest distance possible, so a missed or hallucinated object is penalized, not skipped.
Scores are averaged over images per class, then over the foreground classes.
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


def surface_distances(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface pixel of ``prediction`` to the surface of ``truth``, and
    the other way round (both masks boolean and non-empty)."""
    prediction_surface = prediction & ~ndimage.binary_erosion(prediction)
    truth_surface = truth & ~ndimage.binary_erosion(truth)
    to_truth = ndimage.distance_transform_edt(~truth_surface)[prediction_surface]
    to_prediction = ndimage.distance_transform_edt(~prediction_surface)[truth_surface]
    return to_truth, to_prediction


def hd95_and_asd(prediction: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """HD95 and ASD of two boolean masks, with the policy of the module docstring."""
    has_prediction, has_truth = bool(prediction.any()), bool(truth.any())
    if not has_prediction and not has_truth:
        return math.nan, math.nan
    if not (has_prediction and has_truth):
        diagonal = math.hypot(*prediction.shape)
        return diagonal, diagonal
    to_truth, to_prediction = surface_distances(prediction, truth)
    hd95 = max(np.percentile(to_truth, 95), np.percentile(to_prediction, 95))
    asd = np.concatenate([to_truth, to_prediction]).mean()
    return float(hd95), float(asd)


class SurfaceDistances(Metric):
    """HD95 and ASD per class over label maps ``(N, *spatial)``; ``compute()`` returns
    ``hd95``, ``asd`` (foreground means) and ``hd95_<class>``, ``asd_<class>``. Computed on the
    CPU with SciPy, image by image: meant for the test stage."""

    full_state_update = False
    values: list[torch.Tensor]  # per update: (images, classes, 2) with HD95 and ASD

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = None,
        include_background: bool = False,
    ) -> None:
        super().__init__()
        self.class_names = class_names_or_default(num_classes, class_names)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.include_background = include_background
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        predictions, truths = preds.detach().cpu().numpy(), target.detach().cpu().numpy()
        rows = []
        for prediction, truth in zip(predictions, truths, strict=True):
            valid = (
                np.ones(truth.shape, bool)
                if self.ignore_index is None
                else truth != self.ignore_index
            )
            row = [
                hd95_and_asd((prediction == c) & valid, (truth == c) & valid)
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
