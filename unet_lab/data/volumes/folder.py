"""``data=volumes``: a folder of volumes and label maps (NIfTI, NRRD, MHA, TIFF stacks),
preprocessed once into a cache and served as patches."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unet_lab.arguments import InvalidArgumentError, check_choice, check_float, check_int
from unet_lab.data.datamodule import data_seed
from unet_lab.data.files import DataError
from unet_lab.data.mask_classes import MaskClasses, label_files
from unet_lab.data.pairing import Case
from unet_lab.data.regions import Regions
from unet_lab.data.splits import split_pool
from unet_lab.data.volumes.cache import VolumeCache, cache_key
from unet_lab.data.volumes.cases import labelled_cases, read_case, read_labels
from unet_lab.data.volumes.datamodule import Transform, VolumeDataModule
from unet_lab.data.volumes.io import (
    Volume,
    read_affine,
)
from unet_lab.data.volumes.patches import VolumeCase, class_locations
from unet_lab.data.volumes.preprocessing import (
    NORMALIZATIONS,
    Intensity,
    canonical,
    canonical_spacing,
    foreground_intensity,
    nonzero_box,
    normalize,
    resample,
    target_spacing,
)

log = logging.getLogger(__name__)
# Foreground voxels sampled per case for the CT intensity statistics.
INTENSITY_SAMPLES = 10_000


class VolumeFolderDataModule(VolumeDataModule):
    """Volumes and label maps from ``root``, preprocessed once (cached) and sampled as patches.

    Layouts: ``root/imagesTr`` + ``root/labelsTr`` (the Medical Segmentation Decathlon's),
    ``root/images`` + ``root/masks``, or ``root/{train,val,test}/images|masks``; or a list
    (``pairs``: a CSV or the Decathlon's ``dataset.json``). Files pair by name (or ``mask_name``
    with ``image_pattern``); ``case_0000``, ``case_0001``, ... are the channels of ``case``
    (``channel_suffix``).

    Preprocessing (nnU-Net's): reorientation to RAS+, cropping to the non-zero region,
    resampling to ``target_spacing`` (default: the training cases' median, with nnU-Net's rule
    for anisotropic voxels), normalization per ``normalization``. The cases land in
    ``cache_dir/<root name>-<key>``, the key hashing the settings and every source file's path,
    size and modification time: reused while nothing changes, rebuilt when anything does.

    Args:
        root: the data folder.
        num_classes: classes including background; label values must be 0..num_classes-1.
        class_names: one per class (default ``background``, ``class1``, ...).
        normalization: ``mr`` (z-score per volume and channel), ``ct`` (clip to the training
            foreground's 0.5-99.5 percentiles, z-score with its mean and std) or ``none``.
        target_spacing: ``[d, h, w]`` mm to resample to (axes in the canonical order:
            inferior-superior, posterior-anterior, left-right); None: from the data.
        crop_nonzero: crop each case to the box of its non-zero image voxels.
        spacing: ``[x, y, z]`` mm of TIFF stacks (they hold no geometry).
        mask_name, image_pattern, pairs, channel_suffix: pairing beyond equal names
            (:mod:`unet_lab.data.pairing`).
        val_fraction, test_fraction, folds, fold, seed: the split, as for images.
        cache_dir: where preprocessed cases are kept.
        patch_size, batch_size, samples_per_epoch, foreground_oversample, num_workers,
        train_transform, eval_transform: see :class:`VolumeDataModule`.
        regions: overlapping classes as unions of label values (BraTS: ``{whole: [1, 2, 3],
            core: [2, 3], enhancing: [3]}``), one sigmoid output each
            (:class:`~unet_lab.data.regions.Regions`; with ``loss=regions``).
        mask_classes: overlapping classes given as one binary mask volume per class, their
            names in order: a folder per class in the label folder (``labelsTr/<name>/``, one
            file name per case in each), or one 4D label file per case with a channel per class
            (:mod:`~unet_lab.data.mask_classes`); ``num_classes`` is then the classes + 1,
            one sigmoid output each (with ``loss=regions``).
    """

    def __init__(
        self,
        root: str,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        normalization: str = "mr",
        target_spacing: Sequence[float] | None = None,
        crop_nonzero: bool = True,
        spacing: Sequence[float] | None = None,
        mask_name: str | None = None,
        image_pattern: str | None = None,
        pairs: str | None = None,
        channel_suffix: bool = False,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        folds: int | None = None,
        fold: int = 0,
        seed: int | None = 0,
        cache_dir: str = "cache",
        patch_size: Sequence[int] | int = (64, 128, 128),
        batch_size: int = 2,
        samples_per_epoch: int = 250,
        foreground_oversample: float = 0.33,
        num_workers: int | str = "auto",
        train_transform: Transform | None = None,
        eval_transform: object = None,
        regions: dict[str, list[int]] | None = None,
        mask_classes: Sequence[str] | None = None,
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
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data folder not found")
        self.num_classes = check_int("num_classes", num_classes, 2)
        names = list(class_names or ["background", *(f"class{i}" for i in range(1, num_classes))])
        if len(names) != num_classes:
            raise DataError(f"data.class_names has {len(names)} names for {num_classes} classes")
        self._class_names = names
        self.regions = Regions(regions, num_classes) if regions else None
        self.mask_classes = None
        if mask_classes:
            if regions is not None:
                raise InvalidArgumentError("regions", regions, "null with mask_classes")
            self.mask_classes = MaskClasses(mask_classes, num_classes)
            self.regions = self.mask_classes.regions
            self._class_names = self.mask_classes.value_names
            self.num_classes = self.mask_classes.value_count  # the packed label values
        self.normalization = check_choice("normalization", normalization, NORMALIZATIONS)
        self.file_spacing = None if spacing is None else [float(s) for s in spacing]
        self.crop_nonzero = bool(crop_nonzero)
        self.mask_name, self.image_pattern, self.channel_suffix = (
            mask_name,
            image_pattern,
            channel_suffix,
        )
        self.pairs = None if pairs is None else (self.root / pairs)
        check_float("val_fraction", val_fraction, 0.0, 0.9)
        check_float("test_fraction", test_fraction, 0.0, 0.9)
        if folds is not None:
            check_int("folds", folds, 2)
            check_int("fold", fold, 0, folds - 1)
        self.split = self._split(val_fraction, test_fraction, folds, fold)
        self.by_name = {case.name: case for cases in self.split.values() for case in cases}
        self.target_spacing = (
            tuple(float(s) for s in target_spacing)
            if target_spacing is not None
            else target_spacing_of([self._spacing(c) for c in self.split["train"]])
        )
        names = sorted(self.by_name)
        key = cache_key(self.source_files(), self._settings())
        self.cache = VolumeCache(Path(cache_dir).expanduser().resolve() / f"{self.root.name}-{key}")
        self.intensity: Intensity | None = None
        if self.normalization == "ct":  # statistics of every labelled case, as nnU-Net's
            self.intensity = (
                Intensity(**self.cache.manifest()["intensity"])
                if self.cache.complete
                else self._intensity(list(self.by_name.values()))
            )
        self.cache.build(
            names,
            self._preprocess,
            lambda label: class_locations(label, self.num_classes, np.random.default_rng(0)),
            {"root": str(self.root), **self._settings(), "intensity": self._intensity_record()},
        )
        log.info(
            "volumes: %d cases, target spacing %s mm, cache %s",
            len(names),
            list(self.target_spacing),
            self.cache.folder,
        )
        self._in_channels = self._channels(names)
        self._cases: dict[str, list[VolumeCase]] = {}

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    @property
    def in_channels(self) -> int:
        return self._in_channels

    @property
    def voxel_spacing(self) -> tuple[float, float, float]:
        return self.target_spacing  # type: ignore[return-value]

    def has_split(self, split: str) -> bool:
        return split in self.split

    def cases(self, split: str) -> list[VolumeCase]:
        if split not in self.split:
            raise DataError(f"{self.root}: no {split} split (give {split}/ or data.test_fraction)")
        if split not in self._cases:
            self._cases[split] = [
                self.cache.case(c.name, self.target_spacing) for c in self.split[split]
            ]
        return self._cases[split]

    def split_record(self) -> dict[str, Any]:
        names = {split: [case.name for case in cases] for split, cases in self.split.items()}
        return {"root": str(self.root), "seed": self.seed, "cache": str(self.cache.folder), **names}

    def inference_facts(self) -> dict[str, Any]:
        """What predicting a new volume needs: the same preprocessing."""
        return {
            "spatial_dims": 3,
            "preprocessing": {**self._settings(), "intensity": self._intensity_record()},
        }

    def _settings(self) -> dict[str, Any]:
        """The preprocessing settings (the cache key hashes them with the files)."""
        return {
            "normalization": self.normalization,
            "target_spacing": list(self.target_spacing),
            "crop_nonzero": self.crop_nonzero,
            "file_spacing": self.file_spacing,
            "num_classes": self.num_classes,
            # Only when set, so that caches of label maps keep their keys.
            **({"mask_classes": self.mask_classes.names} if self.mask_classes else {}),
        }

    def _intensity_record(self) -> dict[str, list[float]] | None:
        return None if self.intensity is None else vars(self.intensity)

    def _split(
        self, val_fraction: float, test_fraction: float, folds: int | None, fold: int
    ) -> dict[str, list[Case]]:
        pool, given = labelled_cases(
            self.root,
            self.pairs,
            self.mask_name,
            self.image_pattern,
            self.channel_suffix,
            self.mask_classes,
        )
        return split_pool(
            pool, given, val_fraction, test_fraction, folds, fold, self.seed, self.root
        )

    def source_files(self) -> list[Path]:
        """Every image and label file of the data set (all splits), sorted."""
        return sorted(
            {
                file
                for case in self.by_name.values()
                for file in (*case.images, *label_files(case.label, self.mask_classes))
            }
        )

    def _channels(self, names: Sequence[str]) -> int:
        """The channel count every case shares (read from the cache's array headers); a case
        with another count is named."""
        counts = {
            name: int(self.cache.case(name, self.target_spacing).image.shape[0]) for name in names
        }
        first = names[0]
        for name, count in counts.items():
            if count != counts[first]:
                raise DataError(
                    f"{self.by_name[name].images[0]}: {count} channel(s), but "
                    f"{self.by_name[first].images[0].name} has {counts[first]}"
                )
        return counts[first]

    def _spacing(self, case: Case) -> tuple[float, float, float]:
        """A case's canonical spacing, from its header alone."""
        return canonical_spacing(read_affine(case.images[0], self.file_spacing))

    def _read(self, case: Case) -> tuple[np.ndarray, np.ndarray, Volume]:
        return read_case(case, self.num_classes, self.file_spacing, self.mask_classes)

    def read_labels(self, case: Case) -> Volume:
        """A case's label map as stored (binary masks packed), for scoring predictions."""
        assert case.label is not None
        return read_labels(case.label, self.num_classes, self.file_spacing, self.mask_classes)

    def _intensity(self, cases: Sequence[Case]) -> Intensity:
        rng = np.random.default_rng(self.seed)
        samples = []
        for case in cases:
            image, label, _ = self._read(case)
            foreground = image[label > 0]  # (n, C)
            if len(foreground) > INTENSITY_SAMPLES:
                foreground = foreground[
                    rng.choice(len(foreground), INTENSITY_SAMPLES, replace=False)
                ]
            samples.append(foreground.T)
        return foreground_intensity(samples)

    def _preprocess(self, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        image, labels, label = self._read(self.by_name[name])
        settings = self._settings()
        return preprocess_arrays(image, labels, label.affine, settings, self.intensity)


def target_spacing_of(spacings: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """The automatic target spacing, logged."""
    target = target_spacing(spacings)
    log.info("data.target_spacing=null: %s mm from %d training cases", list(target), len(spacings))
    return target


def canonical_cropped(
    image: np.ndarray, labels: np.ndarray | None, affine: np.ndarray, crop_nonzero: bool
) -> tuple[
    np.ndarray, np.ndarray, tuple[float, float, float], np.ndarray, list[int], list[list[int]]
]:
    """``image`` ``(I, J, K, C)`` and ``labels`` ``(I, J, K)`` (None: zeros) in the canonical
    ``(C, D, H, W)`` / ``(D, H, W)`` order, cropped to the non-zero voxels when
    ``crop_nonzero``. Returns them, the canonical spacing, the orientation, the canonical
    shape before cropping and the crop box per canonical axis."""
    channels, spacing, orientation = canonical(image, affine)
    canonical_shape = [int(n) for n in channels.shape[1:]]
    truth = (
        canonical(labels, affine)[0][0]
        if labels is not None
        else np.zeros(canonical_shape, np.uint8)
    )
    box = nonzero_box(channels) if crop_nonzero else [[0, n] for n in canonical_shape]
    crop = tuple(slice(a, b) for a, b in box)
    return channels[(slice(None), *crop)], truth[crop], spacing, orientation, canonical_shape, box


def preprocess_arrays(
    image: np.ndarray,
    labels: np.ndarray | None,
    affine: np.ndarray,
    settings: dict[str, Any],
    intensity: Intensity | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One case as training and prediction see it: ``image`` ``(I, J, K, C)`` (and ``labels``
    ``(I, J, K)``, or None for prediction) reoriented, cropped, resampled and normalized.
    Returns ``(C, D, H, W)`` float32, ``(D, H, W)`` uint8 (zeros without labels) and the
    geometry that puts predictions back: the file's ``shape`` and ``affine``, the
    ``orientation`` to RAS+, the ``canonical_shape`` before cropping, the ``crop`` box per
    canonical axis and the canonical ``spacing`` before resampling."""
    channels, truth, spacing, orientation, canonical_shape, box = canonical_cropped(
        image, labels, affine, settings["crop_nonzero"]
    )
    target = settings["target_spacing"]
    channels = resample(channels, spacing, target, is_label=False)
    truth = resample(truth, spacing, target, is_label=True)
    channels = normalize(channels, settings["normalization"], intensity)
    geometry = {
        "shape": list(image.shape[:3]),
        "affine": np.asarray(affine).tolist(),
        "orientation": np.asarray(orientation).tolist(),
        "canonical_shape": canonical_shape,
        "crop": box,
        "spacing": [float(s) for s in spacing],
    }
    return channels, truth.astype(np.uint8), geometry
