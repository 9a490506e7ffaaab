"""Splitting a labelled pool into train, val and test: fractions or k folds, drawn with a seed,
for images and volumes alike."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from unet_lab.arguments import check_int
from unet_lab.data.files import DataError

SPLITS = ("train", "val", "test")
Item = TypeVar("Item")


def split_pool(
    pool: Sequence[Item],
    given: dict[str, list[Item]],
    val_fraction: float,
    test_fraction: float,
    folds: int | None,
    fold: int,
    seed: int,
    root: Path,
) -> dict[str, list[Item]]:
    """The splits of a data set: those ``given`` (its own ``val/``, ``test/`` folders), the
    rest drawn from ``pool`` in an order shuffled with ``seed``: ``test_fraction`` of it for
    test, then fold ``fold`` of ``folds`` (or ``val_fraction``) for val, the rest for train.
    Each split is sorted; an empty train or val split raises :class:`DataError` naming
    ``root``."""
    order = np.random.default_rng(seed).permutation(len(pool))
    shuffled = [pool[i] for i in order]
    split = dict(given)
    if "test" not in split and test_fraction > 0:
        count = max(1, round(test_fraction * len(shuffled)))
        split["test"], shuffled = shuffled[:count], shuffled[count:]
    if "val" not in split:
        if folds is not None:
            split["val"] = shuffled[fold::folds]
            shuffled = [s for i, s in enumerate(shuffled) if i % folds != fold]
        else:
            count = max(1, round(val_fraction * len(shuffled)))
            split["val"], shuffled = shuffled[:count], shuffled[count:]
    split["train"] = shuffled
    for name in ("train", "val"):
        if not split[name]:
            raise DataError(f"{root}: no images left for the {name} split")
    return {name: sorted(split[name]) for name in SPLITS if name in split}  # type: ignore[type-var]


def split_sizes(train_size: int, val_size: int, test_size: int) -> dict[str, int]:
    """``{split: count}`` of generated data, each count checked (>= 1) under its own name."""
    return {
        "train": check_int("train_size", train_size, 1),
        "val": check_int("val_size", val_size, 1),
        "test": check_int("test_size", test_size, 1),
    }
