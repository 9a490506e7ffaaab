"""Pictures for people: images as RGB, label maps in colour, overlays and side-by-side rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from unet_lab.data.dataset import as_unit_float

# Distinct colours for class indices 1.. (class 0, background, stays black).
COLOURS = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ],
    np.uint8,
)
GAP = 4


def display(image: np.ndarray) -> np.ndarray:
    """An image (HWC or HW; integer, or float in [0, 1]) as RGB uint8: grey is repeated, more
    than 3 channels show the first 3."""
    image = as_unit_float(image if image.ndim == 3 else image[..., None])
    image = np.clip(image, 0.0, 1.0)
    image = np.repeat(image[..., :1], 3, axis=2) if image.shape[2] < 3 else image[..., :3]
    return (image * 255).round().astype(np.uint8)


def colour(labels: np.ndarray) -> np.ndarray:
    """A label map as RGB, one colour per class."""
    return COLOURS[np.asarray(labels).astype(np.int64) % len(COLOURS)]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with non-background classes tinted in their colour."""
    picture = display(image).astype(np.float32)
    tinted = np.where(
        (np.asarray(labels) > 0)[..., None],
        (1 - alpha) * picture + alpha * colour(labels).astype(np.float32),
        picture,
    )
    return tinted.round().astype(np.uint8)


def side_by_side(pictures: Sequence[np.ndarray]) -> np.ndarray:
    """RGB pictures in a row, top-aligned, with white gaps."""
    height = max(p.shape[0] for p in pictures)
    tiles = []
    for picture in pictures:
        padded = np.full((height, picture.shape[1] + GAP, 3), 255, np.uint8)
        padded[: picture.shape[0], : picture.shape[1]] = picture
        tiles.append(padded)
    return np.concatenate(tiles, axis=1)


def write_rgb(path: Path, picture: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
