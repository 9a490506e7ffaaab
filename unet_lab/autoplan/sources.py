"""The cases of a data config (``data=folder`` or ``data=volumes``) as the fingerprint reads
them: found by the data modules' own rules, read one at a time in the form the network sees
(images channels-first; volumes reoriented to RAS+ and cropped to their non-zero voxels)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from unet_lab.arguments import check_int
from unet_lab.autoplan.fingerprint import Fingerprint, Reader, fingerprint_cases
from unet_lab.data.folder import labelled_samples, read_sample
from unet_lab.data.labels import LabelMapping
from unet_lab.data.mask_classes import MaskClasses, label_files
from unet_lab.data.volumes.cases import labelled_cases, read_case
from unet_lab.data.volumes.folder import canonical_cropped
from unet_lab.errors import ConfigError

FOLDER = "unet_lab.data.FolderDataModule"
VOLUMES = "unet_lab.data.volumes.folder.VolumeFolderDataModule"


@dataclass
class Source:
    """A data set's labelled training pool, how to read a case, and all its files."""

    kind: str  # images | volumes
    root: Path
    cases: list[Any]
    names: list[str]
    read: Reader
    class_names: list[str]
    ignore_index: int | None
    files: list[Path]


def data_source(data: DictConfig) -> Source:
    """The :class:`Source` of a composed ``data`` config; a config of generated data (or of
    another module) is refused naming ``data``."""
    target = str(data.get("_target_", ""))
    if target not in (FOLDER, VOLUMES):
        raise ConfigError(
            f"autoplan plans for your own data: data=folder or data=volumes (data is {target})"
        )
    root = Path(str(data.root)).expanduser().resolve()
    num_classes = check_int("data.num_classes", data.num_classes, 2)
    names = list(data.get("class_names") or [])
    class_names = names or ["background", *(f"class{i}" for i in range(1, num_classes))]
    if len(class_names) != num_classes:
        raise ConfigError(
            f"data.class_names has {len(class_names)} names for {num_classes} classes"
        )
    pairs = None if data.get("pairs") is None else root / str(data.pairs)
    # Binary masks per class are packed into label maps: their values are the combinations.
    masks = MaskClasses(data.mask_classes, num_classes) if data.get("mask_classes") else None
    if masks is not None:
        class_names = masks.value_names
    if target == FOLDER:
        return _images(data, root, pairs, class_names, masks)
    return _volumes(data, root, pairs, class_names, masks)


def _images(
    data: DictConfig,
    root: Path,
    pairs: Path | None,
    class_names: list[str],
    masks: MaskClasses | None,
) -> Source:
    ignore = data.get("ignore_index")
    mapping = LabelMapping(len(class_names), data.get("mask_values"), data.get("palette"), ignore)
    pool, given = labelled_samples(
        root, pairs, data.get("mask_name"), data.get("image_pattern"), masks
    )

    def read(sample: Any) -> tuple[np.ndarray, np.ndarray, None]:
        image, labels = read_sample(sample, masks or mapping)
        return np.moveaxis(image, -1, 0), labels, None

    everything = [*pool, *(s for samples in given.values() for s in samples)]
    files = sorted(
        {f for _, images, mask in everything for f in (*images, *label_files(mask, masks))}
    )
    return Source("images", root, pool, [s[0] for s in pool], read, class_names, ignore, files)


def _volumes(
    data: DictConfig,
    root: Path,
    pairs: Path | None,
    class_names: list[str],
    masks: MaskClasses | None,
) -> Source:
    file_spacing = data.get("spacing")
    pool, given = labelled_cases(
        root, pairs, data.get("mask_name"), data.get("image_pattern"),
        bool(data.get("channel_suffix", False)), masks,
    )  # fmt: skip
    crop = bool(data.get("crop_nonzero", True))

    def read(case: Any) -> tuple[np.ndarray, np.ndarray, list[float]]:
        image, labels, volume = read_case(case, len(class_names), file_spacing, masks)
        channels, truth, spacing, *_ = canonical_cropped(image, labels, volume.affine, crop)
        return channels, truth.astype(np.int64), [float(s) for s in spacing]

    everything = [*pool, *(c for cases in given.values() for c in cases)]
    files = sorted({f for c in everything for f in (*c.images, *label_files(c.label, masks)) if f})
    return Source("volumes", root, pool, [c.name for c in pool], read, class_names, None, files)


def fingerprint_of(data: DictConfig) -> Fingerprint:
    """Reads the labelled training pool of ``data`` once and returns its fingerprint."""
    source = data_source(data)
    return fingerprint_cases(
        source.kind,
        source.root,
        source.cases,
        source.names,
        source.read,
        source.class_names,
        source.ignore_index,
        source.files,
    )
