"""Augmentation of 3D training patches, in numpy and scipy.

A patch is an image ``(C, D, H, W)`` (float32, already normalized) and a label ``(D, H, W)``
(integers); axis D is the slice axis (the coarse one in thick-slice data), H and W are in-plane.
Each transform is a class with plain typed constructor arguments, called as
``transform(image, label, rng) -> (image, label)`` with the pipeline's ``np.random.Generator``:
spatial transforms move image and label together (the label with nearest neighbours, so its
values stay exact), intensity transforms change the image only. Transforms never change the
arrays they are given, and return contiguous arrays: the image float32, the label in its dtype.

A pipeline is configured as ``{name: transform}``, like the 2D one
(:func:`unet_lab.data.augmentation.compose`), so each transform can be changed or switched off
from the command line (``augmentation.train.transforms.flip.p=1`` or
``augmentation.train.transforms.flip=null``); transforms run in the mapping's order.
Ranges are ``[low, high]`` pairs (YAML lists), drawn uniformly unless a class says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from unet_lab.arguments import check_int
from unet_lab.data.volumes.generators import generator_from_state, generator_state
from unet_lab.data.volumes.intensity import (
    GaussianBlur3d,
    GaussianNoise,
    RandomBrightness,
    RandomContrast,
    RandomGamma,
)
from unet_lab.data.volumes.transforms import (
    Pair,
    RandomAffine3d,
    RandomElastic3d,
    RandomFlip3d,
    RandomRotate90InPlane,
    RandomVolumeTransform,
    VolumeTransform,
    check_patch,
    check_range,
    contiguous_pair,
)

__all__ = [
    "GaussianBlur3d",
    "GaussianNoise",
    "RandomAffine3d",
    "RandomBrightness",
    "RandomContrast",
    "RandomElastic3d",
    "RandomFlip3d",
    "RandomGamma",
    "RandomRotate90InPlane",
    "RandomVolumeTransform",
    "VolumeAugmentation",
    "VolumeTransform",
    "check_range",
    "compose3d",
]


_STREAM = 0x3D  # tells the augmentation's stream apart from others seeded alike


def _generator(seed: int) -> np.random.Generator:
    """A PCG64 generator from ``seed``, on a stream of its own: the patch sampler and the data
    are seeded with the same run or worker seed, and must not draw the same numbers."""
    return np.random.default_rng([seed, _STREAM])


class VolumeAugmentation:
    """The non-null transforms of a ``{name: transform}`` mapping, applied in order to an image
    ``(C, D, H, W)`` and its label ``(D, H, W)``, all drawing from the pipeline's own
    ``np.random.Generator`` (PCG64) seeded with ``seed`` (None: a seed drawn from OS entropy,
    kept as ``seed``). The generator's stream is its own: other generators given the same seed
    (the patch sampler's, the synthetic data's) draw other numbers."""

    def __init__(
        self, transforms: Mapping[str, VolumeTransform] | None = None, seed: int | None = None
    ) -> None:
        self.transforms: dict[str, VolumeTransform] = dict(transforms or {})
        if seed is None:
            seed = int(np.random.SeedSequence().entropy) % 2**63  # type: ignore[arg-type]
        self.seed = check_int("seed", seed, 0)
        self.rng = _generator(self.seed)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Pair:
        """The augmented image (contiguous float32) and label (contiguous, in its dtype); with no
        transforms, the given arrays (the same objects when already contiguous float32)."""
        check_patch(image, label)
        for transform in self.transforms.values():
            image, label = transform(image, label, self.rng)
        return contiguous_pair(image, label)

    def __len__(self) -> int:
        return len(self.transforms)

    def reseed(self, worker_seed: int) -> None:
        """A fresh generator seeded with ``worker_seed``: each DataLoader worker holds a copy of
        the pipeline, and gives it its own seed so workers do not repeat each other."""
        self.rng = _generator(check_int("worker_seed", worker_seed, 0))

    def set_random_seed(self, seed: int) -> None:
        """:meth:`reseed`, under the name albumentations pipelines have (which
        :func:`unet_lab.data.datamodule.seed_worker` calls)."""
        self.reseed(seed)

    def state_dict(self) -> dict[str, Any]:
        """The generator's state as plain values, for checkpoints."""
        return generator_state(self.rng)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores what :meth:`state_dict` returned, so the next draws are the ones that
        followed it."""
        self.rng = generator_from_state(state)

    def __repr__(self) -> str:
        if not self.transforms:
            return f"VolumeAugmentation(seed={self.seed}, transforms={{}})"
        steps = "".join(f"\n  {name}: {step!r}," for name, step in self.transforms.items())
        return f"VolumeAugmentation(seed={self.seed}, transforms={{{steps}\n}})"


def compose3d(
    transforms: Mapping[str, VolumeTransform | None] | None = None, seed: int | None = None
) -> VolumeAugmentation:
    """The pipeline of the transforms that are not None, in the mapping's order, seeded with
    ``seed`` (the trainer passes the run's seed; None draws one)."""
    steps: dict[str, VolumeTransform] = {}
    for name, step in (transforms or {}).items():
        if step is None:
            continue
        if not isinstance(step, VolumeTransform):
            raise TypeError(f"augmentation transform {name!r} is not a volume transform")
        steps[str(name)] = step
    return VolumeAugmentation(steps, seed=seed)
