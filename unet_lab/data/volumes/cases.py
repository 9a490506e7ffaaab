"""The files of a volume data set: which images and labels make a case (by folder layout, name
or list) and how a case is read, checked and its labels packed (binary masks per class)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unet_lab.data.files import DataError
from unet_lab.data.mask_classes import MaskClasses
from unet_lab.data.pairing import Case, cases_from_list, find_cases
from unet_lab.data.splits import SPLITS
from unet_lab.data.volumes.io import (
    VOLUME_SUFFIXES,
    Volume,
    check_pair,
    read_label_volume,
    read_volume,
)

# (image folder, label folder) layouts, in the order they are looked for.
LAYOUTS = (("imagesTr", "labelsTr"), ("images", "masks"))


def labelled_cases(
    root: Path,
    pairs: Path | None,
    mask_name: str | None,
    image_pattern: str | None,
    channel_suffix: bool,
    mask_classes: MaskClasses | None = None,
) -> tuple[list[Case], dict[str, list[Case]]]:
    """The labelled pool (``root/train``, the ``LAYOUTS`` folders or the ``pairs`` list) and
    the splits that folders give (``val``, ``test``) of a volume data set, found by name:
    nothing is read. With ``mask_classes`` in a folder per class, a case's label is its first
    class's file."""

    def found(folder: Path, images: str, labels: str) -> list[Case]:
        if mask_classes is not None:
            labels = mask_classes.label_folder(folder, labels)
        return find_cases(
            folder, images, labels, VOLUME_SUFFIXES, mask_name, image_pattern, channel_suffix
        )

    given: dict[str, list[Case]] = {}
    if pairs is not None:
        pool = cases_from_list(root, pairs, VOLUME_SUFFIXES)
    else:
        for split in SPLITS:
            if (root / split / "images").is_dir() and (root / split / "masks").is_dir():
                given[split] = found(root / split, "images", "masks")
        if given and "train" not in given:
            raise DataError(f"{root / 'train'}: folder not found next to {sorted(given)}")
        if given:
            pool = given.pop("train")
        else:
            layout = next(((i, m) for i, m in LAYOUTS if (root / i).is_dir()), None)
            if layout is None:
                raise DataError(
                    f"{root}: no imagesTr/ + labelsTr/, images/ + masks/ or train/ folders "
                    "(or give data.pairs)"
                )
            pool = found(root, *layout)
    unlabelled = [c for c in pool if c.label is None]
    if unlabelled:
        raise DataError(f"{unlabelled[0].images[0]}: listed without a label in {pairs}")
    return pool, given


def read_case(
    case: Case,
    num_classes: int,
    file_spacing: Sequence[float] | None,
    mask_classes: MaskClasses | None = None,
) -> tuple[np.ndarray, np.ndarray, Volume]:
    """Channels ``(I, J, K, C)`` and labels ``(I, J, K)`` of a case in file order, checked
    together, and the label's volume (its geometry)."""
    assert case.label is not None
    label = read_labels(case.label, num_classes, file_spacing, mask_classes)
    channels = []
    for path in case.images:
        volume = read_volume(path, file_spacing)
        check_pair(volume, label)
        channels.append(volume.array if volume.array.ndim == 4 else volume.array[..., None])
    return np.concatenate(channels, axis=-1), label.array, label


def read_labels(
    path: Path,
    num_classes: int,
    file_spacing: Sequence[float] | None,
    mask_classes: MaskClasses | None = None,
) -> Volume:
    """The label map ``(I, J, K)`` of a case: its label volume, or with ``mask_classes`` its
    binary mask volumes (a file per class from ``path``, the first class's, or ``path`` with a
    channel per class) packed bit by bit and checked to share one geometry."""
    if mask_classes is None:
        return read_label_volume(path, num_classes, file_spacing)
    files = mask_classes.files(path)
    volumes = [read_volume(file, file_spacing) for file in files]
    if len(files) == 1 and len(mask_classes.names) > 1:
        packed = mask_classes.pack_channels(volumes[0].array, path)
    else:
        for volume in volumes:
            check_pair(volumes[0], volume)
            if volume.channels != 1:
                raise DataError(f"{volume.path}: {volume.channels} channels; a class mask has one")
        packed = mask_classes.pack_masks([v.array for v in volumes], files)
    return Volume(packed, volumes[0].affine, path)
