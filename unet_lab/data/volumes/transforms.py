"""The 3D transforms' base (a protocol, a random-application base class, argument checks) and
the spatial transforms: flips, in-plane quarter turns, affine (scale, rotation), elastic. See
:mod:`unet_lab.data.volumes.augmentation` for how they compose."""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy import ndimage

from unet_lab.arguments import InvalidArgumentError, check_choice, check_float, check_int

Pair = tuple[np.ndarray, np.ndarray]


@runtime_checkable
class VolumeTransform(Protocol):
    """What a pipeline step is: ``(image (C, D, H, W), label (D, H, W), rng) -> (image,
    label)``, drawing its randomness from ``rng`` only."""

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        """The transformed image and label (new arrays; the inputs are left as they are)."""
        ...


def check_range(
    name: str, value: Any, low: float | None = None, high: float | None = None
) -> tuple[float, float]:
    """``value`` as a ``(low, high)`` pair of numbers in ``low..high`` with the first not above
    the second, else :class:`InvalidArgumentError` naming ``name``."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
        raise InvalidArgumentError(name, value, "a [low, high] pair of numbers")
    first = check_float(f"{name}[0]", value[0], low, high)
    second = check_float(f"{name}[1]", value[1], low, high)
    if first > second:
        raise InvalidArgumentError(name, value, "a [low, high] pair with low <= high")
    return first, second


def check_patch(image: np.ndarray, label: np.ndarray) -> None:
    if image.ndim != 4 or label.ndim != 3 or image.shape[1:] != label.shape:
        raise ValueError(
            f"a volume patch is an image (C, D, H, W) and a label (D, H, W), got image "
            f"{image.shape} and label {label.shape}"
        )


def contiguous_pair(image: np.ndarray, label: np.ndarray) -> Pair:
    """The image as contiguous float32 and the label contiguous in its dtype (the same arrays
    when they already are)."""
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label)


def draw_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def draw_around_one(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A factor from ``bounds`` as nnU-Net draws contrast and gamma: when the range spans 1,
    half the draws fall below 1 and half above, whatever the range's sizes on either side (so
    ``[0.7, 1.5]`` weakens as often as it strengthens)."""
    low, high = bounds
    if low < 1.0 < high:
        return draw_uniform(rng, (low, 1.0) if rng.random() < 0.5 else (1.0, high))
    return draw_uniform(rng, bounds)


class RandomVolumeTransform(ABC):
    """A transform applied with probability ``p`` (one draw of ``rng`` decides, also when it is
    0 or 1, so the draws that follow do not depend on ``p``). Subclasses implement
    :meth:`apply`; their constructor arguments are kept as attributes of the same names."""

    def __init__(self, p: float) -> None:
        self.p = check_float("p", p, 0.0, 1.0)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        check_patch(image, label)
        if rng.random() < self.p:
            image, label = self.apply(image, label, rng)
        return contiguous_pair(image, label)

    @abstractmethod
    def apply(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        """The transform itself, once it has been decided to apply it."""

    def __repr__(self) -> str:
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{type(self).__name__}({args})"


# --- spatial ---------------------------------------------------------------------------------


class RandomFlip3d(RandomVolumeTransform):
    """Mirrors image and label along each of ``axes`` (0 = D, 1 = H, 2 = W of the label),
    each axis independently with probability ``p``."""

    def __init__(self, axes: Sequence[int] = (0, 1, 2), p: float = 0.5) -> None:
        super().__init__(p)
        expected = "a list of distinct axes among 0 (D), 1 (H) and 2 (W)"
        if isinstance(axes, str | bytes) or not isinstance(axes, Sequence):
            raise InvalidArgumentError("axes", axes, expected)
        try:
            self.axes = tuple(check_int("axes", a, 0, 2) for a in axes)
        except InvalidArgumentError:
            raise InvalidArgumentError("axes", list(axes), expected) from None
        if len(set(self.axes)) != len(self.axes):
            raise InvalidArgumentError("axes", list(axes), expected)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        check_patch(image, label)
        return contiguous_pair(*self.apply(image, label, rng))  # p is per axis: no overall draw

    def apply(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        draws = rng.random(len(self.axes))
        flipped = tuple(a for a, draw in zip(self.axes, draws, strict=True) if draw < self.p)
        if not flipped:
            return image, label
        return np.flip(image, tuple(a + 1 for a in flipped)), np.flip(label, flipped)


class RandomRotate90InPlane(RandomVolumeTransform):
    """Rotates image and label by 90, 180 or 270 degrees (equally likely) in the (H, W) plane,
    with probability ``p``. Only square patches (H == W) can turn without changing shape:
    other patches are left as they are (the draws are made all the same)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def apply(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        k = int(rng.integers(1, 4))
        if label.shape[1] != label.shape[2]:
            return image, label
        return np.rot90(image, k, axes=(2, 3)), np.rot90(label, k, axes=(1, 2))


def _rotation(axis: int, degrees: float) -> np.ndarray:
    """The rotation by ``degrees`` about ``axis`` (in the plane of the two other axes)."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = cos, -sin, sin, cos
    return matrix


class RandomAffine3d(RandomVolumeTransform):
    """Scales and rotates image and label about the patch centre, with probability ``p``;
    the output has the input's shape.

    - ``scale``: the zoom factor (above 1 enlarges the content), one for all axes, or for H and W
      only with ``scale_axes="in_plane"`` (thick slices keep their slice spacing);
    - ``rotate_deg``: the rotation in the (H, W) plane, in degrees;
    - ``rotate_out_of_plane_deg``: rotations in the (D, H) and (D, W) planes, each drawn from
      this range; ``[0, 0]`` (the default) keeps slices in-plane, which thick-slice data needs.

    Resampling is ``scipy.ndimage.affine_transform``: the image with ``image_order`` (1 linear
    or 3 cubic), the label with order 0 (its values stay exact). What comes in from outside the
    patch is ``image_fill`` (0, the mean of z-scored images) and ``label_fill`` (0, background).
    """

    def __init__(
        self,
        scale: Sequence[float] = (0.85, 1.25),
        rotate_deg: Sequence[float] = (-15.0, 15.0),
        rotate_out_of_plane_deg: Sequence[float] = (0.0, 0.0),
        scale_axes: str = "all",
        image_order: int = 1,
        image_fill: float = 0.0,
        label_fill: int = 0,
        p: float = 0.2,
    ) -> None:
        super().__init__(p)
        self.scale = check_range("scale", scale, 0.1, 10.0)
        self.rotate_deg = check_range("rotate_deg", rotate_deg, -180.0, 180.0)
        self.rotate_out_of_plane_deg = check_range(
            "rotate_out_of_plane_deg", rotate_out_of_plane_deg, -180.0, 180.0
        )
        self.scale_axes = check_choice("scale_axes", scale_axes, ("all", "in_plane"))
        self.image_order = check_int("image_order", image_order, 1, 3)
        if self.image_order == 2:
            raise InvalidArgumentError("image_order", image_order, "1 (linear) or 3 (cubic)")
        self.image_fill = check_float("image_fill", image_fill)
        self.label_fill = check_int("label_fill", label_fill)

    def apply(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        zoom = draw_uniform(rng, self.scale)
        rotation = (
            _rotation(0, draw_uniform(rng, self.rotate_deg))
            @ _rotation(1, draw_uniform(rng, self.rotate_out_of_plane_deg))
            @ _rotation(2, draw_uniform(rng, self.rotate_out_of_plane_deg))
        )
        zooms = np.array([1.0 if self.scale_axes == "in_plane" else zoom, zoom, zoom])
        # affine_transform maps output coordinates to input ones: undo the rotation and zoom.
        matrix = np.diag(1.0 / zooms) @ rotation.T
        centre = (np.array(label.shape, dtype=float) - 1.0) / 2.0
        offset = centre - matrix @ centre
        out_image = np.empty(image.shape, dtype=np.float32)
        for channel in range(image.shape[0]):
            ndimage.affine_transform(
                image[channel].astype(np.float32, copy=False),
                matrix,
                offset,
                output=out_image[channel],
                order=self.image_order,
                mode="constant",
                cval=self.image_fill,
                prefilter=self.image_order > 1,
            )
        out_label = ndimage.affine_transform(
            label, matrix, offset, order=0, mode="constant", cval=self.label_fill
        )
        return out_image, out_label


def _upsample(coarse: np.ndarray, shape: tuple[int, ...], step: float) -> np.ndarray:
    """``coarse`` (node i at voxel i * step along each axis) linearly interpolated to every voxel
    of ``shape``, one axis at a time (several times faster than ``map_coordinates``)."""
    out = coarse.astype(np.float32)
    for axis, size in enumerate(shape):
        position = np.arange(size) / step
        below = np.floor(position).astype(int)
        weight = (
            (position - below)
            .astype(np.float32)
            .reshape([-1 if a == axis else 1 for a in range(3)])
        )
        out = (
            np.take(out, below, axis=axis) * (1 - weight)
            + np.take(out, below + 1, axis=axis) * weight
        )
    return out


class RandomElastic3d(RandomVolumeTransform):
    """A smooth random deformation of image and label, with probability ``p``.

    A displacement field of uniform noise in [-1, 1] on a coarse grid, one node every
    ``sigma / 2`` voxels, is smoothed with a Gaussian of ``sigma`` voxels (2 nodes; ``sigma``
    drawn from its range), scaled so that its largest displacement is ``alpha`` voxels (drawn
    from its range) and interpolated linearly to every voxel; working on the coarse grid keeps
    it cheap (about 0.1 s for a 64 x 128 x 128 patch). The image
    is resampled linearly, the label with nearest neighbours; what comes in from outside the
    patch is 0 for both (as :class:`RandomAffine3d`). The displacement is in voxels along every
    axis, so on thick-slice data keep ``alpha`` small.
    """

    def __init__(
        self,
        alpha: Sequence[float] = (2.0, 5.0),
        sigma: Sequence[float] = (8.0, 12.0),
        p: float = 0.1,
    ) -> None:
        super().__init__(p)
        self.alpha = check_range("alpha", alpha, 0.0)
        self.sigma = check_range("sigma", sigma, 1.0)

    def apply(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Pair:
        alpha, sigma = draw_uniform(rng, self.alpha), draw_uniform(rng, self.sigma)
        shape = np.array(label.shape)
        step = max(1.0, sigma / 2.0)
        coarse_shape = tuple(int(n) for n in np.ceil((shape - 1) / step).astype(int) + 2)
        noise = rng.uniform(-1.0, 1.0, (3, *coarse_shape))
        smooth = np.stack([ndimage.gaussian_filter(n, sigma / step) for n in noise])
        largest = float(np.abs(smooth).max())
        if largest == 0.0 or alpha == 0.0:
            return image, label
        smooth *= alpha / largest
        voxels = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
        coords = np.stack(
            [voxels[axis] + _upsample(smooth[axis], label.shape, step) for axis in range(3)]
        )
        out_image = np.empty(image.shape, dtype=np.float32)
        for channel in range(image.shape[0]):
            ndimage.map_coordinates(
                image[channel].astype(np.float32, copy=False),
                coords,
                output=out_image[channel],
                order=1,
                mode="constant",
                cval=0.0,
            )
        out_label = ndimage.map_coordinates(label, coords, order=0, mode="constant", cval=0)
        return out_image, out_label


# --- intensity (image only) ------------------------------------------------------------------
