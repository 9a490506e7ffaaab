"""Intensity transforms of 3D patches: brightness, contrast, gamma, noise, blur (the image
only; the label comes back unchanged)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from unet_lab.data.volumes.transforms import (
    Pair,
    RandomVolumeTransform,
    check_range,
    draw_around_one,
    draw_uniform,
)


class RandomBrightness(RandomVolumeTransform):
    """Multiplies each channel of the image by a factor from ``multiplier`` (drawn per channel,
    half below and half above 1 as :func:`draw_around_one`), with probability ``p``."""

    def __init__(self, multiplier: Sequence[float] = (0.75, 1.25), p: float = 0.15) -> None:
        super().__init__(p)
        self.multiplier = check_range("multiplier", multiplier, 0.0)

    def apply(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        factors = [draw_around_one(rng, self.multiplier) for _ in range(image.shape[0])]
        return image * np.array(factors, dtype=np.float32)[:, None, None, None], label


class RandomContrast(RandomVolumeTransform):
    """Scales each channel of the image about its mean by a factor from ``factor`` (drawn per
    channel, half below and half above 1), then clips it to the channel's former minimum and
    maximum (nnU-Net's contrast augmentation with ``preserve_range``), with probability ``p``."""

    def __init__(self, factor: Sequence[float] = (0.75, 1.25), p: float = 0.15) -> None:
        super().__init__(p)
        self.factor = check_range("factor", factor, 0.0)

    def apply(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        out = np.empty(image.shape, dtype=np.float32)
        for channel, values in enumerate(image):
            factor = draw_around_one(rng, self.factor)
            mean = values.mean(dtype=np.float64)
            changed = (values - mean) * factor + mean
            np.clip(changed, values.min(), values.max(), out=out[channel], casting="unsafe")
        return out, label


class RandomGamma(RandomVolumeTransform):
    """Gamma correction of each channel of the image, with probability ``p``: the channel is
    rescaled to [0, 1] from its minimum and maximum, raised to a power from ``gamma`` (drawn
    per channel, half below and half above 1) and rescaled back to its range. A constant
    channel is left as it is."""

    def __init__(self, gamma: Sequence[float] = (0.7, 1.5), p: float = 0.3) -> None:
        super().__init__(p)
        self.gamma = check_range("gamma", gamma, 0.01, 100.0)

    def apply(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        out = np.array(image, dtype=np.float32)
        for values in out:
            gamma = draw_around_one(rng, self.gamma)
            low, high = float(values.min()), float(values.max())
            if high > low:
                unit = (values - low) / (high - low)
                values[...] = np.power(unit, gamma) * (high - low) + low
        return out, label


class GaussianNoise(RandomVolumeTransform):
    """Adds Gaussian noise of standard deviation from ``std`` (one draw for all channels) to the
    image, with probability ``p``. The image is z-scored, so ``std`` is in its standard
    deviations."""

    def __init__(self, std: Sequence[float] = (0.0, 0.1), p: float = 0.1) -> None:
        super().__init__(p)
        self.std = check_range("std", std, 0.0)

    def apply(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        std = np.float32(draw_uniform(rng, self.std))
        return image + rng.standard_normal(image.shape, dtype=np.float32) * std, label


class GaussianBlur3d(RandomVolumeTransform):
    """Blurs each channel of the image with a 3D Gaussian of ``sigma`` voxels (drawn per
    channel), with probability ``p``."""

    def __init__(self, sigma: Sequence[float] = (0.5, 1.0), p: float = 0.2) -> None:
        super().__init__(p)
        self.sigma = check_range("sigma", sigma, 0.0)

    def apply(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        out = np.empty(image.shape, dtype=np.float32)
        for channel in range(image.shape[0]):
            sigma = draw_uniform(rng, self.sigma)
            ndimage.gaussian_filter(
                image[channel].astype(np.float32, copy=False), sigma, output=out[channel]
            )
        return out, label


# --- pipeline --------------------------------------------------------------------------------
