"""Mapping stored mask values (or colours) to class indices 0..C-1."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unet_lab.data.files import DataError

BINARY_255 = (0, 255)


class LabelMapping:
    """Turns a stored mask into class indices, and refuses values it does not know.

    Args:
        num_classes: number of classes C (background included).
        mask_values: stored value of each class, in class order (``[0, 128, 255]``); default
            ``0..C-1``, and for C = 2 also ``{0, 255}`` masks.
        palette: RGB colour of each class, in class order, for colour masks.
        ignore_index: stored value (not a class) that loss and scores leave out; kept as is.
    """

    def __init__(
        self,
        num_classes: int,
        mask_values: Sequence[int] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        for name, given in (("mask_values", mask_values), ("palette", palette)):
            if given is not None and len(given) != num_classes:
                raise DataError(f"data.{name} has {len(given)} entries for {num_classes} classes")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise DataError(
                f"data.ignore_index={ignore_index} is also a class index (0..{num_classes - 1})"
            )
        self.num_classes = num_classes
        self.mask_values = list(mask_values) if mask_values is not None else None
        self.palette = np.array(palette, dtype=np.int64) if palette is not None else None
        self.ignore_index = ignore_index
        self.dtype = np.uint8 if max(num_classes - 1, ignore_index or 0) <= 255 else np.int32

    def __call__(self, mask: np.ndarray, path: Path) -> np.ndarray:
        labels = self._labels(mask, path)
        if self.ignore_index is not None and (labels == self.ignore_index).all():
            raise DataError(
                f"{path}: every pixel is ignore_index ({self.ignore_index}): nothing to learn "
                "or score; remove the image or label it"
            )
        return labels

    def _labels(self, mask: np.ndarray, path: Path) -> np.ndarray:
        if self.palette is not None:
            return self._from_colours(mask, path)
        if mask.ndim == 3:
            raise DataError(f"{path}: a colour mask; give data.palette (one RGB colour per class)")
        values = self.mask_values
        if values is None:
            present = set(np.unique(mask).tolist()) - {self.ignore_index}
            binary_255 = self.num_classes == 2 and present <= set(BINARY_255) and 255 in present
            values = list(BINARY_255) if binary_255 else list(range(self.num_classes))
        return self._from_values(mask, values, path)

    def _from_values(self, mask: np.ndarray, values: list[int], path: Path) -> np.ndarray:
        lookup = {value: index for index, value in enumerate(values)}
        if self.ignore_index is not None:
            lookup[self.ignore_index] = self.ignore_index
        present = np.unique(mask).tolist()
        unknown = [v for v in present if v not in lookup]
        if unknown:
            lossy = path.suffix.lower() in (".jpg", ".jpeg")
            raise DataError(
                f"{path}: mask values {unknown[:8]} are not classes; expected {sorted(lookup)} "
                + (
                    "(a JPEG mask: its compression changes label values; store masks as PNG or "
                    "TIFF)"
                    if lossy
                    else "(set data.num_classes, data.mask_values or data.ignore_index)"
                )
            )
        out = np.zeros(mask.shape, self.dtype)
        for value in present:
            out[mask == value] = lookup[value]
        return out

    def _from_colours(self, mask: np.ndarray, path: Path) -> np.ndarray:
        assert self.palette is not None
        if mask.ndim != 3:
            raise DataError(f"{path}: a single-channel mask, but data.palette expects RGB colours")
        rgb = mask.astype(np.int64)
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        palette_codes = (self.palette[:, 0] << 16) | (self.palette[:, 1] << 8) | self.palette[:, 2]
        out = np.zeros(mask.shape[:2], self.dtype)
        known = np.zeros(mask.shape[:2], bool)
        for index, code in enumerate(palette_codes):
            hit = codes == code
            out[hit] = index
            known |= hit
        if not known.all():
            colours = {
                tuple(int(c) for c in mask[y, x]) for y, x in zip(*np.nonzero(~known), strict=True)
            }
            raise DataError(f"{path}: colours {sorted(colours)[:5]} are not in data.palette")
        return out
