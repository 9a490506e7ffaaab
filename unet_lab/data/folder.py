"""Your own images and masks from a folder, checked file by file before anything trains."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np

from unet_lab.arguments import InvalidArgumentError, check_float, check_int
from unet_lab.data.augmentation import seed_pipeline
from unet_lab.data.datamodule import SPLITS, InMemoryDataModule, data_seed
from unet_lab.data.files import IMAGE_SUFFIXES, DataError, read_image, read_mask
from unet_lab.data.labels import LabelMapping
from unet_lab.data.mask_classes import MaskClasses, label_files
from unet_lab.data.pairing import cases_from_list, find_cases
from unet_lab.data.regions import Regions
from unet_lab.data.scaling import (
    AUTO,
    AUTO_MIN_DEPTH,
    AUTO_PATCHES,
    AUTO_REFERENCE_PATCH,
    auto_scale,
    check_scale,
    resample_image,
    resample_mask,
    structure_depth,
    working_size,
)
from unet_lab.data.splits import split_pool

log = logging.getLogger(__name__)
Sample = tuple[str, tuple[Path, ...], Path]  # name, image file(s) (channels), mask file


class FolderDataModule(InMemoryDataModule):
    """Images and label masks from ``root``, decoded and checked once, held in memory.

    Layouts: ``root/images`` + ``root/masks`` (split here), or ``root/{train,val,test}/`` each
    with ``images/`` + ``masks/`` (a missing ``val``/``test`` is split from ``train``), or a
    list of pairs (``pairs``, split here). Image and mask files pair by stem (or by
    ``mask_name``) and may have different formats (png, jpg, tif, bmp; 8 or 16 bit; grey, RGB
    or RGBA). See :mod:`unet_lab.data.pairing`.

    Args:
        root: the data folder.
        mask_name: masks named after their image's id instead of its stem: a name with
            ``{id}``, e.g. ``{id}_manual1`` for ``21_training.tif`` + ``21_manual1.png``; the
            mask may have any image suffix.
        image_pattern: a regular expression the whole image stem must match, whose one group
            (or group named ``id``) is the id, e.g. ``(\\d+)_training``; default: the id is
            the stem.
        pairs: a list of the pairs instead of the folders, relative to ``root`` or absolute: a
            CSV file with a header line ``image,mask`` (channels in more files: columns
            ``image1``, ``image2``..) or a Decathlon ``dataset.json`` (its ``training``
            entries; images split as ``name_0000``.. are found too). Paths in it are relative
            to ``root``. The pairs are the labelled pool, split like ``root/images``.
        num_classes: classes including background.
        class_names: one per class (default ``class0``.. with ``background`` first).
        mask_values, palette, ignore_index: how stored masks map to classes (``LabelMapping``).
        val_fraction, test_fraction: shares of the labelled pool held out, drawn with ``seed``
            (None: a seed drawn once, see :func:`data_seed`; :meth:`split_record` records it).
        folds, fold: k-fold cross-validation instead of ``val_fraction``: fold ``fold`` of
            ``folds`` is the validation set.
        patch_size: train on random square patches of this size (smaller images are
            mirror-padded); validation and test always use whole images. Default: whole images
            when all are square and of one size, else square patches of the smallest side
            (rounded down to 16), so batches stack and 90-degree rotations keep their shape.
        scale: the working resolution, a factor in (0, 1] or ``auto``. Training, and validation
            while fitting, see images resampled by it (area interpolation; masks nearest);
            ``patch_size`` counts pixels at this resolution. The final validation, the test,
            ``eval.py`` and ``predict.py`` run the network at this resolution and resample its
            class probabilities back to each image's own size before the argmax, so scores and
            masks are at the images' own size. ``auto``: the factor that makes the median
            shorter side of the training images ``AUTO_PATCHES`` (2) patches (``patch_size``,
            else 256 px), but keeps the labelled structures ``AUTO_MIN_DEPTH`` (4) px deep
            (:func:`~unet_lab.data.scaling.structure_depth`); rounded down to two digits; 1
            when the images are that small already, or the structures that thin.
        foreground_oversample: share of training patches centred on a foreground pixel (class
            > 0) instead of placed at random; helps when objects are small and rare.
        samples_per_epoch: training samples (patches) drawn per epoch; default one per
            training image. Raise it for few, large images, so an epoch is more than a few steps.
        regions: overlapping classes as unions of label values, ``{name: [values]}`` (e.g.
            ``{whole: [1, 2, 3], core: [2, 3], enhancing: [3]}``): the network gets one sigmoid
            output per region (:class:`~unet_lab.data.regions.Regions`; with ``loss=regions``).
        mask_classes: overlapping classes given as one binary mask per class, their names in
            order: ``masks/<name>/`` folders holding a mask of each image under one file name,
            or one mask file per image with a channel per class
            (:mod:`~unet_lab.data.mask_classes`); ``num_classes`` is then the classes + 1 and
            the network gets one sigmoid output per class (with ``loss=regions``).
    """

    def __init__(
        self,
        root: str,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        mask_values: Sequence[int] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        folds: int | None = None,
        fold: int = 0,
        seed: int | None = 0,
        patch_size: int | None = None,
        scale: float | Literal["auto"] = 1.0,
        foreground_oversample: float = 0.0,
        samples_per_epoch: int | None = None,
        batch_size: int = 8,
        num_workers: int | str = "auto",
        train_transform: A.Compose | None = None,
        eval_transform: A.Compose | None = None,
        normalization: str = "image",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        mask_name: str | None = None,
        image_pattern: str | None = None,
        pairs: str | None = None,
        regions: dict[str, list[int]] | None = None,
        mask_classes: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        if pairs is not None and (mask_name is not None or image_pattern is not None):
            raise InvalidArgumentError(
                "mask_name" if mask_name is not None else "image_pattern",
                mask_name if mask_name is not None else image_pattern,
                "null with pairs (the list pairs the files)",
            )
        self.mask_name, self.image_pattern = mask_name, image_pattern
        self.pairs = None if pairs is None else self.root / Path(pairs).expanduser()
        check_int("num_classes", num_classes, 2)
        names = list(class_names or ["background", *(f"class{i}" for i in range(1, num_classes))])
        if len(names) != num_classes:
            raise DataError(f"data.class_names has {len(names)} names for {num_classes} classes")
        self._class_names = names
        self.labels = LabelMapping(num_classes, mask_values, palette, ignore_index)
        self.regions = Regions(regions, num_classes) if regions else None
        self.mask_classes = None
        if mask_classes:
            others = {"regions": regions, "mask_values": mask_values, "palette": palette}
            for key, value in {**others, "ignore_index": ignore_index}.items():
                if value is not None:
                    raise InvalidArgumentError(key, value, "null with mask_classes (binary masks)")
            self.mask_classes = MaskClasses(mask_classes, num_classes)
            self.regions = self.mask_classes.regions
            self._class_names = self.mask_classes.value_names
        check_float("val_fraction", val_fraction, 0.0, 0.9)
        check_float("test_fraction", test_fraction, 0.0, 0.9)
        if folds is not None:
            check_int("folds", folds, 2)
            check_int("fold", fold, 0, folds - 1)
        if patch_size is not None:
            check_int("patch_size", patch_size, 8)
        check_float("foreground_oversample", foreground_oversample, 0.0, 1.0)
        requested_scale = check_scale("scale", scale)
        self.seed = data_seed(seed)
        self.split = self._split(val_fraction, test_fraction, folds, fold, self.seed)
        self.arrays = {split: self._load(samples) for split, samples in self.split.items()}
        self.in_channels = self._channels()
        native_sizes = {image.shape[:2] for images, _ in self.arrays.values() for image in images}
        self.sizes_vary = len(native_sizes) > 1
        self.scale = self._working_scale(requested_scale, patch_size)
        self._working: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        # Sizes at the working resolution: what training and the patch size see.
        sizes = {working_size(h, w, self.scale) for h, w in native_sizes}
        if patch_size is None and (self.sizes_vary or any(h != w for h, w in sizes)):
            # Square patches batch together whatever the sizes, and stay square under rotations.
            patch_size = max(16, min(min(size) for size in sizes) // 16 * 16)
            log.info(
                "images of %d size(s), not all square: training on %d px patches",
                len(sizes),
                patch_size,
            )
        self.patch_size = patch_size
        if patch_size is not None:
            self.train_input_size = patch_size
        elif len(sizes) == 1:  # all images of one square size, trained whole
            self.train_input_size = next(iter(sizes))[0]
        if patch_size is not None:
            background = [0] if ignore_index is None else [0, ignore_index]
            crop = [
                A.PadIfNeeded(patch_size, patch_size, border_mode=cv2.BORDER_REFLECT_101),
                A.OneOf(
                    [
                        A.CropNonEmptyMaskIfExists(
                            patch_size, patch_size, background, p=foreground_oversample
                        ),
                        A.RandomCrop(patch_size, patch_size, p=1.0 - foreground_oversample),
                    ],
                    p=1.0,
                ),
            ]
            seed = getattr(train_transform, "seed", None)  # the augmentation's (the run's)
            train_transform = A.Compose([*crop, *(train_transform or A.Compose([])).transforms])
            if seed is not None:  # a new Compose draws its transforms fresh seeds
                seed_pipeline(train_transform, seed)
        super().__init__(
            batch_size, num_workers, train_transform, eval_transform, normalization, mean, std
        )
        if samples_per_epoch is not None:
            self.samples_per_epoch = check_int("samples_per_epoch", samples_per_epoch, 1)

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    def _split(
        self, val_fraction: float, test_fraction: float, folds: int | None, fold: int, seed: int
    ) -> dict[str, list[Sample]]:
        pool, given = labelled_samples(
            self.root, self.pairs, self.mask_name, self.image_pattern, self.mask_classes
        )
        return split_pool(pool, given, val_fraction, test_fraction, folds, fold, seed, self.root)

    def source_files(self) -> list[Path]:
        """Every image and mask file of the data set (all splits), sorted."""
        return sorted(
            {
                file
                for samples in self.split.values()
                for _, images, mask in samples
                for file in (*images, *label_files(mask, self.mask_classes))
            }
        )

    def _load(self, samples: list[Sample]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        images, masks = [], []
        for sample in samples:
            image, mask = read_sample(sample, self.mask_classes or self.labels)
            images.append(image)
            masks.append(mask)
        return images, masks

    def _working_scale(self, scale: float | str, patch_size: int | None) -> float:
        """``scale`` as a factor: ``auto`` from the training images' shorter sides."""
        if scale != AUTO:
            factor = float(scale)
        else:
            images, masks = self.arrays["train"]
            sides = [min(image.shape[:2]) for image in images]
            depth = structure_depth(masks, len(self._class_names))
            factor = auto_scale(sides, patch_size, depth)
            median = float(np.median(sides))
            log.info(
                "data.scale=auto: %g (median shorter side of the training images %d px -> "
                "%d px, the target being %d patches of %d px; labelled structures %s px deep, "
                "kept at least %g)",
                factor,
                median,
                round(median * factor),
                AUTO_PATCHES,
                patch_size or AUTO_REFERENCE_PATCH,
                "-" if depth is None else f"{depth:.1f}",
                AUTO_MIN_DEPTH,
            )
        if factor != 1:
            log.info(
                "working resolution: images resampled by %g for training and validation while "
                "fitting; final scores, eval and predict at each image's own size",
                factor,
            )
        return factor

    def _channels(self) -> int:
        """The channel count all images share (the first image sets it)."""
        reference: tuple[Path, int] | None = None
        for split, samples in self.split.items():
            for (_, (path, *_), _), image in zip(samples, self.arrays[split][0], strict=True):
                if reference is None:
                    reference = (path, image.shape[2])
                elif image.shape[2] != reference[1]:
                    raise DataError(
                        f"{path}: {image.shape[2]} channels, but {reference[0].name} has "
                        f"{reference[1]}"
                    )
        return reference[1] if reference else 0

    def split_record(self) -> dict[str, Any]:
        """The data root, the seed and the image names (stems) of each split."""
        stems = {name: [stem for stem, _, _ in samples] for name, samples in self.split.items()}
        return {"root": str(self.root), "seed": self.seed, **stems}

    def load_split(self, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if split not in self.arrays:
            raise DataError(f"{self.root}: no {split} split (give {split}/ or data.test_fraction)")
        return self.arrays[split]

    def working_split(self, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The split resampled to the working resolution (once, then kept in memory)."""
        images, masks = self.load_split(split)
        if self.scale == 1:
            return images, masks
        if split not in self._working:
            self._working[split] = (
                [resample_image(image, self.scale) for image in images],
                [resample_mask(mask, self.scale) for mask in masks],
            )
        return self._working[split]

    def has_split(self, split: str) -> bool:
        return split in self.arrays

    def eval_batch_size(self) -> int:
        """Whole images of different sizes do not stack into one batch."""
        return 1 if self.sizes_vary else self.batch_size


def labelled_samples(
    root: Path,
    pairs: Path | None,
    mask_name: str | None,
    image_pattern: str | None,
    mask_classes: MaskClasses | None = None,
) -> tuple[list[Sample], dict[str, list[Sample]]]:
    """The labelled pool (``root/train``, ``root`` or the ``pairs`` list) and the splits that
    folders give (``val``, ``test``) of a folder data set, found by name: nothing is read.
    With ``mask_classes`` in a folder per class, a sample's mask is its first class's file."""
    folders = [s for s in SPLITS if (root / s / "images").is_dir()]
    if pairs is not None:  # a list replaces the folder layouts
        folders = []
    for name in [s for s in folders if s != "train" and not (root / s / "masks").is_dir()]:
        log.warning("%s has no masks/ folder (unlabelled): not used", root / name)
        folders.remove(name)

    def found(folder: Path) -> list[Sample]:
        if pairs is None:
            masks = mask_classes.label_folder(folder, "masks") if mask_classes else "masks"
            cases = find_cases(folder, "images", masks, IMAGE_SUFFIXES, mask_name, image_pattern)
        else:
            cases = cases_from_list(root, pairs, IMAGE_SUFFIXES)
        samples = []
        for case in cases:
            if case.label is None:
                raise DataError(f"{case.images[0]}: listed without a mask in {pairs}")
            samples.append((case.name, case.images, case.label))
        return samples

    given = {s: found(root / s) for s in folders}
    if given and "train" not in given:
        raise DataError(f"{root / 'train'}: folder not found next to {sorted(given)}")
    pool = given.pop("train") if given else found(root)
    return pool, given


def read_sample(
    sample: Sample, labels: LabelMapping | MaskClasses
) -> tuple[np.ndarray, np.ndarray]:
    """An image ``(H, W, C)`` in its stored type and its label map ``(H, W)`` (class indices,
    or binary masks packed by ``labels``), checked together (errors name the file)."""
    _, image_paths, mask_path = sample
    image = _read_channels(image_paths)
    if isinstance(labels, MaskClasses):
        mask = labels.read(mask_path)
    else:
        mask = labels(read_mask(mask_path), mask_path)
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{image_paths[0].name} is {image.shape[1]}x{image.shape[0]}"
        )
    return image, mask


def _read_channels(paths: Sequence[Path]) -> np.ndarray:
    """One image, or several files of one size and bit depth stacked as its channels."""
    parts = [read_image(path) for path in paths]
    for path, part in zip(paths[1:], parts[1:], strict=True):
        if part.shape[:2] != parts[0].shape[:2] or part.dtype != parts[0].dtype:
            raise DataError(
                f"{path}: {part.shape[1]}x{part.shape[0]} {part.dtype}, but the first channel "
                f"file {paths[0].name} is {parts[0].shape[1]}x{parts[0].shape[0]} "
                f"{parts[0].dtype}"
            )
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
