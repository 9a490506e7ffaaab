"""Albumentations pipelines built from a mapping of named transforms.

A pipeline is configured as ``{name: transform}`` so each transform can be changed or switched
off from the command line (``augmentation.train.transforms.hflip.p=1`` or
``augmentation.train.transforms.hflip=null``); transforms run in the mapping's order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

import albumentations as A
import numpy as np


def compose(
    transforms: Mapping[str, A.BasicTransform | None] | None = None, seed: int | None = None
) -> A.Compose:
    """``A.Compose`` of the transforms that are not None, applied jointly to image and mask.
    ``seed`` seeds its random draws (:func:`seed_pipeline`; albumentations draws from fresh OS
    entropy otherwise, so the same run seed would give other augmentations each time)."""
    steps = [t for t in (transforms or {}).values() if t is not None]
    for name, step in (transforms or {}).items():
        if step is not None and not isinstance(step, A.BasicTransform | A.BaseCompose):
            raise TypeError(f"augmentation transform {name!r} is not an albumentations transform")
    pipeline = A.Compose(steps)
    if seed is not None:
        seed_pipeline(pipeline, seed)
    return pipeline


def stream_seed(*keys: int) -> int:
    """A 32-bit seed for the random stream that ``keys`` (seed, rank, epoch, ...) name:
    different keys give independent streams, the same keys the same stream again."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def seed_pipeline(pipeline: A.BaseCompose, seed: int) -> None:
    """Seeds ``pipeline`` and every transform in it with a random stream of its own, derived
    from ``seed``. Albumentations' ``set_random_seed`` (and ``A.Compose(seed=...)``) gives each
    transform the same seed, so their draws coincide: a horizontal and a vertical flip of equal
    probability were always applied together (never one alone), and one transform's strength
    followed another's."""
    parts = list(_parts(pipeline))
    streams = np.random.SeedSequence(seed % 2**64).spawn(len(parts))
    for part, stream in zip(parts, streams, strict=True):
        part_seed = int(stream.generate_state(1)[0])
        part.seed = part_seed
        part.random_generator = np.random.default_rng(part_seed)
        part.py_random = random.Random(part_seed)


def _parts(pipeline: A.BaseCompose) -> Iterator[Any]:
    yield pipeline
    for transform in pipeline.transforms:
        if isinstance(transform, A.BaseCompose):
            yield from _parts(transform)
        else:
            yield transform


def random_state(pipeline: A.BaseCompose) -> list[dict[str, Any]]:
    """The states of the random generators of a pipeline and of each of its transforms (plain
    values, for checkpoints), so a resumed run draws what the uninterrupted run would."""
    return [
        {"numpy": part.random_generator.bit_generator.state, "python": part.py_random.getstate()}
        for part in _parts(pipeline)
    ]


def set_random_state(pipeline: A.BaseCompose, states: list[dict[str, Any]]) -> None:
    """Restores what :func:`random_state` returned for the same pipeline."""
    parts = list(_parts(pipeline))
    if len(parts) != len(states):
        return  # another pipeline than the checkpoint's: keep its own seeding
    for part, state in zip(parts, states, strict=True):
        part.random_generator.bit_generator.state = state["numpy"]
        part.py_random.setstate(as_tuples(state["python"]))


def as_tuples(value: Any) -> Any:
    """``random.setstate`` wants the tuples that a checkpoint may have turned into lists."""
    return tuple(as_tuples(v) for v in value) if isinstance(value, list | tuple) else value
