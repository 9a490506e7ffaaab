"""The embedded 3D data set: textured solids (class = solid kind) in noisy textured volumes with
anisotropic voxels, generated in memory, the same on every machine for the same seed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from unet_lab.arguments import check_float, check_int
from unet_lab.data.datamodule import data_seed
from unet_lab.data.splits import split_sizes
from unet_lab.data.volumes.datamodule import Transform, VolumeDataModule
from unet_lab.data.volumes.patches import VolumeCase, class_locations

SOLID_KINDS = ("ellipsoid", "box", "tube")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
# Attempts per wanted solid to find a place where it touches no other.
PLACEMENT_TRIES = 20


def render_solids(
    rng: np.random.Generator,
    shape: Sequence[int],
    spacing: Sequence[float],
    num_classes: int,
    max_objects: int,
    noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One volume ``(1, D, H, W)`` float32 (z-scored) and its labels ``(D, H, W)`` uint8.

    Solids are sized in millimetres, so with anisotropic ``spacing`` they span fewer voxels
    along the coarse axis; they never touch (a voxel of margin), and each kind is a class
    (``num_classes`` 2: any solid is foreground)."""
    grid = np.stack(
        np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing, strict=True)), indexing="ij")
    )
    extent = np.array(shape) * np.array(spacing)
    background = ndimage.gaussian_filter(rng.normal(size=shape), sigma=3) * 4
    image = background.astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    wanted, placed = int(rng.integers(1, max_objects + 1)), 0
    for _ in range(PLACEMENT_TRIES * wanted):
        if placed == wanted:
            break
        kind = int(rng.integers(len(SOLID_KINDS))) if num_classes > 2 else 0
        kind %= max(1, num_classes - 1)
        radius = rng.uniform(0.1, 0.22, size=3) * extent.min()
        centre = rng.uniform(radius + 1, extent - radius - 1)
        offset = (grid - centre[:, None, None, None]) / radius[:, None, None, None]
        if SOLID_KINDS[kind] == "ellipsoid":
            inside = (offset**2).sum(axis=0) <= 1
        elif SOLID_KINDS[kind] == "box":
            inside = (np.abs(offset) <= 0.8).all(axis=0)
        else:  # a tube along a random axis
            axis = int(rng.integers(3))
            across = [a for a in range(3) if a != axis]
            inside = ((offset[across] ** 2).sum(axis=0) <= 0.5) & (np.abs(offset[axis]) <= 1.4)
        if not inside.any() or (ndimage.binary_dilation(inside) & (labels > 0)).any():
            continue  # empty, or touching another solid: a half-hidden solid has no kind
        labels[inside] = 1 if num_classes == 2 else kind + 1
        placed += 1
        image[inside] += rng.choice([-1, 1]) * rng.uniform(1.5, 3.0)
    image += rng.normal(scale=noise * 10, size=shape).astype(np.float32)
    image = (image - image.mean()) / max(float(image.std()), 1e-6)
    return image[None].astype(np.float32), labels


class SyntheticVolumeDataModule(VolumeDataModule):
    """Generated volumes of textured solids (``data=synthetic3d``): the 3D counterpart of the
    embedded 2D default, to train a 3D U-Net in minutes on a CPU.

    Args:
        volume_shape: ``(D, H, W)`` voxels of every volume.
        spacing: voxel size along D, H, W in mm (anisotropic by default: thicker slices).
        num_classes: background + up to three solid kinds (ellipsoid, box, tube); 2: binary.
        train_size, val_size, test_size: volumes per split.
        max_objects: solids per volume at most.
        noise: voxel noise.
        seed: makes the data (None: drawn once, see :func:`data_seed`).
        patch_size, batch_size, samples_per_epoch, foreground_oversample, num_workers,
        train_transform, eval_transform: see :class:`VolumeDataModule`.
    """

    def __init__(
        self,
        volume_shape: Sequence[int] = (24, 48, 48),
        spacing: Sequence[float] = (2.0, 1.0, 1.0),
        num_classes: int = 4,
        train_size: int = 48,
        val_size: int = 8,
        test_size: int = 8,
        max_objects: int = 4,
        noise: float = 0.1,
        seed: int | None = 0,
        patch_size: Sequence[int] | int = (24, 48, 48),
        batch_size: int = 2,
        samples_per_epoch: int = 96,
        foreground_oversample: float = 0.33,
        num_workers: int | str = "auto",
        train_transform: Transform | None = None,
        eval_transform: object = None,
    ) -> None:
        drawn = data_seed(seed)
        super().__init__(
            patch_size,
            batch_size,
            samples_per_epoch,
            foreground_oversample,
            num_workers,
            train_transform,
            eval_transform,
            drawn,
        )
        self.volume_shape = tuple(check_int("volume_shape", int(s), 8) for s in volume_shape)
        self.spacing = tuple(check_float("spacing", float(s), 0.01) for s in spacing)
        self.num_classes = check_int("num_classes", num_classes, 2, len(SOLID_KINDS) + 1)
        self.split_sizes = split_sizes(train_size, val_size, test_size)
        self.max_objects = check_int("max_objects", max_objects, 1)
        self.noise = check_float("noise", noise, 0.0)
        self._cases: dict[str, list[VolumeCase]] = {}

    @property
    def class_names(self) -> list[str]:
        if self.num_classes == 2:
            return ["background", "solid"]
        return ["background", *SOLID_KINDS[: self.num_classes - 1]]

    @property
    def in_channels(self) -> int:
        return 1

    @property
    def voxel_spacing(self) -> tuple[float, float, float]:
        return self.spacing  # type: ignore[return-value]

    def has_split(self, split: str) -> bool:
        return split in self.split_sizes

    def working_sizes(self, split: str) -> list[tuple[int, ...]]:
        return [self.volume_shape] * self.split_sizes[split]  # without rendering them

    def cases(self, split: str) -> list[VolumeCase]:
        if split not in self._cases:
            self._cases[split] = [
                self._case(split, index) for index in range(self.split_sizes[split])
            ]
        return self._cases[split]

    def _case(self, split: str, index: int) -> VolumeCase:
        rng = np.random.default_rng([self.seed, SPLIT_IDS[split], index])
        image, labels = render_solids(
            rng, self.volume_shape, self.spacing, self.num_classes, self.max_objects, self.noise
        )
        locations = class_locations(labels, self.num_classes, rng)
        return VolumeCase(f"{split}{index:03d}", image, labels, self.spacing, locations)  # type: ignore[arg-type]
