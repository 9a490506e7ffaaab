"""Volume files: NIfTI, NRRD, MHA and TIFF stacks read and written with their geometry, and
errors that name the file."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from unet_lab.data.files import DataError
from unet_lab.data.volumes.io import (
    Volume,
    check_pair,
    read_label_volume,
    read_volume,
    volume_suffix,
    write_volume,
)

SPACING = (0.7, 0.9, 3.0)


def oblique_affine() -> np.ndarray:
    """Rotated 20 degrees about z, anisotropic, with j flipped: what real scans look like."""
    angle = np.deg2rad(20.0)
    rotation = np.array(
        [
            [np.cos(angle), -np.sin(angle), 0.0],
            [np.sin(angle), np.cos(angle), 0.0],
            [0.0, 0.0, 1.0],
        ]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([SPACING[0], -SPACING[1], SPACING[2]])
    affine[:3, 3] = [12.5, -30.0, 41.0]
    return affine


def image_array(shape: tuple[int, ...] = (5, 6, 7)) -> np.ndarray:
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


def names_file(path: Path, words: str) -> AbstractContextManager[pytest.ExceptionInfo[DataError]]:
    """A DataError whose message starts with ``path`` and then says ``words`` (a regex)."""
    return pytest.raises(DataError, match=f"^{re.escape(str(path))}: .*{words}")


def test_volume_suffix() -> None:
    assert volume_suffix("scan.nii.gz") == ".nii.gz"
    assert volume_suffix(Path("dir.v2/SCAN.NII")) == ".nii"
    assert volume_suffix("a.nrrd") == ".nrrd"
    assert volume_suffix("a.tiff") == ".tiff"
    assert volume_suffix("a.png") is None
    assert volume_suffix("a.gz") is None


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"])
def test_round_trip_keeps_voxels_and_geometry(tmp_path: Path, suffix: str) -> None:
    array, affine = image_array(), oblique_affine()
    path = write_volume(tmp_path / "sub" / f"scan{suffix}", array, affine)
    assert path == tmp_path / "sub" / f"scan{suffix}"
    volume = read_volume(path)
    assert volume.path == path
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    assert volume.shape == (5, 6, 7)
    assert volume.channels == 1
    np.testing.assert_allclose(volume.spacing, SPACING, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_world_point_matches_simpleitk(tmp_path: Path, suffix: str) -> None:
    """Voxel (1, 2, 3) lands where ITK itself puts it (LPS, so x and y change sign in RAS)."""
    import SimpleITK as sitk

    path = write_volume(tmp_path / f"scan{suffix}", image_array(), oblique_affine())
    itk_image = sitk.ReadImage(str(path))
    assert itk_image.GetSize() == (5, 6, 7)  # (x, y, z) = (I, J, K)
    lps = np.array(itk_image.TransformIndexToPhysicalPoint((1, 2, 3)))
    ras = read_volume(path).affine @ np.array([1.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-5)
    # The voxel at that index is the same one.
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(itk_image)[3, 2, 1], image_array()[1, 2, 3]
    )


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".tif"])
def test_several_channels(tmp_path: Path, suffix: str) -> None:
    array = image_array((5, 6, 7, 2))
    path = write_volume(tmp_path / f"scan{suffix}", array, oblique_affine())
    volume = read_volume(path, spacing=(1.0, 1.0, 1.0))
    assert volume.channels == 2
    assert volume.shape == (5, 6, 7)
    np.testing.assert_array_equal(volume.array, array)


def test_nifti_five_dimensional_vectors_are_channels(tmp_path: Path) -> None:
    """Some tools write channels as NIfTI vectors: (I, J, K, 1, C)."""
    array = image_array((5, 6, 7, 1, 3))
    path = tmp_path / "vectors.nii.gz"
    nib.save(nib.Nifti1Image(array, oblique_affine()), path)
    volume = read_volume(path)
    assert volume.array.shape == (5, 6, 7, 3)
    np.testing.assert_array_equal(volume.array, array[:, :, :, 0])


def test_nifti_scaling_is_applied_to_images(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.arange(210, dtype=np.int16).reshape(5, 6, 7), np.eye(4))
    image.header.set_slope_inter(2.0, -1000.0)
    nib.save(image, tmp_path / "ct.nii.gz")
    volume = read_volume(tmp_path / "ct.nii.gz")
    assert volume.array[0, 0, :3].tolist() == [-1000.0, -998.0, -996.0]


def test_tiff_stack_with_spacing(tmp_path: Path) -> None:
    array = image_array()
    path = write_volume(tmp_path / "stack.tif", array, np.eye(4))
    pages = tifffile.imread(path)
    assert pages.shape == (7, 6, 5)  # (Z, Y, X) pages
    volume = read_volume(path, spacing=(0.5, 0.6, 2.0))
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_array_equal(volume.affine, np.diag([0.5, 0.6, 2.0, 1.0]))
    assert volume.spacing == (0.5, 0.6, 2.0)


def test_tiff_stack_needs_spacing(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "stack.tiff", image_array(), np.eye(4))
    with names_file(path, "set data.spacing"):
        read_volume(path)
    with names_file(path, "data.spacing must be"):
        read_volume(path, spacing=(1.0, 0.0, 1.0))


def test_single_tiff_page_is_not_a_volume(tmp_path: Path) -> None:
    path = tmp_path / "page.tif"
    tifffile.imwrite(path, np.zeros((6, 7), np.uint8))
    with names_file(path, "single 2D image, not a volume"):
        read_volume(path, spacing=(1.0, 1.0, 1.0))


def test_labels(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 3, size=(5, 6, 7, 1))
    path = write_volume(tmp_path / "label.nii.gz", labels, oblique_affine())  # int64 in
    assert nib.load(path).get_data_dtype() == np.int32  # int64 NIfTI is poorly supported
    volume = read_label_volume(path, num_classes=3)
    assert volume.array.dtype == np.uint8
    np.testing.assert_array_equal(volume.array, labels[..., 0])
    check_pair(
        read_volume(write_volume(tmp_path / "image.nrrd", image_array(), oblique_affine())), volume
    )


def test_labels_stored_as_floats(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "label.mha", np.full((3, 3, 3), 300.0), np.eye(4))
    volume = read_label_volume(path)
    assert volume.array.dtype == np.uint16
    assert volume.array.max() == 300


def test_write_like_keeps_the_nifti_header(tmp_path: Path) -> None:
    """A prediction written like its image keeps the image's world (scanner) and none of its
    intensity scaling."""
    image = nib.Nifti1Image(np.zeros((5, 6, 7), np.int16), oblique_affine())
    image.header.set_slope_inter(2.0, -1000.0)
    image.set_sform(oblique_affine(), code="scanner")
    image.set_qform(oblique_affine(), code="scanner")
    image.header["descrip"] = b"from the scanner"
    nib.save(image, tmp_path / "image.nii.gz")
    like = read_volume(tmp_path / "image.nii.gz")
    prediction = np.ones((5, 6, 7), np.uint8)
    path = write_volume(tmp_path / "out" / "pred.nii.gz", prediction, like.affine, like=like)
    header = nib.load(path).header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (1, 1)
    assert header["descrip"].item() == b"from the scanner"
    assert header.get_data_dtype() == np.uint8
    volume = read_label_volume(path, num_classes=2)
    np.testing.assert_array_equal(volume.array, prediction)
    check_pair(like, volume)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".tif"])
def test_garbage_files(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"this is not a volume\n" * 40)
    with names_file(path, "cannot be read as a volume"):
        read_volume(path, spacing=(1.0, 1.0, 1.0))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_truncated_files(tmp_path: Path, suffix: str) -> None:
    path = write_volume(tmp_path / f"scan{suffix}", image_array((16, 16, 16)), np.eye(4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with names_file(path, "cannot be read as a volume"):
        read_volume(path)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with names_file(tmp_path / "absent.nii.gz", "file not found"):
        read_volume(tmp_path / "absent.nii.gz")
    path = tmp_path / "scan.png"
    path.write_bytes(b"")
    with names_file(path, r"unknown volume format; expected \.nii\.gz, \.nii, \.nrrd"):
        read_volume(path)
    with names_file(path, "unknown volume format"):
        write_volume(path, image_array(), np.eye(4))


def test_zero_length_axis(tmp_path: Path) -> None:
    path = tmp_path / "empty.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 0, 4), np.float32), np.eye(4)), path)
    with names_file(path, r"shape \(4, 0, 4\) has a zero-length axis"):
        read_volume(path)
    with names_file(path, "zero-length axis"):
        read_label_volume(path)


def test_non_finite_voxels(tmp_path: Path) -> None:
    array = image_array()
    array[0, 0, 0], array[1, 1, 1] = np.nan, np.inf
    path = write_volume(tmp_path / "scan.nii.gz", array, np.eye(4))
    with names_file(path, "2 voxels are NaN or infinite"):
        read_volume(path)


def test_label_errors(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "several.nii.gz", np.zeros((4, 4, 4, 2), np.uint8), np.eye(4))
    with names_file(path, r"label volume of shape \(4, 4, 4, 2\) is 4D"):
        read_label_volume(path)
    path = write_volume(tmp_path / "half.nrrd", np.full((4, 4, 4), 0.5, np.float32), np.eye(4))
    with names_file(path, r"non-integer values \(0\.5\)"):
        read_label_volume(path)
    labels = np.zeros((4, 4, 4), np.int16)
    labels[0, 0, :3] = [3, 7, -1]
    path = write_volume(tmp_path / "range.nii.gz", labels, np.eye(4))
    with names_file(path, r"label value\(s\) -1, 3, 7 outside the expected range 0\.\.2"):
        read_label_volume(path, num_classes=3)
    assert read_label_volume(path).array.dtype == np.int32  # negative: signed


def test_check_pair(tmp_path: Path) -> None:
    affine = oblique_affine()
    image = Volume(image_array(), affine, tmp_path / "image.nii.gz")
    label = Volume(np.zeros((5, 6, 7), np.uint8), affine + 1e-5, tmp_path / "label.nii.gz")
    check_pair(image, label)  # within float32 header precision
    short = Volume(np.zeros((5, 6, 6), np.uint8), affine, tmp_path / "short.nii.gz")
    with names_file(short.path, r"label shape \(5, 6, 6\) differs from image \(5, 6, 7\)"):
        check_pair(image, short)
    shifted = affine.copy()
    shifted[0, 3] += 0.5
    moved = Volume(np.zeros((5, 6, 7), np.uint8), shifted, tmp_path / "moved.nii.gz")
    with names_file(moved.path, "affines differ by up to 0.5 mm"):
        check_pair(image, moved)
