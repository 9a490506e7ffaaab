"""Albumentations pipelines built from a mapping of named transforms.

A pipeline is configured as ``{name: transform}`` so each transform can be changed or switched
off from the command line (``augmentation.train.transforms.hflip.p=1`` or
``augmentation.train.transforms.hflip=null``); transforms run in the mapping's order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import albumentations as A


def compose(
    transforms: Mapping[str, A.BasicTransform | None] | None = None, seed: int | None = None
) -> A.Compose:
    """``A.Compose`` of the transforms that are not None, applied jointly to image and mask.
    ``seed`` seeds its random draws (albumentations draws from fresh OS entropy otherwise, so
    the same run seed would give other augmentations each time)."""
    steps = [t for t in (transforms or {}).values() if t is not None]
    for name, step in (transforms or {}).items():
        if step is not None and not isinstance(step, A.BasicTransform | A.BaseCompose):
            raise TypeError(f"augmentation transform {name!r} is not an albumentations transform")
    return A.Compose(steps, seed=seed)


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
