"""The working resolution: images resampled by one factor (``data.scale``) before the network
sees them, and its class probabilities resampled back to each image's own size.

Training and validation during training run on resampled images (area interpolation) and masks
(nearest); the final scores, ``eval.py`` and ``predict.py`` score and write at each image's own
size. The factor travels with the trained network (its checkpoint and export sidecar).

All three resamplings share one geometry (pixel centres, OpenCV's ``INTER_AREA`` and
``align_corners=False``), so nothing shifts by half a pixel on the way down and back up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from unet_lab.arguments import InvalidArgumentError

AUTO = "auto"
# data.scale=auto: the median shorter side of the training images becomes this many patches
# (data.patch_size, or AUTO_REFERENCE_PATCH without one); images already that small keep 1.
AUTO_PATCHES = 2
AUTO_REFERENCE_PATCH = 256
# ... but the labelled structures keep this depth (px): the median distance of a pixel of a
# foreground class to the nearest pixel of another class (a disk of radius 14 px, a band
# 16 px wide), measured on up to AUTO_DEPTH_SAMPLE training masks. Small or thin structures
# (cells, membranes) thereby keep the native resolution.
AUTO_MIN_DEPTH = 4.0
AUTO_DEPTH_SAMPLE = 32
# Data types cv2.resize takes; others are resampled as float64 and cast back.
_CV2_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


def check_scale(name: str, value: object) -> float | str:
    """``auto`` or a factor in (0, 1] (as a float); else :class:`InvalidArgumentError`."""
    if value == AUTO and isinstance(value, str):
        return AUTO
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or not 0 < value <= 1:  # type: ignore[operator]
        raise InvalidArgumentError(name, value, "a number in (0, 1] or auto")
    return float(value)  # type: ignore[arg-type]


def auto_scale(
    shorter_sides: Sequence[int], patch_size: int | None, depth: float | None = None
) -> float:
    """The factor that makes the median of ``shorter_sides`` about ``AUTO_PATCHES`` patches,
    but keeps structures of ``depth`` px (:func:`structure_depth`) ``AUTO_MIN_DEPTH`` deep;
    rounded down to two significant digits; 1.0 for images that small already: never
    enlarges."""
    reference = AUTO_PATCHES * (patch_size or AUTO_REFERENCE_PATCH)
    factor = min(1.0, reference / float(np.median(shorter_sides)))
    if depth is not None:
        factor = max(factor, min(1.0, AUTO_MIN_DEPTH / max(depth, 1e-6)))
    if factor >= 1:
        return 1.0
    digits = 1 - math.floor(math.log10(factor))  # two significant digits
    return math.floor(factor * 10**digits) / 10**digits


def structure_depth(masks: Sequence[np.ndarray], num_classes: int) -> float | None:
    """How deep the labelled structures are (px): per foreground class (1..), the median over
    the masks of the median distance from a pixel of the class to the nearest pixel of another
    class; the smallest over the classes. None without foreground. At most
    ``AUTO_DEPTH_SAMPLE`` masks, evenly spread, are measured."""
    step = max(1, len(masks) // AUTO_DEPTH_SAMPLE)
    per_class: dict[int, list[float]] = {}
    for mask in list(masks)[::step][:AUTO_DEPTH_SAMPLE]:
        for label in range(1, num_classes):
            inside = mask == label
            if not inside.any() or inside.all():  # absent, or nothing to measure against
                continue
            distance = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)
            per_class.setdefault(label, []).append(float(np.median(distance[inside])))
    depths = [float(np.median(values)) for values in per_class.values()]
    return min(depths) if depths else None


def working_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) of an image of this size at the working resolution."""
    if scale == 1:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def resample_image(image: np.ndarray, scale: float) -> np.ndarray:
    """An image ``(H, W[, C])`` at the working resolution, by area interpolation (each output
    pixel the mean of the input pixels it covers), keeping its dtype and axes."""
    if scale == 1:
        return image
    height, width = working_size(image.shape[0], image.shape[1], scale)
    source = image if image.dtype.type in _CV2_DTYPES else image.astype(np.float64)
    out = cv2.resize(source, (width, height), interpolation=cv2.INTER_AREA)
    if out.ndim < image.ndim:  # OpenCV drops a single channel axis
        out = out[..., None]
    if out.dtype != image.dtype:
        if np.issubdtype(image.dtype, np.integer):
            info = np.iinfo(image.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        out = out.astype(image.dtype)
    return out


def resample_mask(mask: np.ndarray, scale: float) -> np.ndarray:
    """A label mask ``(H, W)`` at the working resolution: the label at each output pixel's
    centre (nearest neighbour; labels are never mixed)."""
    if scale == 1:
        return mask
    height, width = working_size(mask.shape[0], mask.shape[1], scale)
    rows = _centres(mask.shape[0], height)
    columns = _centres(mask.shape[1], width)
    return np.ascontiguousarray(mask[rows[:, None], columns[None, :]])


def _centres(native: int, working: int) -> np.ndarray:
    """Index of the native pixel under the centre of each of ``working`` pixels."""
    positions = (np.arange(working) + 0.5) * (native / working)
    return np.minimum(positions.astype(np.int64), native - 1)


def probabilities_at(probs: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Class probabilities ``([N,] C, h, w)`` resampled bilinearly to ``size`` (H, W).

    Probabilities, not logits: a bilinear mix of distributions is still one (the ``_probs.npy``
    of ``predict.py`` stays valid), and the sliding window and test-time augmentation already
    average probabilities, so every path resamples the same quantity. The argmax comes after.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(probs.shape[-2:]) == size:
        return probs
    batch = probs if probs.ndim == 4 else probs[None]
    batch = batch if batch.dtype == torch.float64 else batch.float()
    out = F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
    return out if probs.ndim == 4 else out[0]
