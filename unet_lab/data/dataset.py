"""A dataset over decoded images and label masks held in memory."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset


def as_unit_float(image: np.ndarray) -> np.ndarray:
    """Integer images (8 or 16 bit) as float32 in [0, 1], so every albumentations transform
    works on them the same way; float images as they are."""
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / np.iinfo(image.dtype).max
    return image.astype(np.float32, copy=False)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HWC integer or float image -> CHW float32, standardized per image and channel."""
    array = image.astype(np.float32)
    if array.ndim == 2:
        array = array[..., None]
    mean = array.mean(axis=(0, 1), keepdims=True)
    std = array.std(axis=(0, 1), keepdims=True)
    array = (array - mean) / np.maximum(std, 1e-6)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class SegmentationArrayDataset(Dataset[dict[str, torch.Tensor]]):
    """Images (H, W, C) and masks (H, W) in memory; yields ``{"image", "mask", "index"}``.

    Images are scaled to float32 in [0, 1], then the transform is applied jointly to image and
    mask, then each image is standardized; masks stay integer labels (albumentations uses
    nearest interpolation for them) and come out as int64.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        transform: A.Compose | None = None,
    ) -> None:
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images = images
        self.masks = masks
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, mask = as_unit_float(self.images[index]), self.masks[index]
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": image_to_tensor(image),
            "mask": torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64)),
            "index": torch.tensor(index),
        }
