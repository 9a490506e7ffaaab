"""Preprocessing of a volume case, as nnU-Net does it, and its inverse for predictions:
reorientation to one canonical orientation, cropping to the non-zero region, resampling to the
target spacing (in-plane and out-of-plane separately for anisotropic voxels), and intensity
normalization per modality.

Arrays here are ``(C, D, H, W)`` in the canonical order: the file's voxel axes reoriented to
RAS+ and reversed, so that D runs inferior -> superior (axial slices for an axial scan), H
posterior -> anterior and W left -> right, and spacings are ``(d, h, w)`` millimetres.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from unet_lab.arguments import check_choice

NORMALIZATIONS = ("mr", "ct", "none")
# Spacings more different than this (coarsest / finest axis) count as anisotropic: the coarse
# axis is then resampled with nearest-neighbour interpolation, as nnU-Net does.
ANISOTROPY = 3.0
RAS = nib.orientations.axcodes2ornt(("R", "A", "S"))


@dataclass
class Intensity:
    """Dataset intensity statistics per channel, for ``ct`` normalization: foreground
    percentiles 0.5 and 99.5, mean and std of the clipped foreground."""

    low: list[float]
    high: list[float]
    mean: list[float]
    std: list[float]


def canonical(
    array: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """``array`` ``(I, J, K[, C])`` in the canonical ``(C, D, H, W)`` order; returns it, its
    spacing ``(d, h, w)`` and the orientation used (for :func:`uncanonical`)."""
    orientation = nib.orientations.io_orientation(affine)
    spatial = array if array.ndim == 4 else array[..., None]
    ras = nib.orientations.apply_orientation(spatial, orientation)  # (R, A, S, C)
    return (
        np.ascontiguousarray(ras.transpose(3, 2, 1, 0)),
        canonical_spacing(affine),
        orientation,
    )


def canonical_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """The voxel size ``(d, h, w)`` in mm along the canonical axes (S, A, R) of ``affine``."""
    orientation = nib.orientations.io_orientation(affine)
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    ras_spacing = zooms[orientation[:, 0].astype(int).argsort()]  # along R, A, S
    return tuple(float(s) for s in ras_spacing[::-1])  # type: ignore[return-value]


def uncanonical(array: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """The inverse of :func:`canonical` for a ``(D, H, W)`` array: back to the file's
    ``(I, J, K)`` voxel order."""
    to_file = nib.orientations.ornt_transform(RAS, orientation)
    return np.ascontiguousarray(
        nib.orientations.apply_orientation(array.transpose(2, 1, 0), to_file)
    )


def nonzero_box(image: np.ndarray) -> list[list[int]]:
    """``[[start, stop], ...]`` per spatial axis of the voxels non-zero in any channel of
    ``(C, D, H, W)`` (the whole volume when all are zero)."""
    mask = (image != 0).any(axis=0)
    if not mask.any():
        return [[0, n] for n in mask.shape]
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append([int(hit[0]), int(hit[-1]) + 1])
    return box


def target_spacing(spacings: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """nnU-Net's rule: the median spacing per axis; where that is anisotropic (coarsest axis
    more than :data:`ANISOTROPY` times the finest), the coarse axis takes the 10th percentile
    of its spacings instead (not below the other axes), so thick slices are not interpolated
    far beyond what most cases hold."""
    values = np.asarray(spacings, dtype=np.float64)
    target = np.median(values, axis=0)
    coarse = int(target.argmax())
    others = np.delete(target, coarse)
    if target[coarse] > ANISOTROPY * others.min():
        target[coarse] = max(float(np.percentile(values[:, coarse], 10)), float(others.max()))
    return tuple(round(float(t), 6) for t in target)  # type: ignore[return-value]


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, ...]:
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))


def resample(
    array: np.ndarray, spacing: Sequence[float], target: Sequence[float], is_label: bool
) -> np.ndarray:
    """``(C, D, H, W)`` (or labels ``(D, H, W)``) resampled from ``spacing`` to ``target``.
    Images: cubic in-plane; along an anisotropic coarse axis, nearest (nnU-Net's rule), else
    cubic too. Labels: nearest."""
    channels = array if array.ndim == 4 else array[None]
    new_shape = resampled_shape(channels.shape[1:], spacing, target)
    if tuple(channels.shape[1:]) == new_shape:
        return array
    factors = [n / o for n, o in zip(new_shape, channels.shape[1:], strict=True)]
    coarse = int(np.argmax(spacing))
    anisotropic = max(spacing) > ANISOTROPY * min(spacing)
    out = []
    for channel in channels:
        if is_label:
            resampled = ndimage.zoom(channel, factors, order=0, mode="nearest", grid_mode=True)
        else:
            first = [1.0 if (anisotropic and a == coarse) else f for a, f in enumerate(factors)]
            resampled = ndimage.zoom(
                channel.astype(np.float32), first, order=3, mode="nearest", grid_mode=True
            )
            if anisotropic and factors[coarse] != 1.0:
                second = [factors[coarse] if a == coarse else 1.0 for a in range(3)]
                resampled = ndimage.zoom(resampled, second, order=0, mode="nearest", grid_mode=True)
        out.append(_fit(resampled, new_shape))
    result = np.stack(out)
    return result if array.ndim == 4 else result[0]


def _fit(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``array`` cropped or edge-padded to exactly ``shape`` (zoom may round a voxel off)."""
    array = array[tuple(slice(0, n) for n in shape)]
    padding = [(0, n - s) for n, s in zip(shape, array.shape, strict=True)]
    return np.pad(array, padding, mode="edge") if any(p for _, p in padding) else array


def normalize(image: np.ndarray, mode: str, intensity: Intensity | None = None) -> np.ndarray:
    """``(C, D, H, W)`` normalized per channel: ``mr`` z-score per volume; ``ct`` clipped to the
    data set's foreground percentiles and z-scored with its foreground statistics; ``none``."""
    check_choice("normalization", mode, NORMALIZATIONS)
    image = image.astype(np.float32, copy=True)
    for c, channel in enumerate(image):
        if mode == "mr":
            channel -= channel.mean()
            channel /= max(float(channel.std()), 1e-8)
        elif mode == "ct":
            assert intensity is not None
            np.clip(channel, intensity.low[c], intensity.high[c], out=channel)
            channel -= intensity.mean[c]
            channel /= max(intensity.std[c], 1e-8)
    return image


def foreground_intensity(samples: Sequence[np.ndarray]) -> Intensity:
    """:class:`Intensity` from foreground voxel samples, one ``(C, n)`` array per case."""
    values = np.concatenate(list(samples), axis=1)
    low = np.percentile(values, 0.5, axis=1)
    high = np.percentile(values, 99.5, axis=1)
    clipped = np.clip(values, low[:, None], high[:, None])
    return Intensity(
        low.tolist(), high.tolist(), clipped.mean(axis=1).tolist(), clipped.std(axis=1).tolist()
    )
