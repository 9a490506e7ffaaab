"""Pairing images with their masks: by a naming rule (``21_training.tif`` + ``21_manual1.png``),
by channel numbers (``case_0000``), from a CSV list or a Decathlon dataset.json; and the errors,
each naming the file (equal stems and their errors: test_folder_data.py, test_bad_data.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from unet_lab.arguments import InvalidArgumentError
from unet_lab.data import DataError, FolderDataModule
from unet_lab.data.files import IMAGE_SUFFIXES
from unet_lab.data.pairing import Case, cases_from_list, find_cases

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd")
# DRIVE: images 21_training.tif, masks 21_manual1.png (FolderDataModule keyword arguments)
RETINA: dict[str, Any] = {"mask_name": "{id}_manual1", "image_pattern": r"(\d+)_training"}


def _write_pair(image: Path, mask: Path | None, index: int, channels: int = 1) -> None:
    """A dark 48x64 image with a bright 8x8 square where its mask is 1; the square's place and
    the image's brightness tell the pairs apart."""
    y, x = 4 + (index * 7) % 36, 4 + (index * 11) % 52
    labels = np.zeros((48, 64), np.uint8)
    labels[y : y + 8, x : x + 8] = 1
    for channel in range(channels):
        path = image if channels == 1 else image.with_name(f"{image.name[:-4]}_{channel:04d}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.where(labels > 0, 200, index + 10 * channel).astype(np.uint8))
    if mask is not None:
        mask.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(mask), labels)


def _assert_paired_by_content(dm: FolderDataModule, channels: int = 1) -> None:
    """Each loaded mask covers exactly its image's bright square."""
    for split in dm.split:
        images, masks = dm.load_split(split)
        for image, mask in zip(images, masks, strict=True):
            assert image.shape[2] == channels
            for channel in range(channels):
                assert np.array_equal(image[..., channel] == 200, mask == 1)


def _retina(root: Path, ids: range = range(21, 25)) -> Path:
    for i in ids:
        _write_pair(root / "images" / f"{i}_training.tif", root / "masks" / f"{i}_manual1.png", i)
    return root


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


# Naming rules ---------------------------------------------------------------------------------


def test_retina_masks_named_by_a_rule(tmp_path: Path) -> None:
    root = _retina(tmp_path)
    dm = FolderDataModule(str(root), num_classes=2, val_fraction=0.25, **RETINA)
    names = sorted(name for samples in dm.split.values() for name, _, _ in samples)
    assert names == ["21_training", "22_training", "23_training", "24_training"]
    for samples in dm.split.values():
        for name, images, mask in samples:
            assert images == (root / "images" / f"{name}.tif",)
            assert mask == root / "masks" / f"{name[:2]}_manual1.png"
    _assert_paired_by_content(dm)
    record = dm.split_record()
    assert sorted(record["train"] + record["val"]) == names


def test_a_named_id_group_and_the_id_as_the_mask_name(tmp_path: Path) -> None:
    for i in (1, 2):
        _touch(tmp_path / "images" / f"eye_{i}_training.png", tmp_path / "masks" / f"{i}.tif")
    cases = find_cases(
        tmp_path, "images", "masks", IMAGE_SUFFIXES, image_pattern=r"(\w+?)_(?P<id>\d+)_training"
    )
    assert [(c.name, c.label.name if c.label else None) for c in cases] == [
        ("eye_1_training", "1.tif"),
        ("eye_2_training", "2.tif"),
    ]


def test_split_folders_with_a_naming_rule(tmp_path: Path) -> None:
    _retina(tmp_path / "train", range(21, 25))
    _retina(tmp_path / "test", range(1, 3))
    dm = FolderDataModule(str(tmp_path), num_classes=2, val_fraction=0.25, **RETINA)
    assert [name for name, _, _ in dm.split["test"]] == ["1_training", "2_training"]
    _assert_paired_by_content(dm)


def test_image_not_matching_the_pattern(tmp_path: Path) -> None:
    root = _retina(tmp_path)
    odd = root / "images" / "notes_training.tif"
    _write_pair(odd, None, 3)
    with pytest.raises(DataError) as error:
        FolderDataModule(str(root), num_classes=2, **RETINA)
    message = str(error.value)
    assert message.startswith(f"{odd}: ") and "does not match image_pattern" in message
    assert "{id}_manual1" in message


def test_image_without_its_named_mask(tmp_path: Path) -> None:
    root = _retina(tmp_path)
    (root / "masks" / "22_manual1.png").unlink()
    with pytest.raises(DataError) as error:
        FolderDataModule(str(root), num_classes=2, **RETINA)
    message = str(error.value)
    assert message.startswith(f"{root / 'images' / '22_training.tif'}: image without a mask")
    assert "looked for 22_manual1." in message and "mask_name '{id}_manual1'" in message


def test_mask_matched_by_no_image(tmp_path: Path) -> None:
    root = _retina(tmp_path)
    extra = root / "masks" / "99_manual1.png"
    _write_pair(root / "other" / "x.png", extra, 1)
    with pytest.raises(DataError) as error:
        FolderDataModule(str(root), num_classes=2, **RETINA)
    assert str(error.value).startswith(f"{extra}: mask without an image in {root / 'images'}")
    assert len(str(error.value).splitlines()) == 1


def test_one_mask_for_two_images(tmp_path: Path) -> None:
    _touch(tmp_path / "images" / "21_a.png", tmp_path / "images" / "21_b.png")
    _touch(tmp_path / "masks" / "21.png")
    with pytest.raises(DataError) as error:
        find_cases(tmp_path, "images", "masks", IMAGE_SUFFIXES, image_pattern=r"(\d+)_\w")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'images' / '21_b.png'}: its mask 21.png")
    assert "21_a.png" in message


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"mask_name": "manual1"}, "mask_name='manual1' is not valid: expected a name with {id}"),
        ({"mask_name": "{id}_{site}"}, "mask_name='{id}_{site}' is not valid"),
        ({"mask_name": "{id"}, "mask_name='{id' is not valid"),
        ({"image_pattern": r"(\d+)_(\w+)"}, "(2 groups)"),
        ({"image_pattern": r"(\d+"}, "(missing ), unterminated subpattern"),
    ],
)
def test_bad_naming_rules(tmp_path: Path, rule: dict, expected: str) -> None:
    root = _retina(tmp_path, range(21, 23))
    with pytest.raises(InvalidArgumentError) as error:
        find_cases(root, "images", "masks", IMAGE_SUFFIXES, **rule)
    assert expected in str(error.value)


def test_equal_names_with_a_two_part_suffix(tmp_path: Path) -> None:
    _touch(tmp_path / "imagesTr" / "la_003.nii.gz", tmp_path / "labelsTr" / "la_003.nii.gz")
    _touch(tmp_path / "imagesTr" / "la_004.nii.gz", tmp_path / "labelsTr" / "la_004.nrrd")
    _touch(tmp_path / "imagesTr" / "notes.txt", tmp_path / "imagesTr" / "._la_003.nii.gz")
    cases = find_cases(tmp_path, "imagesTr", "labelsTr", VOLUME_SUFFIXES)
    assert cases == [
        Case(
            "la_003",
            (tmp_path / "imagesTr" / "la_003.nii.gz",),
            tmp_path / "labelsTr" / "la_003.nii.gz",
        ),
        Case(
            "la_004",
            (tmp_path / "imagesTr" / "la_004.nii.gz",),
            tmp_path / "labelsTr" / "la_004.nrrd",
        ),
    ]


# Channel numbers ------------------------------------------------------------------------------


def test_channel_suffix_makes_one_case_of_two_files(tmp_path: Path) -> None:
    images, labels = tmp_path / "imagesTr", tmp_path / "labelsTr"
    for case in ("brats_002", "brats_001"):
        _touch(images / f"{case}_0001.nii.gz", images / f"{case}_0000.nii.gz")
        _touch(labels / f"{case}.nii.gz")
    cases = find_cases(tmp_path, "imagesTr", "labelsTr", VOLUME_SUFFIXES, channel_suffix=True)
    assert [c.name for c in cases] == ["brats_001", "brats_002"]
    assert cases[0].images == (images / "brats_001_0000.nii.gz", images / "brats_001_0001.nii.gz")
    assert cases[0].label == labels / "brats_001.nii.gz"


def test_channel_suffix_on_pngs(tmp_path: Path) -> None:
    for i in range(3):
        _write_pair(tmp_path / "images" / f"cell{i}.png", tmp_path / "masks" / f"cell{i}.png", i, 2)
    cases = find_cases(tmp_path, "images", "masks", IMAGE_SUFFIXES, channel_suffix=True)
    assert [(c.name, [p.name for p in c.images], c.label) for c in cases] == [
        (
            f"cell{i}",
            [f"cell{i}_0000.png", f"cell{i}_0001.png"],
            tmp_path / "masks" / f"cell{i}.png",
        )
        for i in range(3)
    ]


@pytest.mark.parametrize(
    ("files", "named", "expected"),
    [
        (["a_0000", "a_0002", "b_0000", "b_0001"], "a", "has channels 0000, 0002; expected"),
        (["a_0000", "a_0001", "b_0000"], "b", "has 1 channel(s), but 'a' has 2"),
        (["a_0000", "b"], "b.nii.gz", "no channel number"),
    ],
)
def test_channel_suffix_errors(tmp_path: Path, files: list[str], named: str, expected: str) -> None:
    _touch(*(tmp_path / "imagesTr" / f"{name}.nii.gz" for name in files))
    _touch(tmp_path / "labelsTr" / "a.nii.gz", tmp_path / "labelsTr" / "b.nii.gz")
    with pytest.raises(DataError) as error:
        find_cases(tmp_path, "imagesTr", "labelsTr", VOLUME_SUFFIXES, channel_suffix=True)
    assert str(error.value).startswith(f"{tmp_path / 'imagesTr' / named}: ")
    assert expected in str(error.value)


# Lists ----------------------------------------------------------------------------------------


def test_a_csv_list_of_pairs(tmp_path: Path) -> None:
    rows = ["Image,Mask,notes"]
    for i in range(5):
        _write_pair(tmp_path / "scans" / f"s{i}.png", tmp_path / "labels" / f"seg_{9 - i}.png", i)
        rows.append(f"scans/s{i}.png,labels/seg_{9 - i}.png,scanned {i}")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "pairs.csv").write_text("\n".join(rows) + "\n\n")
    dm = FolderDataModule(str(tmp_path), num_classes=2, pairs="lists/pairs.csv")
    names = sorted(name for samples in dm.split.values() for name, _, _ in samples)
    assert names == ["s0", "s1", "s2", "s3", "s4"]
    for samples in dm.split.values():
        for name, _, mask in samples:
            assert mask.name == f"seg_{9 - int(name[1])}.png"
    _assert_paired_by_content(dm)
    absolute = FolderDataModule(str(tmp_path), 2, pairs=str(tmp_path / "lists" / "pairs.csv"))
    assert absolute.split == dm.split


def test_a_csv_list_with_channel_columns_and_a_label_column(tmp_path: Path) -> None:
    for i in range(4):
        _write_pair(tmp_path / f"c{i}.png", tmp_path / f"c{i}_mask.png", i, channels=2)
    rows = [f"c{i}_0000.png,c{i}_0001.png,c{i}_mask.png" for i in range(4)]
    (tmp_path / "pairs.csv").write_text("\n".join(["image,image1,label", *rows]))
    cases = cases_from_list(tmp_path, tmp_path / "pairs.csv", IMAGE_SUFFIXES)
    assert cases[1] == Case(
        "c1_0000", (tmp_path / "c1_0000.png", tmp_path / "c1_0001.png"), tmp_path / "c1_mask.png"
    )
    dm = FolderDataModule(str(tmp_path), num_classes=2, pairs="pairs.csv")
    assert dm.in_channels == 2
    _assert_paired_by_content(dm, channels=2)


def _decathlon(root: Path, channels: int, count: int = 4) -> Path:
    training = []
    for i in range(count):
        image = root / "imagesTr" / f"hippocampus_{i:03d}.png"
        _write_pair(image, root / "labelsTr" / image.name, i, channels)
        training.append({"image": f"./imagesTr/{image.name}", "label": f"./labelsTr/{image.name}"})
    listing = root / "dataset.json"
    listing.write_text(json.dumps({"name": "Hippocampus", "training": training, "test": []}))
    return listing


@pytest.mark.parametrize("channels", [1, 2], ids=["as listed", "split into _0000 _0001"])
def test_a_decathlon_dataset_json(tmp_path: Path, channels: int) -> None:
    _decathlon(tmp_path, channels)
    dm = FolderDataModule(str(tmp_path), num_classes=2, pairs="dataset.json")
    assert dm.in_channels == channels
    names = sorted(name for samples in dm.split.values() for name, _, _ in samples)
    assert names == [f"hippocampus_{i:03d}" for i in range(4)]
    _assert_paired_by_content(dm, channels)


def test_a_dataset_json_of_volumes_split_into_channels(tmp_path: Path) -> None:
    images = tmp_path / "imagesTr"
    _touch(images / "la_001_0000.nii.gz", images / "la_001_0001.nii.gz")
    _touch(images / "la_002.nii.gz", tmp_path / "labelsTr" / "la_001.nii.gz")
    training: list[dict[str, Any]] = [
        {"image": "./imagesTr/la_001.nii.gz", "label": "./labelsTr/la_001.nii.gz"},
        {"image": ["./imagesTr/la_002.nii.gz"], "label": None},
    ]
    (tmp_path / "dataset.json").write_text(json.dumps({"training": training}))
    with pytest.raises(DataError, match="has 1 image file"):
        cases_from_list(tmp_path, tmp_path / "dataset.json", VOLUME_SUFFIXES)
    training[1]["image"] = ["./imagesTr/la_002.nii.gz", "./imagesTr/la_002.nii.gz"]
    (tmp_path / "dataset.json").write_text(json.dumps({"training": training}))
    cases = cases_from_list(tmp_path, tmp_path / "dataset.json", VOLUME_SUFFIXES)
    assert cases[0] == Case(
        "la_001",
        (images / "la_001_0000.nii.gz", images / "la_001_0001.nii.gz"),
        tmp_path / "labelsTr" / "la_001.nii.gz",
    )
    assert cases[1].name == "la_002" and cases[1].label is None


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_listed_files_that_are_missing(tmp_path: Path, kind: str) -> None:
    if kind == "json":
        listing = _decathlon(tmp_path, 1)
        missing = tmp_path / "imagesTr" / "hippocampus_002.png"
    else:
        _retina(tmp_path)
        listing = tmp_path / "pairs.csv"
        listing.write_text(
            "image,mask\nimages/21_training.tif,masks/21_manual1.png\n"
            "images/22_training.tif,masks/22_manual.png\n"
        )
        missing = tmp_path / "masks" / "22_manual.png"
    missing.unlink(missing_ok=True)
    with pytest.raises(DataError) as error:
        FolderDataModule(str(tmp_path), num_classes=2, pairs=listing.name)
    message = str(error.value)
    assert message.startswith(f"{missing}: file not found") and str(listing) in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("images/21_training.tif,masks/21_manual1.png\n", "no image column in the first line"),
        ("image,mask,label\nimages/21_training.tif,masks/21_manual1.png,\n", "both a mask"),
        ("image,image2,mask\n", "image columns for channels [0, 2]"),
        ("image,mask\n,masks/21_manual1.png\n", "line 2: no file in the image column"),
        ("", "empty"),
    ],
)
def test_malformed_csv_lists(tmp_path: Path, text: str, expected: str) -> None:
    _retina(tmp_path)
    (tmp_path / "pairs.csv").write_text(text)
    with pytest.raises(DataError) as error:
        cases_from_list(tmp_path, tmp_path / "pairs.csv", IMAGE_SUFFIXES)
    assert str(error.value).startswith(f"{tmp_path / 'pairs.csv'}") and expected in str(error.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "cannot be read as JSON"),
        ('{"name": "x"}', "no training list"),
        ('{"training": [{"label": "./labelsTr/a.png"}]}', "training[0] is"),
        ('{"training": ["./imagesTr/a.png"]}', "training[0] is"),
    ],
)
def test_malformed_dataset_json(tmp_path: Path, content: str, expected: str) -> None:
    (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(DataError) as error:
        cases_from_list(tmp_path, tmp_path / "dataset.json", IMAGE_SUFFIXES)
    assert str(error.value).startswith(f"{tmp_path / 'dataset.json'}: ")
    assert expected in str(error.value)


def test_list_not_found_or_of_another_kind(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"pairs\.csv: list of image/mask pairs not found"):
        FolderDataModule(str(tmp_path), num_classes=2, pairs="pairs.csv")
    (tmp_path / "pairs.txt").write_text("image,mask\n")
    with pytest.raises(DataError, match=r"pairs\.txt: a list of image/mask pairs is a \.csv"):
        cases_from_list(tmp_path, tmp_path / "pairs.txt", IMAGE_SUFFIXES)


def test_case_names_must_be_unique(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "x.png", tmp_path / "b" / "x.tif", tmp_path / "m1.png")
    _touch(tmp_path / "m2.png")
    (tmp_path / "pairs.csv").write_text("image,mask\na/x.png,m1.png\nb/x.tif,m2.png\n")
    with pytest.raises(DataError) as error:
        cases_from_list(tmp_path, tmp_path / "pairs.csv", IMAGE_SUFFIXES)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'b' / 'x.tif'}: its case name 'x'")
    assert str(tmp_path / "a" / "x.png") in message


def test_a_listed_image_without_a_mask_cannot_train(tmp_path: Path) -> None:
    _retina(tmp_path)
    (tmp_path / "pairs.csv").write_text("image,mask\nimages/21_training.tif,\n")
    with pytest.raises(DataError, match=r"21_training\.tif: listed without a mask in .*pairs\.csv"):
        FolderDataModule(str(tmp_path), num_classes=2, pairs="pairs.csv")


def test_a_list_is_not_combined_with_a_naming_rule(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="mask_name"):
        FolderDataModule(str(tmp_path), num_classes=2, pairs="pairs.csv", mask_name="{id}_m")
