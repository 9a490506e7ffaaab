"""``unet-lab show-aug [--output FILE] [--samples N] [--variants N] [overrides]``: a PNG grid
of training images and masks as an augmentation pipeline changes them.

Each row is one training sample: the original image and mask, then ``variants`` augmented
image/mask pairs. Uses the training config, so ``augmentation=heavy data=folder ...`` shows
exactly what training would see (before normalization).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np

from unet_lab.check_data import load_datamodule
from unet_lab.config import compose_train_config, instantiate
from unet_lab.data.dataset import as_unit_float
from unet_lab.errors import input_errors_exit

# Distinct colours for class indices 1.. (class 0, background, stays black).
_COLOURS = np.array(
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
_GAP = 4


def _display(image: np.ndarray) -> np.ndarray:
    """A float [0, 1] HWC image as RGB uint8."""
    image = np.clip(image, 0.0, 1.0)
    image = np.repeat(image[..., :1], 3, axis=2) if image.shape[2] < 3 else image[..., :3]
    return (image * 255).round().astype(np.uint8)


def _colour(mask: np.ndarray) -> np.ndarray:
    return _COLOURS[np.asarray(mask).astype(np.int64) % len(_COLOURS)]


def augmentation_grid(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    pipeline: A.Compose,
    variants: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """Rows of (image, mask) pairs: the original, then ``variants`` augmented ones."""
    pipeline.set_random_seed(seed)
    rows = []
    for image, mask in zip(images, masks, strict=True):
        image = as_unit_float(image if image.ndim == 3 else image[..., None])
        pairs = [(image, mask)]
        for _ in range(variants):
            out = pipeline(image=image, mask=mask)
            pairs.append((out["image"], out["mask"]))
        height = max(p[0].shape[0] for p in pairs)
        tiles = []
        for picture, labels in pairs:
            for tile in (_display(picture), _colour(labels)):
                padded = np.full((height, tile.shape[1] + _GAP, 3), 255, np.uint8)
                padded[: tile.shape[0], : tile.shape[1]] = tile
                tiles.append(padded)
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [
        np.pad(r, ((0, _GAP), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
    ]
    return np.concatenate(rows, axis=0)


def main(args: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="unet-lab show-aug", description=__doc__)
    parser.add_argument("--output", default="augmentation.png", help="PNG file to write")
    parser.add_argument("--samples", type=int, default=4, help="training images, one per row")
    parser.add_argument("--variants", type=int, default=4, help="augmented copies per image")
    options, overrides = parser.parse_known_args(list(args))
    with input_errors_exit():
        cfg = compose_train_config(overrides)
        pipeline = instantiate(cfg.augmentation.train, "augmentation.train")
        images, masks = load_datamodule(cfg).load_split("train")
    count = min(options.samples, len(images))
    grid = augmentation_grid(images[:count], masks[:count], pipeline, options.variants)
    output = Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(output), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {output}: {count} training images x (original + {options.variants} augmented)")
