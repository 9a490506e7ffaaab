"""The train augmentation of 2D images on whole batches, on the device that trains.

With ``augmentation.on_device=true`` the same YAML (albumentations transforms by name) runs
after each batch reached the training device instead of per sample in the loader workers, so a
GPU is not held back by a few CPU cores. Supported, with the probability and ranges of their
albumentations counterparts, drawn per sample from a generator on that device: horizontal and
vertical flips, 90-degree rotations, affine (scale per axis, translation, rotation; mirrored,
replicated or zero borders), brightness/contrast, gamma and Gaussian noise: what the ``light``
and ``medium`` presets use. Any other transform is refused with its config key.

Images arrive as float in [0, 1], as the loader makes them before its normalization (the data
module normalizes after augmenting); masks are integer label maps. Nothing reads a value back
to the host, so augmenting never makes the GPU wait.

Differences from the per-sample path, by design: the affine warp samples with
``grid_sample`` (bilinear images, nearest masks) where albumentations uses OpenCV, and its
mirrored border repeats the edge pixel (``BORDER_REFLECT``, albumentations' 4 does not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import albumentations as A
import cv2
import torch
import torch.nn.functional as F

from unet_lab.data.augmentation import stream_seed
from unet_lab.errors import ConfigError

# OpenCV border modes of albumentations' Affine, as grid_sample padding.
_PADDING = {cv2.BORDER_REFLECT_101: "reflection", cv2.BORDER_REFLECT: "reflection",
            cv2.BORDER_REPLICATE: "border", cv2.BORDER_CONSTANT: "zeros"}  # fmt: skip


class BatchTransform(Protocol):
    """One transform of whole batches: images ``(N, C, H, W)`` float, masks ``(N, H, W)``
    integer, in and out; random draws from ``generator`` (on the batch's device)."""

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def _uniform(
    low: float, high: float, count: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, device=device)


def _chosen(p: float, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Which samples of the batch a transform of probability ``p`` applies to, shaped to
    broadcast over ``image`` (N, 1, 1, 1)."""
    draw = torch.rand(image.shape[0], generator=generator, device=image.device)
    return (draw < p).view(-1, 1, 1, 1)


def _where(chosen: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` for the chosen samples, ``old`` for the others (masks: one dimension less)."""
    return torch.where(chosen if new.ndim == 4 else chosen[:, 0], new, old)


class Flip:
    """Mirrors a sample with probability ``p`` along ``dim`` (-1: left-right, -2: up-down)."""

    def __init__(self, dim: int, p: float) -> None:
        self.dim, self.p = dim, p

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = _chosen(self.p, image, generator)
        return (_where(chosen, image.flip(self.dim), image),
                _where(chosen, mask.flip(self.dim), mask))  # fmt: skip


class Rotate90:
    """With probability ``p``, turns a sample by k quarter turns, k drawn from 0-3 (as
    albumentations' ``RandomRotate90``). Square samples only: a batch keeps one shape."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if image.shape[-1] != image.shape[-2]:
            raise ConfigError(
                f"augmentation on_device: 90-degree rotations need square samples, got "
                f"{tuple(image.shape[-2:])} (set data.patch_size, or drop rotate90)"
            )
        chosen = _chosen(self.p, image, generator)
        turns = torch.randint(0, 4, (image.shape[0],), generator=generator, device=image.device)
        turns = torch.where(chosen.view(-1), turns, 0).view(-1, 1, 1, 1)
        out_image, out_mask = image, mask
        for k in (1, 2, 3):
            out_image = _where(turns == k, image.rot90(k, (-2, -1)), out_image)
            out_mask = _where(turns == k, mask.rot90(k, (-2, -1)), out_mask)
        return out_image, out_mask


class Affine:
    """With probability ``p``, scales (each axis by a factor drawn from its range), rotates
    (degrees) and translates (a fraction of the side, per axis) a sample about its centre;
    images bilinearly, masks with nearest neighbours; ``padding``: ``reflection``, ``border``
    or ``zeros`` (grid_sample's names)."""

    def __init__(
        self,
        scale_x: tuple[float, float],
        scale_y: tuple[float, float],
        translate_x: tuple[float, float],
        translate_y: tuple[float, float],
        rotate: tuple[float, float],
        padding: str,
        p: float,
    ) -> None:
        self.scale_x, self.scale_y = scale_x, scale_y
        self.translate_x, self.translate_y = translate_x, translate_y
        self.rotate, self.padding, self.p = rotate, padding, p

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        count, device = image.shape[0], image.device
        chosen = _chosen(self.p, image, generator)
        sx = _uniform(*self.scale_x, count, generator, device)
        sy = _uniform(*self.scale_y, count, generator, device)
        tx = _uniform(*self.translate_x, count, generator, device)
        ty = _uniform(*self.translate_y, count, generator, device)
        angle = _uniform(*self.rotate, count, generator, device) * (math.pi / 180)
        height, width = image.shape[-2:]
        # grid_sample's theta maps each output point to where it samples the input, in
        # coordinates of [-1, 1] across each side: the inverse of scale-then-rotate, after
        # undoing the translation (2 t: a fraction of the side is twice that in [-1, 1]).
        # Rotating in pixels of unequal sides: x and y are rescaled to pixels around it.
        cos, sin = torch.cos(angle), torch.sin(angle)
        aspect = width / height
        inverse = torch.stack(
            [
                torch.stack([cos / sx, sin / (sx * aspect)], -1),
                torch.stack([-sin * aspect / sy, cos / sy], -1),
            ],
            1,
        )  # (N, 2, 2): S^-1 R^-1 in normalized coordinates
        shift = torch.stack([2 * tx, 2 * ty], -1)[..., None]  # (N, 2, 1)
        theta = torch.cat([inverse, -inverse @ shift], -1)
        grid = F.affine_grid(theta, list(image.shape), align_corners=False)
        warped = F.grid_sample(
            image, grid, mode="bilinear", padding_mode=self.padding, align_corners=False
        )
        labels = F.grid_sample(
            mask[:, None].float(), grid, mode="nearest", padding_mode=self.padding,
            align_corners=False,
        )[:, 0].round().to(mask.dtype)  # fmt: skip
        return _where(chosen, warped, image), _where(chosen, labels, mask)


class BrightnessContrast:
    """With probability ``p``: ``image * (1 + c) + b``, c and b drawn from ``contrast`` and
    ``brightness`` (b in units of the [0, 1] range), clipped to [0, 1]."""

    def __init__(
        self, brightness: tuple[float, float], contrast: tuple[float, float], p: float
    ) -> None:
        self.brightness, self.contrast, self.p = brightness, contrast, p

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        count, device = image.shape[0], image.device
        chosen = _chosen(self.p, image, generator)
        alpha = 1 + _uniform(*self.contrast, count, generator, device).view(-1, 1, 1, 1)
        beta = _uniform(*self.brightness, count, generator, device).view(-1, 1, 1, 1)
        return _where(chosen, (image * alpha + beta).clamp(0, 1), image), mask


class Gamma:
    """With probability ``p``: ``image ** g``, g drawn from ``gamma`` (as a factor: 0.8-1.2
    for albumentations' ``gamma_limit=[80, 120]``)."""

    def __init__(self, gamma: tuple[float, float], p: float) -> None:
        self.gamma, self.p = gamma, p

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = _chosen(self.p, image, generator)
        gamma = _uniform(*self.gamma, image.shape[0], generator, image.device)
        return _where(chosen, image.pow(gamma.view(-1, 1, 1, 1)), image), mask


class GaussianNoise:
    """With probability ``p``: adds noise of a standard deviation and mean drawn per sample
    from ``std`` and ``mean`` (in units of the [0, 1] range), independent per pixel and
    channel, clipped to [0, 1]."""

    def __init__(self, std: tuple[float, float], mean: tuple[float, float], p: float) -> None:
        self.std, self.mean, self.p = std, mean, p

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        count, device = image.shape[0], image.device
        chosen = _chosen(self.p, image, generator)
        std = _uniform(*self.std, count, generator, device).view(-1, 1, 1, 1)
        mean = _uniform(*self.mean, count, generator, device).view(-1, 1, 1, 1)
        noise = torch.randn(image.shape, generator=generator, device=device, dtype=image.dtype)
        return _where(chosen, (image + mean + std * noise).clamp(0, 1), image), mask


def batch_transform(transform: A.BasicTransform, key: str) -> BatchTransform:
    """The batch counterpart of one albumentations transform of the config (``key`` names it
    in errors); a transform or an option without one is refused."""

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"{key}: {why}; augmentation.on_device=true runs flips, "
                           "RandomRotate90, Affine, RandomBrightnessContrast, RandomGamma and "
                           "GaussNoise (or set augmentation.on_device=false)")  # fmt: skip

    p = float(transform.p)
    if isinstance(transform, A.HorizontalFlip | A.VerticalFlip):
        return Flip(-1 if isinstance(transform, A.HorizontalFlip) else -2, p)
    if isinstance(transform, A.RandomRotate90):
        return Rotate90(p)
    if isinstance(transform, A.Affine):
        if transform.border_mode not in _PADDING:
            raise refuse(f"border_mode {transform.border_mode} has no batch counterpart")
        if transform.translate_px is not None or transform.fit_output or transform.keep_ratio:
            raise refuse("translate_px, fit_output and keep_ratio have no batch counterpart")
        if any(v != 0 for v in (*transform.shear["x"], *transform.shear["y"])):
            raise refuse("shear has no batch counterpart")
        translate = transform.translate_percent or {"x": (0.0, 0.0), "y": (0.0, 0.0)}
        return Affine(transform.scale["x"], transform.scale["y"], translate["x"],
                      translate["y"], transform.rotate, _PADDING[transform.border_mode],
                      p)  # fmt: skip
    if isinstance(transform, A.RandomBrightnessContrast):
        if not transform.brightness_by_max or transform.ensure_safe_range:
            raise refuse("brightness_by_max=false and ensure_safe_range have no batch counterpart")
        return BrightnessContrast(transform.brightness_limit, transform.contrast_limit, p)
    if isinstance(transform, A.RandomGamma):
        low, high = transform.gamma_limit
        return Gamma((low / 100, high / 100), p)
    if isinstance(transform, A.GaussNoise):
        if not transform.per_channel or transform.noise_scale_factor != 1:
            raise refuse("per_channel=false and noise_scale_factor have no batch counterpart")
        return GaussianNoise(transform.std_range, transform.mean_range, p)
    raise refuse(f"{type(transform).__name__} has no batch counterpart")


class BatchAugmentation:
    """Transforms applied in order to whole batches on their device.

    Args:
        transforms: the batch transforms (:func:`batch_transform` of each configured one).
        seed: seeds the draws; None: a seed drawn from torch's global generator.

    Call with images ``(N, C, H, W)`` float in [0, 1], masks ``(N, H, W)`` integer, the
    process's ``rank`` and the training ``epoch``; returns both augmented, with the same
    shapes, dtypes and device. Each (rank, epoch) draws from a generator of its own on the
    batch's device, seeded from ``(seed, rank, epoch)``: DDP ranks draw apart, and a run
    resumed at an epoch boundary draws what the unbroken run would, with no generator state
    in the checkpoint (under DDP only rank 0's would be there).
    """

    def __init__(self, transforms: Sequence[BatchTransform], seed: int | None = None) -> None:
        self.transforms = list(transforms)
        self.seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else int(seed)
        # By device: the (rank, epoch) being drawn and its generator.
        self._generators: dict[torch.device, tuple[tuple[int, int], torch.Generator]] = {}

    @classmethod
    def from_albumentations(
        cls, named: Mapping[str, A.BasicTransform | None], prefix: str, seed: int | None = None
    ) -> BatchAugmentation:
        """From the configured transforms by name (None: switched off); ``prefix`` is their
        config key (``augmentation.train.transforms``), for errors."""
        return cls(
            [batch_transform(t, f"{prefix}.{name}") for name, t in named.items() if t is not None],
            seed,
        )

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, rank: int = 0, epoch: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        drawing = self._generators.get(image.device)
        if drawing is None or drawing[0] != (rank, epoch):
            seed = stream_seed(self.seed, rank, epoch)
            drawing = ((rank, epoch), torch.Generator(image.device).manual_seed(seed))
            self._generators[image.device] = drawing
        generator = drawing[1]
        for transform in self.transforms:
            image, mask = transform(image, mask, generator)
        return image, mask
