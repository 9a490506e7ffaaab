"""The folder data module: layouts, formats, label mappings and splits (bad data:
test_bad_data.py)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from folders import write_dataset

from unet_lab.data import DataError, FolderDataModule


def _dm(root: Path, **kwargs) -> FolderDataModule:
    return FolderDataModule(root=str(root), **{"num_classes": 3, **kwargs})


def test_rgb_jpeg_images_with_png_masks_of_varying_sizes(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, count=8, sizes=[(40, 56), (64, 48), (50, 50)], image_ext=".jpg")
    dm = _dm(root, batch_size=4)
    assert dm.in_channels == 3 and dm.sizes_vary and dm.patch_size == 32
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32)
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[0] == 1  # whole images of different sizes, one at a time


def test_grayscale_16_bit_tiffs(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, channels=1, dtype=np.uint16, image_ext=".tif", mask_ext=".tif")
    dm = _dm(root)
    assert dm.in_channels == 1
    image = dm.load_split("train")[0][0]
    assert image.dtype == np.uint16 and image.max() > 255


def test_binary_masks_stored_as_0_255(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, num_classes=2, mask_scale=255)
    masks = _dm(root, num_classes=2).load_split("train")[1]
    assert set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist()) == {0, 1}


def test_mask_values_and_ignore_index(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, num_classes=3, mask_scale=100)  # stored 0, 100, 200
    mask = cv2.imread(str(root / "masks" / "img00.png"), cv2.IMREAD_UNCHANGED)
    mask[:2] = 250
    cv2.imwrite(str(root / "masks" / "img00.png"), mask)
    dm = _dm(root, mask_values=[0, 100, 200], ignore_index=250, val_fraction=0.5)
    masks = dm.load_split("train")[1] + dm.load_split("val")[1]
    assert set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist()) == {0, 1, 2, 250}


def test_colour_masks_through_a_palette(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, num_classes=3)
    palette = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    for path in (root / "masks").iterdir():
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        rgb = np.array(palette, np.uint8)[labels]
        cv2.imwrite(str(path), rgb[..., ::-1])
    masks = _dm(root, palette=palette).load_split("train")[1]
    assert set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist()) == {0, 1, 2}
    with pytest.raises(DataError, match=r"img\d\d.png: colours"):
        _dm(root, palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0]])
    with pytest.raises(DataError, match=r"colour mask; give data\.palette"):
        _dm(root)


def test_splits_by_fraction_are_seeded_and_disjoint(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, count=10)
    a = _dm(root, val_fraction=0.2, test_fraction=0.2, seed=1).split
    b = _dm(root, val_fraction=0.2, test_fraction=0.2, seed=1).split
    c = _dm(root, val_fraction=0.2, test_fraction=0.2, seed=2).split
    assert a == b and a != c
    stems = [{s for s, _, _ in a[name]} for name in ("train", "val", "test")]
    assert [len(s) for s in stems] == [6, 2, 2]
    assert set.union(*stems) == {f"img{i:02d}" for i in range(10)}


def test_k_fold_validation_sets_cover_every_image_once(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, count=10)
    folds = [_dm(root, folds=5, fold=k).split for k in range(5)]
    val_stems = [stem for split in folds for stem, _, _ in split["val"]]
    assert sorted(val_stems) == [f"img{i:02d}" for i in range(10)]
    for split in folds:
        assert not {s for s, _, _ in split["val"]} & {s for s, _, _ in split["train"]}


def test_given_split_folders_and_the_split_record(tmp_path: Path) -> None:
    for split in ("train", "val"):
        write_dataset(tmp_path / split, count=3)
    dm = _dm(tmp_path)
    assert not dm.has_split("test")
    record = dm.split_record()
    assert record["val"] == ["img00", "img01", "img02"] and "test" not in record
    assert record["root"] == str(tmp_path.resolve()) and record["seed"] == dm.seed
    assert not list(tmp_path.rglob("split.json"))  # the data module writes no files


@pytest.mark.parametrize(("share", "low", "high"), [(1.0, 0.99, 1.0), (0.0, 0.0, 0.6)])
def test_foreground_oversampling(tmp_path: Path, share: float, low: float, high: float) -> None:
    """Small objects in big images: patches hit them always (1.0) or by chance (0.0)."""
    root = write_dataset(tmp_path, count=4, sizes=[(128, 128)], num_classes=2)
    dm = _dm(root, num_classes=2, patch_size=16, foreground_oversample=share, val_fraction=0.25)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    hits = [bool(dataset[i % len(dataset)]["mask"].any()) for i in range(300)]
    assert low <= sum(hits) / len(hits) <= high


# How a TIFF stores five channels: as samples of each pixel, interleaved (YXS) or in planes
# (SYX), or as pages that ImageJ or OME metadata mark as channels (CYX).
CHANNEL_LAYOUTS: dict[str, dict] = {
    "interleaved": {"photometric": "minisblack", "planarconfig": "contig"},
    "planes": {"photometric": "minisblack", "planarconfig": "separate"},
    "imagej channels": {"imagej": True, "metadata": {"axes": "CYX"}},
    "ome channels": {"ome": True, "metadata": {"axes": "CYX"}},
}


@pytest.mark.parametrize("layout", CHANNEL_LAYOUTS)
def test_tiffs_with_more_channels_than_opencv_reads(tmp_path: Path, layout: str) -> None:
    """Five 16-bit channels, in any layout that says they are channels; OpenCV would misread
    them all."""
    root = write_dataset(tmp_path, count=4, channels=1, num_classes=2)
    rng = np.random.default_rng(0)
    stored = {}
    for path in sorted((root / "images").iterdir()):
        image = rng.integers(0, 65535, (48, 64, 5), dtype=np.uint16)
        path.unlink()
        written = image if layout == "interleaved" else np.moveaxis(image, -1, 0)
        tifffile.imwrite(path.with_suffix(".tif"), written, **CHANNEL_LAYOUTS[layout])
        stored[path.stem] = image
    dm = _dm(root, num_classes=2, val_fraction=0.25)
    assert dm.in_channels == 5
    for (stem, _, _), image in zip(dm.split["train"], dm.load_split("train")[0], strict=True):
        assert np.array_equal(image, stored[stem])


def test_samples_per_epoch_draws_several_patches_per_image(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, count=5, sizes=[(64, 64)], num_classes=2)
    dm = _dm(root, num_classes=2, patch_size=32, samples_per_epoch=40, batch_size=8)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 40 and len(dm.train_dataloader()) == 5
    assert len(dm.datasets["val"]) == 1  # evaluation still sees each image once
    with pytest.raises(ValueError, match="samples_per_epoch"):
        _dm(root, num_classes=2, samples_per_epoch=0)


def test_a_naming_rule_that_names_masks_by_stem_pairs_as_by_default(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, count=5)
    by_rule = _dm(root, mask_name="{id}", image_pattern=r"(img\d+)").split
    assert by_rule == _dm(root).split
    assert by_rule["val"][0][1] == (root / "images" / f"{by_rule['val'][0][0]}.png",)


def test_a_list_of_pairs_takes_only_the_listed_files(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, count=6)
    write_dataset(root / "train", count=3)  # a list replaces the folder layouts
    rows = [f"images/img{i:02d}.png,masks/img{i:02d}.png" for i in (0, 2, 3, 5)]
    (root / "pairs.csv").write_text("\n".join(["image,mask", *rows]))
    dm = _dm(root, pairs="pairs.csv", val_fraction=0.25)
    assert sorted(s for split in dm.split.values() for s, _, _ in split) == [
        "img00",
        "img02",
        "img03",
        "img05",
    ]
    assert dm.in_channels == 3


def test_channel_files_of_different_sizes(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, count=4, channels=1)
    training = []
    for i in range(4):
        image = root / "images" / f"img{i:02d}.png"
        extra = np.zeros((40, 40) if i == 2 else (48, 64), np.uint8)
        cv2.imwrite(str(image.with_name(f"img{i:02d}_0001.png")), extra)
        image.rename(image.with_name(f"img{i:02d}_0000.png"))
        training.append({"image": f"images/{image.name}", "label": f"masks/{image.name}"})
    (root / "dataset.json").write_text(json.dumps({"training": training}))
    with pytest.raises(DataError) as error:
        _dm(root, pairs=str(root / "dataset.json"))
    message = str(error.value)
    assert message.startswith(f"{root / 'images' / 'img02_0001.png'}: 40x40 uint8, but the first")
    assert "img02_0000.png is 64x48" in message
