"""Small image/mask folders written on the fly (tests never ship real data)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_dataset(
    root: Path,
    count: int = 6,
    sizes: list[tuple[int, int]] | None = None,
    channels: int = 3,
    dtype: type = np.uint8,
    image_ext: str = ".png",
    mask_ext: str = ".png",
    num_classes: int = 3,
    mask_scale: int = 1,
) -> Path:
    """``root/images`` + ``root/masks``: bright squares of class 1.. on noise; returns root."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    top = np.iinfo(dtype).max
    for i in range(count):
        height, width = (sizes or [(48, 64)])[i % len(sizes or [(48, 64)])]
        mask = np.zeros((height, width), np.uint8)
        image = rng.uniform(0, 0.3 * top, (height, width, channels))
        for label in range(1, num_classes):
            y, x = rng.integers(0, height - 12), rng.integers(0, width - 12)
            mask[y : y + 12, x : x + 12] = label
            image[y : y + 12, x : x + 12] = (0.3 + 0.6 * label / num_classes) * top
        image = image.astype(dtype)
        if channels == 3:
            image = image[..., ::-1]  # OpenCV writes BGR
        cv2.imwrite(str(root / "images" / f"img{i:02d}{image_ext}"), image)
        cv2.imwrite(str(root / "masks" / f"img{i:02d}{mask_ext}"), mask * mask_scale)
    return root
