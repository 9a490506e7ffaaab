"""A corpus of damaged or inconsistent data sets: each fails while the data module is built
(before anything trains) with a message naming the file or folder and what is wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from conftest import run_cli
from folders import write_dataset

from unet_lab.data import DataError, FolderDataModule

# A damage writes into a fresh 6-image data set (3 classes, 48x64 RGB PNGs with PNG masks,
# img00..img05) and returns the file or folder the error must name.
Damage = Callable[[Path], Path]


def _image(root: Path, index: int) -> Path:
    return root / "images" / f"img{index:02d}.png"


def _mask(root: Path, index: int) -> Path:
    return root / "masks" / f"img{index:02d}.png"


def _replace(path: Path, suffix: str) -> Path:
    """Removes ``path`` and returns its name with another suffix (to write in its place)."""
    path.unlink()
    return path.with_suffix(suffix)


def no_mask(root: Path) -> Path:
    _mask(root, 1).unlink()
    return _image(root, 1)


def no_image(root: Path) -> Path:
    _image(root, 1).unlink()
    return _mask(root, 1)


def no_masks_folder(root: Path) -> Path:
    for path in (root / "masks").iterdir():
        path.unlink()
    (root / "masks").rmdir()
    return root / "masks"


def empty_images_folder(root: Path) -> Path:
    for path in (root / "images").iterdir():
        path.unlink()
    return root / "images"


def zero_bytes(root: Path) -> Path:
    _mask(root, 1).write_bytes(b"")
    return _mask(root, 1)


def truncated_png(root: Path) -> Path:
    path = _image(root, 2)
    path.write_bytes(path.read_bytes()[:40])
    return path


def truncated_jpeg(root: Path) -> Path:
    image = cv2.imread(str(_image(root, 2)))
    path = _replace(_image(root, 2), ".jpg")
    cv2.imwrite(str(path), image)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # OpenCV decodes it anyway
    return path


def text_with_image_extension(root: Path) -> Path:
    _image(root, 3).write_text("not an image")
    return _image(root, 3)


def jpeg_named_tif(root: Path) -> Path:
    image = cv2.imread(str(_image(root, 3)))
    path = _replace(_image(root, 3), ".tif")
    _, encoded = cv2.imencode(".jpg", image)
    path.write_bytes(encoded.tobytes())
    return path


def two_files_one_stem(root: Path) -> Path:
    cv2.imwrite(str(_image(root, 4).with_suffix(".bmp")), cv2.imread(str(_image(root, 4))))
    return _image(root, 4)  # named in full; the other (img04.bmp) by its name


def size_mismatch(root: Path) -> Path:
    cv2.imwrite(str(_mask(root, 3)), np.zeros((10, 10), np.uint8))
    return _mask(root, 3)


def values_outside_the_classes(root: Path) -> Path:
    cv2.imwrite(str(_mask(root, 4)), np.full((48, 64), 7, np.uint8))
    return _mask(root, 4)


def negative_labels(root: Path) -> Path:
    path = _replace(_mask(root, 4), ".tif")
    tifffile.imwrite(path, np.full((48, 64), -1, np.int16))
    return path


def fractional_labels(root: Path) -> Path:
    path = _replace(_mask(root, 4), ".tif")
    tifffile.imwrite(path, np.full((48, 64), 0.5, np.float32))
    return path


def jpeg_mask(root: Path) -> Path:
    labels = cv2.imread(str(_mask(root, 1)), cv2.IMREAD_UNCHANGED)
    path = _replace(_mask(root, 1), ".jpg")
    cv2.imwrite(str(path), labels)  # lossy: edges get values between the labels
    return path


def colour_mask_without_palette(root: Path) -> Path:
    colours = np.zeros((48, 64, 3), np.uint8)
    colours[:10, :10] = (0, 0, 255)
    cv2.imwrite(str(_mask(root, 5)), colours)
    return _mask(root, 5)


def grey_image_among_rgb(root: Path) -> Path:
    cv2.imwrite(str(_image(root, 5)), np.zeros((48, 64), np.uint8))
    return _image(root, 5)


def _float_tiff_images(root: Path, bad_value: float) -> Path:
    """All images as float32 TIFFs on [0, 1]; one pixel of img02 set to ``bad_value``."""
    for index in range(6):
        image = cv2.imread(str(_image(root, index)))[..., ::-1].astype(np.float32) / 255
        if index == 2:
            image[5, 5, 0] = bad_value
        tifffile.imwrite(_replace(_image(root, index), ".tif"), image, photometric="rgb")
    return _image(root, 2).with_suffix(".tif")


def nan_in_float_tiff(root: Path) -> Path:
    return _float_tiff_images(root, np.nan)


def infinity_in_float_tiff(root: Path) -> Path:
    return _float_tiff_images(root, np.inf)


def tiff_with_two_extra_axes(root: Path) -> Path:
    path = _replace(_image(root, 1), ".tif")
    tifffile.imwrite(path, np.zeros((2, 3, 48, 64), np.uint8), photometric="minisblack")
    return path


def _three_pages(root: Path, **layout) -> Path:
    """img01 as a stack of three 48x64 pages: as many as the other images have channels, so
    that read as channels the stack would pass unnoticed."""
    path = _replace(_image(root, 1), ".tif")
    tifffile.imwrite(path, np.zeros((3, 48, 64), np.uint8), **layout)
    return path


def z_stack_tiff(root: Path) -> Path:
    return _three_pages(root, imagej=True, metadata={"axes": "ZYX"})


def tiff_pages_without_metadata(root: Path) -> Path:
    return _three_pages(root, photometric="minisblack", metadata=None)  # tifffile: axes IYX


def tiff_pages_of_an_unnamed_axis(root: Path) -> Path:
    return _three_pages(root, photometric="minisblack")  # tifffile's default: axes QYX


def tiff_pages_written_one_by_one(root: Path) -> Path:
    """Three RGB pages, each its own series: OpenCV would read the first one."""
    path = _replace(_image(root, 1), ".tif")
    with tifffile.TiffWriter(path) as tiff:
        for _ in range(3):
            tiff.write(np.zeros((48, 64, 3), np.uint8), photometric="rgb")
    return path


def all_ignore_mask(root: Path) -> Path:
    cv2.imwrite(str(_mask(root, 2)), np.full((48, 64), 255, np.uint8))
    return _mask(root, 2)


def too_few_images(root: Path) -> Path:
    for index in range(1, 6):
        _image(root, index).unlink()
        _mask(root, index).unlink()
    return root


def split_folder_without_train(root: Path) -> Path:
    (root / "val").mkdir()
    for folder in ("images", "masks"):
        (root / folder).rename(root / "val" / folder)
    return root / "train"


# (damage, extra data settings, what the message says)
CORPUS: list[tuple[Damage, dict, str]] = [
    (no_mask, {}, "image without a mask"),
    (no_image, {}, "mask without an image"),
    (no_masks_folder, {}, "folder not found"),
    (empty_images_folder, {}, "no images"),
    (zero_bytes, {}, "cannot be read as an image"),
    (truncated_png, {}, "cannot be read as an image"),
    (truncated_jpeg, {}, "truncated JPEG"),
    (text_with_image_extension, {}, "cannot be read as an image"),
    (jpeg_named_tif, {}, "cannot be read as a TIFF image: not a TIFF file"),
    (two_files_one_stem, {}, "two files share the name 'img04' (img04.bmp)"),
    (size_mismatch, {}, "mask is 10x10 but its image img03.png is 64x48"),
    (values_outside_the_classes, {}, "mask values [7] are not classes"),
    (negative_labels, {}, "mask values [-1] are not classes"),
    (fractional_labels, {}, "mask values [0.5] are not classes"),
    (jpeg_mask, {}, "a JPEG mask: its compression changes label values"),
    (colour_mask_without_palette, {}, "a colour mask; give data.palette"),
    (grey_image_among_rgb, {}, "1 channels, but"),
    (nan_in_float_tiff, {}, "NaN or infinite pixel value"),
    (infinity_in_float_tiff, {}, "NaN or infinite pixel value"),
    (tiff_with_two_extra_axes, {}, "TIFF of shape (2, 3, 48, 64)"),
    (z_stack_tiff, {}, "multi-page TIFF stack (3 pages, axes ZYX)"),
    (tiff_pages_without_metadata, {}, "multi-page TIFF stack (3 pages, axes IYX)"),
    (tiff_pages_of_an_unnamed_axis, {}, "multi-page TIFF stack (3 pages, axes QYX)"),
    (tiff_pages_written_one_by_one, {}, "multi-page TIFF stack (3 pages, axes IYXS)"),
    (all_ignore_mask, {"ignore_index": 255}, "every pixel is ignore_index (255)"),
    (too_few_images, {}, "no images left for the train split"),
    (split_folder_without_train, {}, "folder not found next to ['val']"),
]


@pytest.mark.parametrize(
    ("damage", "settings", "expected"), CORPUS, ids=[c[0].__name__ for c in CORPUS]
)
def test_damaged_data_fails_naming_the_file(
    tmp_path: Path, damage: Damage, settings: dict, expected: str
) -> None:
    root = write_dataset(tmp_path / "data", count=6)
    named = damage(root)
    with pytest.raises(DataError) as error:
        FolderDataModule(root=str(root), num_classes=3, **settings)
    message = str(error.value)
    assert str(named) in message
    assert expected in message


def test_palette_masks_with_an_unknown_colour(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", count=4)
    palette = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    for path in (root / "masks").iterdir():
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(path), np.array(palette, np.uint8)[labels][..., ::-1])
    odd = root / "masks" / "img02.png"
    colours = cv2.imread(str(odd))
    colours[:3, :3] = (0, 255, 0)  # green, not in the palette
    cv2.imwrite(str(odd), colours)
    with pytest.raises(DataError, match=r"img02\.png: colours \[\(0, 255, 0\)\] are not in"):
        FolderDataModule(root=str(root), num_classes=3, palette=palette)


def test_what_is_not_damage_is_accepted(tmp_path: Path) -> None:
    """Hidden files (macOS ``._name.png`` copies), folders and other files are skipped; a blank
    image and one smaller than the others are data."""
    root = write_dataset(tmp_path / "data", count=6)
    (root / "images" / "._img01.png").write_bytes(b"\x00\x05\x16\x07")
    (root / "images" / ".DS_Store").write_bytes(b"\x00")
    (root / "images" / "notes.txt").write_text("scanned 2026-11")
    (root / "masks" / "extra.png").mkdir()
    cv2.imwrite(str(_image(root, 1)), np.zeros((48, 64, 3), np.uint8))
    cv2.imwrite(str(_image(root, 4)), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(_mask(root, 4)), np.zeros((8, 8), np.uint8))
    dm = FolderDataModule(root=str(root), num_classes=3, patch_size=32, batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (3, 32, 32) and batch["image"].isfinite().all()


def test_training_on_bad_data_stops_before_the_run_starts(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", count=6)
    named = nan_in_float_tiff(root)
    result = run_cli(
        ["data=folder", f"data.root={root}", "data.num_classes=3", "logger=csv"],
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(named) in errors[0], result.stderr
    assert not list(tmp_path.glob("runs/*/*")), "a failed start left a run folder behind"
