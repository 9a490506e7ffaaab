"""Reading and writing 3D volumes (NIfTI, NRRD, MHA/MHD, TIFF stacks) with their geometry.

Every format reads as voxels in file order (I, J, K[, C]) and a 4x4 affine to RAS+ world mm
(nibabel's convention; ITK formats store LPS). Errors are DataErrors naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import tifffile

from unet_lab.data.files import DataError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
AFFINE_TOLERANCE = 1e-3  # mm; NIfTI headers store the affine as float32
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])  # its own inverse
LABEL_DTYPES = (np.uint8, np.uint16, np.int32)  # the smallest that holds them, else int64
Arrays = tuple[np.ndarray, np.ndarray]


def volume_suffix(path: str | Path) -> str | None:
    """The volume suffix of ``path`` (lower case, ``.nii.gz`` as one), or None if it has none."""
    name = Path(path).name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if name.endswith(suffix)), None)


@dataclass
class Volume:
    """A volume as stored: voxels in file order with the geometry to place them in the world.

    ``array`` is (I, J, K) for one channel, (I, J, K, C) for several, voxel (i, j, k) in file
    order; ``affine`` (4, 4) float64 maps voxel (i, j, k, 1) to RAS+ world millimetres."""

    array: np.ndarray
    affine: np.ndarray
    path: Path

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k in mm."""
        i, j, k = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(i), float(j), float(k)

    @property
    def channels(self) -> int:
        return 1 if self.array.ndim == 3 else int(self.array.shape[3])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (I, J, K)."""
        i, j, k = self.array.shape[:3]
        return int(i), int(j), int(k)


def read_volume(path: str | Path, spacing: Sequence[float] | None = None) -> Volume:
    """Read an image volume.

    Args:
        path: a file with one of :data:`VOLUME_SUFFIXES`.
        spacing: voxel size (x, y, z) in mm, i.e. along i, j, k; used (and required) only for
            TIFF stacks, which store no geometry. Other formats use their own.

    Returns:
        A :class:`Volume` with a float32 array (NIfTI scaling applied) of shape (I, J, K) or
        (I, J, K, C), with only finite values.
    """
    path = Path(path)
    array, affine = _read(path, spacing, scaled=True)
    if array.ndim > 4:
        raise DataError(f"{path}: array of shape {array.shape}; expected (I, J, K) or (I, J, K, C)")
    array = array.astype(np.float32, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise DataError(f"{path}: {bad} voxels are NaN or infinite; replace or mask them")
    return Volume(array, affine, path)


def read_label_volume(
    path: str | Path, num_classes: int | None = None, spacing: Sequence[float] | None = None
) -> Volume:
    """Read a label volume: one integer class per voxel.

    Args:
        path: a file with one of :data:`VOLUME_SUFFIXES`.
        num_classes: if given, every label must lie in 0..num_classes-1.
        spacing: as in :func:`read_volume` (TIFF stacks only).

    Returns:
        A :class:`Volume` with an (I, J, K) array of the smallest of uint8, uint16, int32, int64
        that holds its labels.
    """
    path = Path(path)
    array, affine = _read(path, spacing, scaled=False)
    if array.ndim > 3:
        raise DataError(f"{path}: label volume of shape {array.shape} is {array.ndim}D, not 3D")
    if array.dtype.kind == "f":
        fractional = np.unique(array[~np.isfinite(array) | (array != np.round(array))])
        if fractional.size:
            raise DataError(f"{path}: label volume holds non-integer values ({_some(fractional)})")
    low, high = array.min(), array.max()
    if num_classes is not None and (low < 0 or high >= num_classes):
        outside = np.unique(array[(array < 0) | (array >= num_classes)])
        raise DataError(
            f"{path}: label value(s) {_some(outside)} outside the expected range "
            f"0..{num_classes - 1} (num_classes={num_classes})"
        )
    fits = (t for t in LABEL_DTYPES if np.iinfo(t).min <= low <= high <= np.iinfo(t).max)
    return Volume(array.astype(next(fits, np.int64)), affine, path)


def write_volume(
    path: str | Path, array: np.ndarray, affine: np.ndarray, like: Volume | None = None
) -> Path:
    """Write a volume in the format its suffix names, creating the parent folder.

    Args:
        path: the file to write, with one of :data:`VOLUME_SUFFIXES`.
        array: (I, J, K) or (I, J, K, C), in the dtype to store.
        affine: (4, 4) voxel -> RAS+ mm; TIFF stacks store no geometry and ignore it.
        like: a NIfTI volume whose header (units, qform/sform codes, description) to keep when
            writing NIfTI, as for a prediction written next to its input image.

    Returns:
        ``path``.
    """
    path = Path(path)
    suffix = _suffix_or_error(path)
    array, affine = np.asarray(array), np.asarray(affine, dtype=np.float64)
    if array.ndim not in (3, 4) or 0 in array.shape or affine.shape != (4, 4):
        raise DataError(
            f"{path}: expected (I, J, K[, C]) voxels and a (4, 4) affine, got {array.shape}, "
            f"{affine.shape}"
        )
    if array.dtype in (bool, np.float16):  # neither NIfTI nor ITK stores these
        array = array.astype(np.uint8 if array.dtype == bool else np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in NIFTI_SUFFIXES:
        _write_nifti(path, array, affine, like)
    elif suffix in ITK_SUFFIXES:
        import SimpleITK as sitk  # slow to import; only needed here

        stack = np.ascontiguousarray(np.swapaxes(array, 0, 2))  # (K, J, I[, C]): ITK's order
        image = sitk.GetImageFromArray(stack, isVector=array.ndim == 4)
        lps = LPS_TO_RAS @ affine[:3, :3]
        sizes = np.linalg.norm(lps, axis=0)
        image.SetSpacing(sizes.tolist())
        image.SetDirection((lps / sizes).ravel().tolist())  # row-major, as ITK reads it
        image.SetOrigin((LPS_TO_RAS @ affine[:3, 3]).tolist())
        sitk.WriteImage(image, str(path), True)
    else:
        pages = np.swapaxes(array, 0, 2)  # (Z, Y, X[, C]), channels interleaved as samples
        planar = "contig" if array.ndim == 4 else None
        tifffile.imwrite(path, pages, photometric="minisblack", planarconfig=planar)
    return path


def check_pair(image: Volume, label: Volume) -> None:
    """Raise :class:`DataError` naming the label file unless it covers the image voxel for voxel:
    same spatial shape and the same affine within 1e-3 mm."""
    if image.shape != label.shape:
        raise DataError(f"{label.path}: label shape {label.shape} differs from image {image.shape}")
    difference = float(np.abs(image.affine - label.affine).max())
    if difference > AFFINE_TOLERANCE:
        raise DataError(
            f"{label.path}: label geometry differs from image {image.path.name} (affines differ "
            f"by up to {difference:.4g} mm); resample one onto the other"
        )


def _read(path: Path, spacing: Sequence[float] | None, scaled: bool) -> Arrays:
    """Voxels (I, J, K, ...) of any format, with trailing singleton axes dropped, and the
    RAS+ affine. ``scaled``: NIfTI scaling applied, as float32."""
    suffix = _suffix_or_error(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:  # the libraries raise many kinds of errors for unreadable or truncated files
        if suffix in NIFTI_SUFFIXES:
            array, affine = _read_nifti(path, scaled)
        elif suffix in ITK_SUFFIXES:
            array, affine = _read_itk(path)
        else:
            array, affine = _read_tiff(path, spacing)
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{path}: cannot be read as a volume ({_reason(error)})") from error
    if 0 in array.shape:
        raise DataError(f"{path}: volume of shape {array.shape} has a zero-length axis")
    if array.ndim < 3:
        raise DataError(f"{path}: {array.ndim}D array of shape {array.shape} is not a volume")
    while array.ndim > 3 and array.shape[-1] == 1:  # (I, J, K, 1): one channel
        array = array[..., 0]
    if array.ndim == 5 and array.shape[3] == 1:  # (I, J, K, 1, C): NIfTI vectors
        array = array[:, :, :, 0]
    return array, affine


def _load_nifti(path: Path) -> nib.Nifti1Image:
    # No memory map: it would keep the file open (and locked on Windows) after reading.
    image = nib.load(path, mmap=False)
    if not isinstance(image, nib.Nifti1Image):  # NIfTI-2 images are Nifti1Images too
        raise DataError(f"{path}: not a NIfTI image ({type(image).__name__})")
    return image


def _read_nifti(path: Path, scaled: bool) -> Arrays:
    image = _load_nifti(path)
    # Labels: as stored (any scaling only applied), so that integrality can be checked.
    array = image.get_fdata(dtype=np.float32) if scaled else np.asanyarray(image.dataobj)
    # Reshaped: nibabel reads an array with a zero-length axis flat, as (0,).
    return np.asarray(array).reshape(image.shape), np.asarray(image.affine, dtype=np.float64)


def _read_itk(path: Path) -> Arrays:
    import SimpleITK as sitk  # slow to import; only needed here

    image = sitk.ReadImage(str(path))
    if image.GetDimension() != 3:
        raise DataError(f"{path}: {image.GetDimension()}D image; expected a 3D volume")
    array = np.swapaxes(sitk.GetArrayFromImage(image), 0, 2)  # (z, y, x[, c]) -> (I, J, K[, C])
    return array, _itk_affine(image)


def _itk_affine(image: Any) -> np.ndarray:
    """The RAS+ affine of a SimpleITK image or reader (direction, spacing, origin: LPS)."""
    direction = np.reshape(image.GetDirection(), (3, 3))
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin())
    return affine


def _read_tiff(path: Path, spacing: Sequence[float] | None) -> Arrays:
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        stack, axes = series.asarray(), series.axes
    # Axes of length 1 (ImageJ's T=1, say) carry nothing.
    kept = [i for i, axis in enumerate(axes) if axis in "YX" or stack.shape[i] != 1]
    named = "".join(axes[i] for i in kept)
    stack = stack.reshape([stack.shape[i] for i in kept])
    channel = [i for i, axis in enumerate(named) if axis in "SC"]  # samples or ImageJ channels
    depth = [i for i, axis in enumerate(named) if axis not in "YXSC"]  # Z, or pages (I, Q)
    if "Y" not in named or "X" not in named or len(depth) > 1 or len(channel) > 1:
        raise DataError(
            f"{path}: TIFF of shape {stack.shape} (axes {named}); expected a stack (Z, Y, X) "
            "or (Z, Y, X, C)"
        )
    if not depth:
        raise DataError(f"{path}: a single 2D image, not a volume (a stack of pages)")
    order = [named.index("X"), named.index("Y"), depth[0], *channel]
    return np.transpose(stack, order), _tiff_affine(path, spacing)


def _tiff_affine(path: Path, spacing: Sequence[float] | None) -> np.ndarray:
    """The diagonal affine of a TIFF stack from the user's ``data.spacing``."""
    if spacing is None:
        raise DataError(f"{path}: a TIFF stack stores no voxel size; set data.spacing (x, y, z)")
    sizes = np.asarray(spacing, dtype=np.float64)
    if sizes.shape != (3,) or not np.all(np.isfinite(sizes) & (sizes > 0)):
        raise DataError(f"{path}: data.spacing must be 3 positive sizes (x, y, z), got {spacing}")
    return np.diag([*sizes, 1.0])


def read_affine(path: str | Path, spacing: Sequence[float] | None = None) -> np.ndarray:
    """A volume's voxel -> RAS+ affine from its header alone (the voxels are not read); TIFF
    stacks take ``spacing`` as :func:`read_volume` does."""
    path = Path(path)
    suffix = _suffix_or_error(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if suffix not in NIFTI_SUFFIXES + ITK_SUFFIXES:
        return _tiff_affine(path, spacing)
    try:
        if suffix in NIFTI_SUFFIXES:
            return np.asarray(nib.load(path).affine, dtype=np.float64)  # type: ignore[attr-defined]
        import SimpleITK as sitk  # slow to import; only needed here

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return _itk_affine(reader)
    except Exception as error:
        raise DataError(f"{path}: cannot be read as a volume ({_reason(error)})") from error


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, like: Volume | None) -> None:
    # Many tools cannot read 64-bit NIfTI; labels (argmax gives int64) fit in int32.
    if array.dtype in (np.int64, np.uint64) and -(2**31) <= array.min() <= array.max() < 2**31:
        array = array.astype(np.int32)
    header = None
    if like is not None and volume_suffix(like.path) in NIFTI_SUFFIXES:
        try:
            header = _load_nifti(like.path).header  # reads the header only
        except Exception as error:
            raise DataError(f"{like.path}: cannot read its header ({_reason(error)})") from error
    image = nib.Nifti1Image(array, affine, header=header, dtype=array.dtype)
    if header is not None and (header["sform_code"] or header["qform_code"]):
        # Keep what the input said its world is (scanner, aligned, MNI...).
        image.set_sform(affine, code=int(header["sform_code"]))
        image.set_qform(affine, code=int(header["qform_code"]))
    nib.save(image, path)


def _suffix_or_error(path: Path) -> str:
    suffix = volume_suffix(path)
    if suffix is None:
        raise DataError(f"{path}: unknown volume format; expected {', '.join(VOLUME_SUFFIXES)}")
    return suffix


def _reason(error: Exception) -> str:
    """The gist of a library's error on one line (ITK's span several, after a source location)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Exception thrown in SimpleITK")]
    text = lines[0] if lines else type(error).__name__
    return text.removeprefix("sitk::ERROR: ").removeprefix("ITK ERROR: ")[:200]


def _some(values: np.ndarray, limit: int = 10) -> str:
    """Up to ``limit`` values, comma-separated, with how many more there are."""
    shown = ", ".join(f"{value:g}" for value in values[:limit].tolist())
    return shown + (f" and {values.size - limit} more" if values.size > limit else "")
