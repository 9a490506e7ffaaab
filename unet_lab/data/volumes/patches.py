"""Training patches from volumes: random boxes of ``patch_size`` voxels, a share of them centred
on a voxel of a randomly chosen foreground class (nnU-Net's foreground oversampling), read from
arrays that may be memory-mapped (only the patch is read from disk)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from unet_lab.data.volumes.generators import generator_from_state, generator_state

# Voxel positions kept per class and case to centre foreground patches on (nnU-Net keeps 10k).
MAX_LOCATIONS = 10_000


@dataclass
class VolumeCase:
    """One preprocessed case.

    Attributes:
        name: the case's name (file stem).
        image: ``(C, D, H, W)`` float32, normalized; may be a memory map.
        label: ``(D, H, W)`` integer classes; may be a memory map.
        spacing: voxel size along D, H, W in mm.
        locations: class -> ``(n, 3)`` voxel positions of that class (foreground classes only).
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    locations: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.label.shape)  # type: ignore[return-value]


def busiest_slice(labels: np.ndarray, axis: int = 0) -> int:
    """The index along ``axis`` of the slice of ``labels`` with the most foreground (class > 0):
    what pictures of a volume show."""
    others = tuple(a for a in range(labels.ndim) if a != axis)
    return int(np.argmax((np.asarray(labels) > 0).sum(axis=others)))


def class_locations(
    label: np.ndarray, num_classes: int, rng: np.random.Generator, most: int = MAX_LOCATIONS
) -> dict[int, np.ndarray]:
    """Up to ``most`` random voxel positions ``(n, 3)`` of each foreground class present."""
    found = {}
    for cls in range(1, num_classes):
        where = np.argwhere(label == cls)
        if len(where) > most:
            where = where[rng.choice(len(where), most, replace=False)]
        if len(where):
            found[cls] = where.astype(np.int32)
    return found


def patch_start(
    shape: Sequence[int],
    patch: Sequence[int],
    centre: Sequence[int] | None,
    rng: np.random.Generator,
) -> list[int]:
    """The first voxel of a patch along each axis: around ``centre`` (kept inside the volume
    where it fits), else uniformly at random. A negative start means the patch is larger than
    the volume along that axis: the volume is padded there, centred."""
    starts = []
    for axis, (size, length) in enumerate(zip(shape, patch, strict=True)):
        if length >= size:
            starts.append(-((length - size) // 2))
        elif centre is None:
            starts.append(int(rng.integers(0, size - length + 1)))
        else:
            starts.append(int(np.clip(centre[axis] - length // 2, 0, size - length)))
    return starts


def read_patch(array: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """``array[..., start:start + patch]`` over the last three axes, zero-padded where the box
    leaves the array (reads only the box from a memory map)."""
    spatial = array.shape[-3:]
    inside = tuple(
        slice(max(0, s), min(size, s + length))
        for s, length, size in zip(start, patch, spatial, strict=True)
    )
    index: tuple[Any, ...] = (Ellipsis, *inside)
    box = np.asarray(array[index])
    if box.shape[-3:] == tuple(patch):
        return np.ascontiguousarray(box)
    padding = [(0, 0)] * (array.ndim - 3) + [
        (max(0, -s), length - (min(size, s + length) - max(0, s)) - max(0, -s))
        for s, length, size in zip(start, patch, spatial, strict=True)
    ]
    return np.pad(box, padding)


class PatchDataset(Dataset[dict[str, torch.Tensor]]):
    """``length`` random training patches per epoch from ``cases``.

    Args:
        cases: the training cases.
        patch_size: ``(D, H, W)`` voxels.
        length: patches per epoch.
        foreground_oversample: share of patches centred on a voxel of a foreground class
            (drawn uniformly among the classes the case holds).
        transform: ``transform(image, label) -> (image, label)`` on each patch (3D augmentation).
        seed: seeds the draws; DataLoader workers reseed through :meth:`reseed`.

    Yields ``{"image": (C, D, H, W) float32, "mask": (D, H, W) int64, "index"}``.
    """

    def __init__(
        self,
        cases: Sequence[VolumeCase],
        patch_size: Sequence[int],
        length: int,
        foreground_oversample: float = 0.33,
        transform: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        seed: int = 0,
    ) -> None:
        self.cases = list(cases)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.length = length
        self.foreground_oversample = foreground_oversample
        self.transform = transform
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        """A worker's own stream of draws (and of its copy of the augmentation)."""
        self.rng = np.random.default_rng(seed)
        reseed = getattr(self.transform, "reseed", None)
        if reseed is not None:
            reseed(seed)

    def state_dict(self) -> dict[str, Any]:
        """The state of the patch draws, as plain values for checkpoints (the augmentation
        keeps its own)."""
        return generator_state(self.rng)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continues the draws from what :meth:`state_dict` returned."""
        self.rng = generator_from_state(state)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        case = self.cases[int(self.rng.integers(len(self.cases)))]
        centre = None
        if case.locations and self.rng.random() < self.foreground_oversample:
            cls = list(case.locations)[int(self.rng.integers(len(case.locations)))]
            where = case.locations[cls]
            centre = where[int(self.rng.integers(len(where)))]
        start = patch_start(case.shape, self.patch_size, centre, self.rng)
        image = read_patch(case.image, start, self.patch_size).astype(np.float32, copy=False)
        label = read_patch(case.label, start, self.patch_size)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)),
            "index": torch.tensor(index),
        }


class WholeVolumeDataset(Dataset[dict[str, torch.Tensor]]):
    """Whole cases for validation and test: ``{"image", "mask", "spacing", "index"}``."""

    def __init__(self, cases: Sequence[VolumeCase]) -> None:
        self.cases = list(cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        case = self.cases[index]
        return {
            "image": torch.from_numpy(np.array(case.image, dtype=np.float32)),
            "mask": torch.from_numpy(np.array(case.label).astype(np.int64)),
            "spacing": torch.tensor(case.spacing, dtype=torch.float64),
            "index": torch.tensor(index),
        }
