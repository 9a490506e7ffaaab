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


def write_volume_dataset(
    root: Path, count: int = 6, shape: tuple[int, int, int] = (16, 20, 12), num_classes: int = 3
) -> Path:
    """``root/imagesTr`` + ``root/labelsTr`` (the Decathlon's layout): NIfTI volumes of boxes
    of class 1.. on noise, with an anisotropic, flipped affine; returns root."""
    from unet_lab.data.volumes.io import write_volume

    rng = np.random.default_rng(0)
    affine = np.diag([0.8, -0.8, 2.0, 1.0])
    for i in range(count):
        labels = np.zeros(shape, np.uint8)
        image = rng.normal(100, 10, shape).astype(np.float32)
        for label in range(1, num_classes):
            x, y, z = (int(rng.integers(0, n - 5)) for n in shape)
            labels[x : x + 5, y : y + 5, z : z + 3] = label
            image[x : x + 5, y : y + 5, z : z + 3] += 60 * label
        write_volume(root / "imagesTr" / f"case_{i:03d}.nii.gz", image, affine)
        write_volume(root / "labelsTr" / f"case_{i:03d}.nii.gz", labels, affine)
    return root
