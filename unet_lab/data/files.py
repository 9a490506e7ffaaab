"""Reading images and label masks from files, with errors that name the file."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import tifffile

from unet_lab.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
JPEG_END = b"\xff\xd9"  # the end-of-image marker every complete JPEG file ends with


class DataError(InputError):
    """A data set problem; the message names the file or folder."""


def list_images(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem; two files with one stem are an error. Hidden files
    (``.name``, such as the ``._name.png`` that macOS copies leave) are not images."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if not path.is_file():
            continue
        if path.stem in found:
            raise DataError(
                f"{path}: two files share the name {path.stem!r} ({found[path.stem].name})"
            )
        found[path.stem] = path
    return found


def read_image(path: Path) -> np.ndarray:
    """An image as (H, W, C), keeping its bit depth (uint8 or uint16); colour as RGB. TIFFs may
    hold any number of channels, interleaved (``YXS``) or as planes (``CYX``)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        planes = _tiff_with_channel_planes(path)
        if planes is not None:
            return planes
    data = path.read_bytes()
    if path.suffix.lower() in (".jpg", ".jpeg") and not data.rstrip(b"\0").endswith(JPEG_END):
        # OpenCV decodes a cut JPEG without an error, filling the rest with grey.
        raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None or image.size == 0:
        raise DataError(f"{path}: cannot be read as an image (unreadable, truncated or empty)")
    _check_finite(image, path)
    if image.ndim == 2:
        image = image[..., None]
    elif image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def _tiff_with_channel_planes(path: Path) -> np.ndarray | None:
    """A TIFF that OpenCV would misread (2 or more than 4 interleaved channels, or channels
    stored as planes or as pages) as (H, W, C); None for the plain layouts OpenCV reads (with any of
    its compressions).

    Channels are samples of each pixel (tifffile axis ``S``: interleaved or planar) or pages
    that ImageJ or OME metadata mark as channels (``C``). Other pages (``Z`` slices, ``T``
    times, ``I`` pages without metadata, ``Q`` tifffile's unnamed axis, or pages written one
    by one as series of their own) make a stack, which is refused: read as channels, a volume
    would pass for a multi-channel 2D image (OpenCV reads its first page only)."""
    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            axes, shape = series.axes, series.shape
            channel_axes = [i for i, axis in enumerate(axes) if axis not in "YX"]
            if "Y" not in axes or "X" not in axes or len(channel_axes) > 1:
                raise DataError(
                    f"{path}: TIFF of shape {shape} (axes {axes}): expected one 2D image with "
                    "at most one channel axis"
                )
            page_axes = [i for i in channel_axes if axes[i] not in "SC"]
            copies = sum(other.shape == shape for other in tiff.series)
            if page_axes or copies > 1:
                pages, stack = (shape[page_axes[0]], axes) if page_axes else (copies, "I" + axes)
                raise DataError(
                    f"{path}: a multi-page TIFF stack ({pages} pages, axes {stack}), not a 2D "
                    "image: volumes are not supported yet (channels are read from samples, "
                    "or from pages that ImageJ/OME metadata mark as channels)"
                )
            # OpenCV reads grey, RGB and RGBA; two samples it reads as one channel.
            if axes == "YX" or (axes == "YXS" and shape[-1] in (3, 4)):
                return None
            array = series.asarray()
    except DataError:
        raise
    except Exception as exc:  # tifffile raises many types for broken or unsupported files
        hint = " (pip install imagecodecs)" if "imagecodecs" in str(exc) else ""
        raise DataError(f"{path}: cannot be read as a TIFF image: {exc}{hint}") from exc
    _check_finite(array, path)
    return np.moveaxis(array, channel_axes[0], -1)


def _check_finite(image: np.ndarray, path: Path) -> None:
    """Float images (TIFF) may hold NaN or infinities, which would turn every loss into NaN."""
    if np.issubdtype(image.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(image)))
        if bad:
            raise DataError(
                f"{path}: {bad} NaN or infinite pixel value(s); replace them (e.g. with 0) "
                "or mask them out before training"
            )


def read_mask(path: Path) -> np.ndarray:
    """A mask as stored: (H, W) label values, or (H, W, 3) RGB colours."""
    mask = read_image(path)
    if mask.shape[2] == 1:
        return mask[..., 0]
    if mask.shape[2] == 4:
        mask = mask[..., :3]
    if (mask == mask[..., :1]).all():  # grey stored as RGB
        return mask[..., 0]
    return mask


def files_hash(files: Iterable[Path], root: Path) -> str:
    """A short hash of a data set's files: their paths (relative to ``root`` where inside it)
    and sizes. Added, removed, renamed or resized files change it; copying the folder does
    not (an edit that keeps a file's size is not seen)."""
    digest = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        name = path.relative_to(root) if path.is_relative_to(root) else path
        digest.update(f"{name}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]
