"""A dataset over decoded images and label masks held in memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from unet_lab.data.scaling import resample_image


def as_unit_float(image: np.ndarray) -> np.ndarray:
    """Integer images (8 or 16 bit) as float32 in [0, 1], so every albumentations transform
    works on them the same way; float images as they are."""
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / np.iinfo(image.dtype).max
    return image.astype(np.float32, copy=False)


def standardize(image: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance per image and channel."""
    mean = image.mean(axis=(0, 1), keepdims=True)
    return (image - mean) / np.maximum(image.std(axis=(0, 1), keepdims=True), 1e-6)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HWC (or HW) image -> CHW float32 tensor."""
    array = image.astype(np.float32, copy=False)
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class SegmentationArrayDataset(Dataset[dict[str, torch.Tensor]]):
    """Images (H, W, C) and masks (H, W) in memory; yields ``{"image", "mask", "index"}``.

    Images are scaled to float32 in [0, 1], then the transform is applied jointly to image and
    mask, then ``normalize`` (default: standardize each image); masks stay integer labels
    (albumentations uses nearest interpolation for them) and come out as int64.

    ``image_scale`` < 1 resamples each image to the working resolution (area interpolation)
    and leaves its mask at the image's own size, for scoring resampled-back predictions there;
    the transform then sees the image alone (evaluation transforms change no geometry).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        transform: A.Compose | None = None,
        normalize: Callable[[np.ndarray], np.ndarray] = standardize,
        length: int | None = None,
        image_scale: float = 1.0,
    ) -> None:
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images = images
        self.masks = masks
        self.transform = transform
        self.normalize = normalize
        self.length = len(images) if length is None else length
        self.image_scale = image_scale

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index %= len(self.images)
        image, mask = self.images[index], self.masks[index]
        image = as_unit_float(resample_image(image, self.image_scale))
        if self.transform is not None and self.image_scale != 1:
            image = self.transform(image=image)["image"]
        elif self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": image_to_tensor(self.normalize(image)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64)),
            "index": torch.tensor(index),
        }
