"""Region scores of boundary (membrane) maps, as the ISBI 2012 EM segmentation challenge defined
them (Arganda-Carreras et al., 2015, Front. Neuroanat. 9:142), the measures of the U-Net paper.

A boundary map splits an image into regions: the 4-connected components of its non-boundary
pixels. The *foreground-restricted Rand F-score* compares the regions of a prediction with the
true ones over the pixels inside true regions only (true boundary pixels are left out); predicted
boundary pixels there count as regions of one pixel each. With ``n_ij`` the pixels of true region
``i`` in predicted region ``j``, ``a_i`` and ``b_j`` the region sizes:

    precision = sum n_ij^2 / sum b_j^2      (low when predicted regions merge true ones)
    recall    = sum n_ij^2 / sum a_i^2      (low when true regions are split)
    Rand error = 1 - F = 1 - 2 * precision * recall / (precision + recall)

The *pixel error* is the share of pixels whose boundary/non-boundary label is wrong. The
challenge scored a probability map at thresholds 0.0, 0.1, ..., 0.9 and reported the best value
of each measure (:func:`best_over_thresholds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

ISBI_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(10))


def regions(boundary: np.ndarray) -> np.ndarray:
    """Labels 1..n for the 4-connected regions of the non-boundary pixels; boundary pixels 0."""
    labels, _ = ndimage.label(~boundary.astype(bool))  # the default structure is 4-connected
    return labels


@dataclass(frozen=True)
class RandScores:
    f_score: float
    precision: float
    recall: float

    @property
    def error(self) -> float:
        return 1.0 - self.f_score


def rand_scores(true_regions: np.ndarray, predicted_regions: np.ndarray) -> RandScores:
    """Foreground-restricted Rand scores of two label images (0 = boundary, see module doc)."""
    if true_regions.shape != predicted_regions.shape:
        raise ValueError(f"shapes differ: {true_regions.shape} vs {predicted_regions.shape}")
    inside = true_regions > 0
    true_labels = true_regions[inside].astype(np.int64)
    predicted = predicted_regions[inside].astype(np.int64)
    if true_labels.size == 0:
        return RandScores(1.0, 1.0, 1.0)
    singletons = np.count_nonzero(predicted == 0)  # predicted boundary: one region per pixel
    in_region = predicted > 0
    pairs = true_labels[in_region] * (int(predicted.max()) + 1) + predicted[in_region]
    joint = float((np.unique(pairs, return_counts=True)[1].astype(np.float64) ** 2).sum())
    joint += singletons
    true_sizes = np.unique(true_labels, return_counts=True)[1].astype(np.float64)
    predicted_sizes = np.unique(predicted[in_region], return_counts=True)[1].astype(np.float64)
    precision = joint / ((predicted_sizes**2).sum() + singletons)
    recall = joint / (true_sizes**2).sum()
    f_score = 2 * precision * recall / (precision + recall)
    return RandScores(float(f_score), float(precision), float(recall))


def boundary_rand_error(
    predicted_labels: np.ndarray,
    true_labels: np.ndarray,
    boundary_class: int,
    ignore_index: int | None = None,
) -> float:
    """Rand error of the regions that class ``boundary_class`` separates, in a predicted and a
    true label map (pixels of ``ignore_index`` are left out, like true boundary pixels)."""
    true_regions = regions(true_labels == boundary_class)
    if ignore_index is not None:
        true_regions[true_labels == ignore_index] = 0
    return rand_scores(true_regions, regions(predicted_labels == boundary_class)).error


@dataclass(frozen=True)
class BoundaryScores:
    """The best mean Rand error and pixel error over thresholds, and the thresholds giving them
    (a pixel is boundary when its boundary probability is above ``1 - threshold``)."""

    rand_error: float
    rand_threshold: float
    pixel_error: float
    pixel_threshold: float


def best_over_thresholds(
    boundary_probabilities: Sequence[np.ndarray],
    true_boundaries: Sequence[np.ndarray],
    thresholds: Sequence[float] = ISBI_THRESHOLDS,
) -> BoundaryScores:
    """Scores a set of images as the challenge scored its test stack: at each threshold ``t``
    the non-boundary pixels are those whose non-boundary probability is above ``t``; Rand error
    and pixel error are averaged over the images; the best threshold of each is reported."""
    if len(boundary_probabilities) != len(true_boundaries) or not true_boundaries:
        raise ValueError("need as many probability maps as true boundary maps, at least one")
    true_regions = [regions(boundary) for boundary in true_boundaries]
    rand, pixel = {}, {}
    for threshold in thresholds:
        predicted = [1.0 - probability <= threshold for probability in boundary_probabilities]
        rand[threshold] = float(
            np.mean(
                [
                    rand_scores(truth, regions(boundary)).error
                    for truth, boundary in zip(true_regions, predicted, strict=True)
                ]
            )
        )
        pixel[threshold] = float(
            np.mean(
                [
                    np.mean(boundary != truth.astype(bool))
                    for boundary, truth in zip(predicted, true_boundaries, strict=True)
                ]
            )
        )
    rand_threshold = min(rand, key=rand.__getitem__)
    pixel_threshold = min(pixel, key=pixel.__getitem__)
    return BoundaryScores(
        rand[rand_threshold], rand_threshold, pixel[pixel_threshold], pixel_threshold
    )
