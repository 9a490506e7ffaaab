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
from typing import Any

import numpy as np

from unet_lab.config.compose import compose_train_config, instantiate
from unet_lab.data.dataset import as_unit_float
from unet_lab.data.volumes.datamodule import VolumeDataModule
from unet_lab.data.volumes.patches import busiest_slice
from unet_lab.errors import input_errors_exit
from unet_lab.pictures import GAP, colour, display, side_by_side, write_rgb
from unet_lab.training.build import build_datamodule


def augmentation_grid(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    pipeline: Any,
    variants: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """Rows of (image, mask) pairs: the original, then ``variants`` augmented ones. Images
    ``(H, W[, C])`` with an albumentations pipeline, or volumes ``(C, D, H, W)`` with a 3D one
    (each pair then shown as the slice with the most foreground)."""
    volumes = images and np.asarray(images[0]).ndim == 4
    if volumes:
        pipeline.reseed(seed)
    else:
        pipeline.set_random_seed(seed)
    rows = []
    for image, mask in zip(images, masks, strict=True):
        if volumes:
            pairs = [_slice(image, mask)]
            for _ in range(variants):
                pairs.append(_slice(*pipeline(np.asarray(image), np.asarray(mask))))
        else:
            image = as_unit_float(image if image.ndim == 3 else image[..., None])
            pairs = [(image, mask)]
            for _ in range(variants):
                out = pipeline(image=image, mask=mask)
                pairs.append((out["image"], out["mask"]))
        rows.append(side_by_side([tile for p, m in pairs for tile in (display(p), colour(m))]))
    width = max(r.shape[1] for r in rows)
    rows = [
        np.pad(r, ((0, GAP), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
    ]
    return np.concatenate(rows, axis=0)


def _slice(volume: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The slice ``(H, W, 1)`` of a volume's first channel with the most foreground."""
    depth = busiest_slice(labels)
    return np.asarray(volume)[0, depth][..., None], np.asarray(labels)[depth]


def main(args: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="unet-lab show-aug", description=__doc__)
    parser.add_argument("--output", default="augmentation.png", help="PNG file to write")
    parser.add_argument("--samples", type=int, default=4, help="training images, one per row")
    parser.add_argument("--variants", type=int, default=4, help="augmented copies per image")
    options, overrides = parser.parse_known_args(list(args))
    with input_errors_exit():
        cfg = compose_train_config(overrides)
        pipeline = instantiate(cfg.augmentation.train, "augmentation.train")
        datamodule: Any = build_datamodule(cfg)
        images: Sequence[np.ndarray]
        masks: Sequence[np.ndarray]
        if isinstance(datamodule, VolumeDataModule):  # whole preprocessed training cases
            cases = datamodule.cases("train")[: options.samples]
            images = [np.asarray(c.image) for c in cases]
            masks = [np.asarray(c.label) for c in cases]
        else:
            images, masks = datamodule.working_split("train")  # as training sees them
    count = min(options.samples, len(images))
    grid = augmentation_grid(images[:count], masks[:count], pipeline, options.variants)
    output = Path(options.output)
    write_rgb(output, grid)
    print(f"wrote {output}: {count} training images x (original + {options.variants} augmented)")
