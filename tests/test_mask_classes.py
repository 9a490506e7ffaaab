"""Overlapping classes given as one binary mask per class (``data.mask_classes``): a folder per
class or a channel per class, packed into label maps bit by bit, trained with a sigmoid each,
scored per class and predicted as one mask per class."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from conftest import run_cli, run_unet_lab

from unet_lab.arguments import InvalidArgumentError
from unet_lab.data.files import DataError
from unet_lab.data.folder import FolderDataModule
from unet_lab.data.mask_classes import MaskClasses
from unet_lab.data.volumes.io import write_volume

FAST = ["debug=fast", "logger=csv", "callbacks.validation_images=null"]
FAST += ["model.depth=2", "model.width=8", "test=false", "loss=regions"]
CLASSES = "data.mask_classes=[cell,nucleus]"


def _overlapping(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Two binary masks ``(2, *shape)`` that overlap: a box and a smaller box across its edge."""
    masks = np.zeros((2, *shape), bool)
    corner = [int(rng.integers(0, n // 2)) for n in shape]
    masks[0][tuple(slice(c, c + n // 2) for c, n in zip(corner, shape, strict=True))] = True
    inner = [c + n // 3 for c, n in zip(corner, shape, strict=True)]
    masks[1][tuple(slice(c, c + n // 3) for c, n in zip(inner, shape, strict=True))] = True
    return masks


def write_images(root: Path, layout: str, count: int = 8, size: int = 48) -> list[np.ndarray]:
    """``root/images`` and their masks, a folder per class (``layout="folders"``) or one
    two-channel TIFF per image (``"channels"``); returns the masks ``(2, H, W)``."""
    rng = np.random.default_rng(0)
    truths = []
    for i in range(count):
        masks = _overlapping(rng, (size, size))
        image = rng.normal(60, 8, (size, size)) + 90 * masks[0] + 60 * masks[1]
        name = f"img{i:02d}"
        (root / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / f"{name}.png"), np.clip(image, 0, 255).astype(np.uint8))
        if layout == "folders":
            for cls, mask in zip(("cell", "nucleus"), masks, strict=True):
                (root / "masks" / cls).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "masks" / cls / f"{name}.png"), mask.astype(np.uint8) * 255)
        else:
            (root / "masks").mkdir(parents=True, exist_ok=True)
            channels = np.moveaxis(masks, 0, -1).astype(np.uint8)  # (H, W, 2): samples
            tifffile.imwrite(
                root / "masks" / f"{name}.tif",
                channels,
                photometric="minisblack",
                planarconfig="contig",
            )
        truths.append(masks)
    return truths


def test_binary_masks_pack_into_bits_and_unpack_into_one_target_per_class(tmp_path: Path) -> None:
    classes = MaskClasses(["cell", "nucleus"], num_classes=3)
    cell = np.array([[1, 1, 0, 0]], np.uint8) * 255
    nucleus = np.array([[0, 1, 1, 0]], np.uint8)
    packed = classes.pack_masks([cell, nucleus], [tmp_path / "a.png", tmp_path / "b.png"])
    assert packed.tolist() == [[1, 3, 2, 0]]
    assert classes.value_names == ["background", "cell", "nucleus", "cell+nucleus"]
    targets = classes.regions.targets(torch.from_numpy(packed)[None])
    assert targets[0].tolist() == [[[1, 1, 0, 0]], [[0, 1, 1, 0]]]
    # Predicted masks paint back into the same packed values: nothing of the overlap is lost.
    np.testing.assert_array_equal(classes.regions.label_map(targets[0].numpy() > 0.5), packed)


@pytest.mark.parametrize("layout", ["folders", "channels"])
def test_both_layouts_read_the_masks_that_were_written(tmp_path: Path, layout: str) -> None:
    truths = write_images(tmp_path, layout, count=5)
    data = FolderDataModule(str(tmp_path), num_classes=3, mask_classes=["cell", "nucleus"])
    data.setup("fit")
    by_name = {}
    for split in ("train", "val"):
        _, labels = data.load_split(split)
        by_name.update({s[0]: m for s, m in zip(data.split[split], labels, strict=True)})
    assert len(by_name) == 5
    for i, masks in enumerate(truths):
        packed = by_name[f"img{i:02d}"]
        np.testing.assert_array_equal(packed & 1, masks[0])
        np.testing.assert_array_equal(packed >> 1 & 1, masks[1])
    assert data.regions is not None and data.regions.names == ["cell", "nucleus"]
    if layout == "folders":  # every class's file belongs to the data set (cache keys, hashes)
        assert tmp_path / "masks" / "nucleus" / "img03.png" in data.source_files()


def _first_error(tmp_path: Path, overrides: list[str]) -> str:
    done = run_cli(["data=folder", "data.root=data", *overrides, *FAST], tmp_path, check=False)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_mask_mistakes_name_the_file_or_key(tmp_path: Path) -> None:
    write_images(tmp_path / "data", "folders", count=4)
    done = run_cli(["data=folder", "data.root=data", "data.num_classes=3", CLASSES, *FAST[:-1]],
                   tmp_path, check=False)  # fmt: skip
    assert done.returncode == 2 and "data.mask_classes needs loss=regions" in done.stderr
    (tmp_path / "data" / "masks" / "nucleus" / "img02.png").unlink()
    error = _first_error(tmp_path, ["data.num_classes=3", CLASSES])
    assert "masks/nucleus/img02.png" in error and "not found" in error

    grey = np.full((48, 48), 7, np.uint8)
    grey[:4] = 200
    cv2.imwrite(str(tmp_path / "data" / "masks" / "nucleus" / "img02.png"), grey)
    error = _first_error(tmp_path, ["data.num_classes=3", CLASSES])
    assert "masks/nucleus/img02.png" in error and "'nucleus'" in error and "binary" in error

    error = _first_error(tmp_path, ["data.num_classes=2", CLASSES])
    assert "data.num_classes" in error and "3" in error
    error = _first_error(tmp_path, [CLASSES, "data.num_classes=3", "data.regions={a:[1]}"])
    assert "data.regions" in error


def test_a_mask_file_with_the_wrong_channel_count_is_named(tmp_path: Path) -> None:
    write_images(tmp_path / "data", "channels", count=4)
    error = _first_error(tmp_path, ["data.num_classes=4", "data.mask_classes=[a,b,c]"])
    assert "masks/img00.tif" in error and "2 channel(s)" in error


def test_images_with_a_mask_folder_per_class_train_score_and_predict(tmp_path: Path) -> None:
    write_images(tmp_path / "data", "folders")
    data = ["data=folder", "data.root=data", "data.num_classes=3", CLASSES]
    run_cli([*data, *FAST, "trainer.max_epochs=3", "hydra.run.dir=run"], tmp_path)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"dice", "dice_cell", "dice_nucleus"} <= set(summary["val"])
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"

    done = run_unet_lab(
        ["predict", f"ckpt_path={checkpoint}", "input=data/images", "output=out"], tmp_path
    )
    assert done.returncode == 0, done.stderr
    cell = cv2.imread(str(tmp_path / "out" / "img00_cell.png"), cv2.IMREAD_UNCHANGED)
    nucleus = cv2.imread(str(tmp_path / "out" / "img00_nucleus.png"), cv2.IMREAD_UNCHANGED)
    packed = cv2.imread(str(tmp_path / "out" / "img00.png"), cv2.IMREAD_UNCHANGED)
    assert cell.shape == nucleus.shape == packed.shape == (48, 48)
    assert set(np.unique(cell)) <= {0, 255}
    np.testing.assert_array_equal(packed & 1, cell > 0)  # the label map packs both classes
    np.testing.assert_array_equal(packed >> 1 & 1, nucleus > 0)

    scored = run_unet_lab(["eval", f"ckpt_path={checkpoint}", "split=val"], tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert "cell" in scored.stdout and "nucleus" in scored.stdout


def test_volumes_with_a_channel_per_class_predict_one_volume_per_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    affine = np.diag([0.8, -0.8, 2.0, 1.0])
    shape = (16, 20, 12)
    for i in range(4):
        masks = _overlapping(rng, shape)
        image = rng.normal(100, 10, shape) + 80 * masks[0] + 60 * masks[1]
        write_volume(
            tmp_path / "v" / "imagesTr" / f"case_{i}.nii.gz", image.astype(np.float32), affine
        )
        labels = np.moveaxis(masks, 0, -1).astype(np.uint8)  # (I, J, K, 2)
        write_volume(tmp_path / "v" / "labelsTr" / f"case_{i}.nii.gz", labels, affine)
    data = ["data=volumes", "data.root=v", "data.num_classes=3", CLASSES]
    data += ["data.patch_size=[8,16,16]", "data.samples_per_epoch=4", "data.cache_dir=cache"]
    run_cli([*data, *FAST, "hydra.run.dir=run"], tmp_path)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"dice_cell", "dice_nucleus"} <= set(summary["val"])
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"

    case = tmp_path / "v" / "imagesTr" / "case_0.nii.gz"
    done = run_unet_lab(
        ["predict", f"ckpt_path={checkpoint}", f"input={case}", "output=out"], tmp_path
    )
    assert done.returncode == 0, done.stderr
    for name in ("case_0.nii.gz", "case_0_cell.nii.gz", "case_0_nucleus.nii.gz"):
        written = nib.load(tmp_path / "out" / name)
        assert written.shape == shape
        np.testing.assert_allclose(written.affine, affine, atol=1e-5)

    scored = run_unet_lab(["eval", f"ckpt_path={checkpoint}", "split=val"], tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert "cell" in scored.stdout and "nucleus" in scored.stdout and "mm" in scored.stdout


def test_mask_classes_need_distinct_names(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="mask_classes"):
        MaskClasses(["a", "a"], num_classes=3)
    with pytest.raises(InvalidArgumentError, match="mask_classes"):
        MaskClasses([f"c{i}" for i in range(9)], num_classes=10)
    with pytest.raises(DataError, match="colour"):
        path = tmp_path / "c.png"
        cv2.imwrite(
            str(path),
            np.dstack(
                [
                    np.zeros((4, 4), np.uint8),
                    np.full((4, 4), 9, np.uint8),
                    np.zeros((4, 4), np.uint8),
                ]
            ),
        )
        MaskClasses(["a"], num_classes=2).read(path)
