"""Intensity normalization of images already scaled to [0, 1] (see ``as_unit_float``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from unet_lab.arguments import InvalidArgumentError, check_choice
from unet_lab.data.dataset import as_unit_float, standardize

log = logging.getLogger(__name__)
MODES = ("image", "dataset", "fixed", "none")


class Normalizer:
    """``image``: zero mean, unit variance per image and channel (no statistics needed);
    ``dataset``: per channel with the mean and std of the training images (computed once, by
    :meth:`fit`); ``fixed``: with the given ``mean`` and ``std`` (on the [0, 1] scale);
    ``none``: the [0, 1] values as they are."""

    def __init__(
        self,
        mode: str = "image",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.mode = check_choice("normalization", mode, MODES)
        if mode == "fixed" and (mean is None or std is None):
            raise InvalidArgumentError("mean", mean, "per-channel means and stds with 'fixed'")
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def needs_fit(self) -> bool:
        return self.mode == "dataset" and self.mean is None

    def fit(self, images: Sequence[np.ndarray]) -> None:
        """Per-channel mean and std over every pixel of ``images`` (the training split)."""
        channels = images[0].shape[-1]
        total, squares, count = np.zeros(channels), np.zeros(channels), 0
        for image in images:
            pixels = as_unit_float(image).reshape(-1, channels).astype(np.float64)
            total += pixels.sum(axis=0)
            squares += (pixels**2).sum(axis=0)
            count += pixels.shape[0]
        mean = total / count
        self.mean = mean.astype(np.float32)
        self.std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12)).astype(np.float32)
        log.info("dataset normalization: mean %s, std %s", self.mean.round(4), self.std.round(4))

    def state_dict(self) -> dict[str, Any]:
        """Mode and statistics as plain lists: stored in checkpoints, so prediction normalizes
        new images exactly as training did (:meth:`from_state_dict`)."""
        return {
            "mode": self.mode,
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Normalizer:
        normalizer = cls("none")
        normalizer.mode = check_choice("normalization", state["mode"], MODES)
        for name in ("mean", "std"):
            value = state.get(name)
            setattr(normalizer, name, None if value is None else np.asarray(value, np.float32))
        return normalizer

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.mode == "none":
            return image
        if self.mode == "image":
            return standardize(image)
        if self.mean is None or self.std is None:
            raise RuntimeError("dataset normalization used before fit()")
        return (image - self.mean) / np.maximum(self.std, 1e-6)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_on_device": {}}  # loader workers get no device copies

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """What calling it does to each image, for a batch ``(N, C, H, W)`` on any device (the
        statistics are copied there once)."""
        if self.mode == "none":
            return images
        if self.mode == "image":
            mean = images.mean(dim=(2, 3), keepdim=True)
            return (images - mean) / images.std(dim=(2, 3), keepdim=True, correction=0).clamp_min(
                1e-6
            )
        if self.mean is None or self.std is None:
            raise RuntimeError("dataset normalization used before fit()")
        stats = self._on_device.get(images.device)
        if stats is None:
            shape = (1, -1, 1, 1)
            stats = (
                torch.as_tensor(self.mean, device=images.device).view(shape),
                torch.as_tensor(np.maximum(self.std, 1e-6), device=images.device).view(shape),
            )
            self._on_device[images.device] = stats
        return (images - stats[0]) / stats[1]
