"""Overlapping classes stored as one binary mask per class (``data.mask_classes``).

A case's masks are either files of one name in a folder per class (``masks/nucleus/a.png``,
``masks/membrane/a.png``; Decathlon layout: ``labelsTr/<class>/case.nii.gz``) or one
multi-channel file, channel k holding class k (a TIFF with C channels, a 4D NIfTI). Each mask
holds 0 and at most one other value (1 or 255, say). They are packed into one label map whose
bit k marks class k (value 5 = classes 0 and 2), so augmentation, resampling, patch sampling and
caches carry them as any label map, and :meth:`~unet_lab.data.regions.Regions.of_bits` turns
the packed values back into one sigmoid target per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unet_lab.arguments import InvalidArgumentError
from unet_lab.data.files import DataError, read_image, read_mask
from unet_lab.data.regions import Regions

# Packed label maps are uint8 everywhere (volume caches, augmentation): 8 bits, 8 classes.
MAX_MASK_CLASSES = 8


class MaskClasses:
    """Reads the binary masks of overlapping classes and packs them into label maps.

    Args:
        names: the classes, in channel (bit) order; with a folder per class, the folder names.
        num_classes: ``data.num_classes`` as the user gave it: background + one per class.

    Attributes:
        regions: one region per class over the packed values (:meth:`Regions.of_bits`).
        value_names: a name per packed value, ``background``, ``nucleus``, ``nucleus+membrane``..
    """

    def __init__(self, names: Sequence[str], num_classes: int) -> None:
        listed = [str(n) for n in names]
        if not listed or len(listed) > MAX_MASK_CLASSES or len(set(listed)) != len(listed):
            raise InvalidArgumentError(
                "mask_classes", list(names), f"1 to {MAX_MASK_CLASSES} distinct class names"
            )
        bad = [n for n in listed if not n or n in (".", "..") or "/" in n or "\\" in n]
        if bad:
            raise InvalidArgumentError("mask_classes", listed, "folder names (no '/')")
        if num_classes != len(listed) + 1:
            raise InvalidArgumentError(
                "num_classes",
                num_classes,
                f"{len(listed) + 1} with data.mask_classes={listed} (background + one per class)",
            )
        self.names = listed
        self.regions = Regions.of_bits(listed)
        self.value_names = ["background", *list(self.regions.legend().values())[1:]]

    @property
    def value_count(self) -> int:
        """How many packed label values there are (``2 ** classes``)."""
        return 2 ** len(self.names)

    def label_folder(self, root: Path, folder: str) -> str:
        """The folder to pair images with: ``folder/<first class>`` when ``root/folder`` holds
        a folder per class, else ``folder`` itself (multi-channel mask files)."""
        per_class = root / folder / self.names[0]
        return f"{folder}/{self.names[0]}" if per_class.is_dir() else folder

    def files(self, first: Path) -> list[Path]:
        """The mask files of one case, in class order: ``first`` (a file in the first class's
        folder) and the file of that name in each other class's folder; or ``[first]``, one
        multi-channel file."""
        if first.parent.name != self.names[0] or len(self.names) == 1:
            return [first]
        files = [first.parent.parent / name / first.name for name in self.names]
        for name, path in zip(self.names, files, strict=True):
            if not path.is_file():
                raise DataError(
                    f"{path}: not found; every class folder of data.mask_classes holds a mask "
                    f"named like {first.name} in {first.parent} (class '{name}')"
                )
        return files

    def read(self, first: Path) -> np.ndarray:
        """The packed label map ``(H, W)`` uint8 of a 2D case's mask file(s)."""
        files = self.files(first)
        if len(files) == 1 and len(self.names) > 1:
            return self.pack_channels(read_image(first), first)
        masks = [read_mask(path) for path in files]
        for mask, path in zip(masks, files, strict=True):
            if mask.ndim != 2:
                raise DataError(f"{path}: a colour mask; a class's binary mask is grey")
        return self.pack_masks(masks, files)

    def pack_channels(self, array: np.ndarray, path: Path) -> np.ndarray:
        """The packed label map of one multi-channel mask ``(*spatial, C)``."""
        if array.ndim < 3 or array.shape[-1] != len(self.names):
            channels = int(array.shape[-1]) if array.ndim >= 3 else 1
            raise DataError(
                f"{path}: {channels} channel(s), but data.mask_classes names {len(self.names)} "
                f"classes (one binary mask per channel, or a folder per class under "
                f"{path.parent})"
            )
        count = len(self.names)
        return self.pack_masks([array[..., k] for k in range(count)], [path] * count)

    def pack_masks(self, masks: Sequence[np.ndarray], paths: Sequence[Path]) -> np.ndarray:
        """One uint8 label map of one mask ``(*spatial)`` per class, bit k = class k; errors
        name the file (``paths``: where each mask came from) and the class."""
        shape = masks[0].shape
        packed = np.zeros(shape, np.uint8)
        for k, (mask, path) in enumerate(zip(masks, paths, strict=True)):
            name = self.names[k]
            if mask.shape != shape:
                raise DataError(
                    f"{path}: mask of class '{name}' is {mask.shape}, but class "
                    f"'{self.names[0]}' is {shape}"
                )
            values = np.unique(mask)
            if len(values) > 2 or (len(values) == 2 and values[0] != 0) or (values < 0).any():
                raise DataError(
                    f"{path}: mask of class '{name}' holds values {values[:8].tolist()}; a "
                    "binary mask holds 0 and one other value"
                )
            packed |= (mask != 0).astype(np.uint8) << k
        return packed


def label_files(label: Path | None, mask_classes: MaskClasses | None) -> list[Path]:
    """The files of a case's label: none, ``label``, or with ``mask_classes`` in a folder per
    class one file per class."""
    if label is None:
        return []
    return mask_classes.files(label) if mask_classes is not None else [label]
