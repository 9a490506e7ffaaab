"""Volumes end to end: preprocessing and its inverse put predictions exactly where the labels
were (oblique, flipped, anisotropic affines), the cache is reused and rebuilt when it must be,
bad volumes are named, and the commands train, predict and evaluate NIfTI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, TINY_VOLUMES, run_cli
from folders import write_volume_dataset

from unet_lab.data.files import DataError
from unet_lab.data.volumes.folder import VolumeFolderDataModule, preprocess_arrays
from unet_lab.data.volumes.io import write_volume
from unet_lab.data.volumes.preprocessing import canonical_spacing, target_spacing
from unet_lab.inference.volumes import restore_geometry


def _affine(
    rotate_deg: float, zooms: tuple[float, ...], flips: tuple[int, ...], order: tuple[int, ...]
) -> np.ndarray:
    """A voxel -> RAS affine: axes permuted by ``order``, flipped, scaled, rotated about z."""
    angle = np.deg2rad(rotate_deg)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    axes = np.zeros((3, 3))
    for voxel_axis, world_axis in enumerate(order):
        axes[world_axis, voxel_axis] = flips[voxel_axis] * zooms[voxel_axis]
    affine = np.eye(4)
    affine[:3, :3] = rotation @ axes
    affine[:3, 3] = [12.0, -7.0, 3.0]
    return affine


GEOMETRIES = {
    "axial_oblique": _affine(20, (0.8, 0.8, 3.0), (1, -1, 1), (0, 1, 2)),
    "sagittal_flipped": _affine(0, (2.5, 0.9, 0.9), (-1, 1, -1), (2, 0, 1)),
    "permuted": _affine(-35, (1.0, 1.5, 0.7), (1, 1, -1), (1, 2, 0)),
}


def _labels(shape: tuple[int, int, int]) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[4:16, 5:15, 2:7] = 1
    labels[18:27, 16:27, 6:11] = 2
    return labels


@pytest.mark.parametrize("name", GEOMETRIES)
def test_predictions_land_where_the_labels_were(name: str) -> None:
    """A 'network' that predicts the preprocessed labels exactly gives back the file's labels
    voxel for voxel when no resampling is needed, and almost everywhere with resampling."""
    affine = GEOMETRIES[name]
    labels = _labels((30, 30, 12))
    image = (labels.astype(np.float32) * 50 + 10)[..., None]
    spacing = list(canonical_spacing(affine))
    for target, least in ((spacing, 1.0), ([1.0, 1.0, 1.0], 0.85)):
        settings = {
            "normalization": "mr",
            "target_spacing": target,
            "crop_nonzero": True,
            "file_spacing": None,
            "num_classes": 3,
        }
        _, truth, geometry = preprocess_arrays(image, labels, affine, settings, None)
        one_hot = np.stack([(truth == c).astype(np.float32) for c in range(3)])
        back = restore_geometry(one_hot, geometry).argmax(axis=0)
        assert back.shape == labels.shape
        for cls in (1, 2):
            both = ((back == cls) & (labels == cls)).sum()
            dice = 2 * both / ((back == cls).sum() + (labels == cls).sum())
            assert dice >= least, (name, target, cls, dice)


def test_target_spacing_follows_nnunet_for_thick_slices() -> None:
    assert target_spacing([[1, 1, 1], [1, 1, 1], [3, 1, 1]]) == (1.0, 1.0, 1.0)
    thick = [[5.0, 0.7, 0.7], [5.0, 0.8, 0.8], [3.0, 0.7, 0.7], [5.0, 0.7, 0.7]]
    assert target_spacing(thick) == (3.6, 0.7, 0.7)  # 10th percentile of the coarse axis


def _module(root: Path, cache: Path, **kwargs) -> VolumeFolderDataModule:
    return VolumeFolderDataModule(
        str(root), num_classes=3, cache_dir=str(cache), patch_size=[8, 16, 8], **kwargs
    )


def test_the_cache_is_reused_and_rebuilt_when_a_file_or_setting_changes(tmp_path: Path) -> None:
    root = write_volume_dataset(tmp_path / "data", count=5)
    first = _module(root, tmp_path / "cache")
    manifest = first.cache.folder / "manifest.json"
    written = manifest.stat().st_mtime_ns
    assert _module(root, tmp_path / "cache").cache.folder == first.cache.folder
    assert manifest.stat().st_mtime_ns == written  # reused, not rebuilt
    other = _module(root, tmp_path / "cache", normalization="none")
    assert other.cache.folder != first.cache.folder
    changed = root / "imagesTr" / "case_001.nii.gz"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    assert _module(root, tmp_path / "cache").cache.folder != first.cache.folder
    case = first.cases("train")[0]
    assert isinstance(case.image, np.memmap) and isinstance(case.label, np.memmap)  # not loaded
    record = first.split_record()
    assert sorted(record["train"] + record["val"]) == [f"case_{i:03d}" for i in range(5)]


@pytest.mark.parametrize(
    ("damage", "named", "message"),
    [
        ("shape", "labelsTr/case_002.nii.gz", "differs from image"),
        ("range", "labelsTr/case_002.nii.gz", "outside"),
        ("nan", "imagesTr/case_002.nii.gz", "NaN or infinite"),
        ("truncated", "imagesTr/case_002.nii.gz", "cannot be read"),
        ("channels", "imagesTr/case_002.nii.gz", "2 channel"),
    ],
)
def test_a_bad_volume_is_named_before_training(
    damage: str, named: str, message: str, tmp_path: Path
) -> None:
    root = write_volume_dataset(tmp_path / "data", count=4)
    image, label = root / "imagesTr" / "case_002.nii.gz", root / "labelsTr" / "case_002.nii.gz"
    affine = nib.load(label).affine
    if damage == "shape":
        write_volume(label, np.zeros((16, 20, 11), np.uint8), affine)
    elif damage == "range":
        write_volume(label, np.full((16, 20, 12), 7, np.uint8), affine)
    elif damage == "nan":
        write_volume(image, np.full((16, 20, 12), np.nan, np.float32), affine)
    elif damage == "channels":
        write_volume(image, np.zeros((16, 20, 12, 2), np.float32) + 1, affine)
    else:
        image.write_bytes(image.read_bytes()[:200])
    with pytest.raises(DataError, match=message) as error:
        _module(root, tmp_path / "cache")
    assert str(root / named) in str(error.value)
    if damage != "channels":  # a case that cannot be read leaves no half-built cache
        assert not list((tmp_path / "cache").glob("*/manifest.json"))


def _predict(model: Path, volume: Path, output: Path) -> None:
    """``predict.py`` as a user types it, from ``output``'s parent folder."""
    done = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), f"ckpt_path={model}", f"input={volume}",
         f"output={output}"],
        cwd=output.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_volumes_train_predict_and_evaluate_from_the_command_line(tmp_path: Path) -> None:
    root = write_volume_dataset(tmp_path / "data", count=6)
    run = tmp_path / "run"
    run_cli(
        ["data=volumes", f"data.root={root}", "data.num_classes=3", "data.patch_size=[8,16,8]",
         "data.samples_per_epoch=8", "trainer.max_epochs=2", "logger=csv", "model.width=4",
         "model.depth=2", f"hydra.run.dir={run}"],
        cwd=tmp_path,
    )  # fmt: skip
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed" and (run / "predictions.png").is_file()
    assert json.loads((run / "split.json").read_text())["cache"].startswith(str(tmp_path))
    ckpt = run / "checkpoints" / "last.ckpt"
    held = root / "imagesTr" / "case_000.nii.gz"
    _predict(ckpt, held, tmp_path / "masks")
    source, result = nib.load(held), nib.load(tmp_path / "masks" / "case_000.nii.gz")
    assert result.shape == source.shape and np.allclose(result.affine, source.affine)
    assert set(np.unique(np.asarray(result.dataobj))) <= {0, 1, 2}
    exported = tmp_path / "model.onnx"
    from unet_lab.commands import export

    export.main([f"ckpt_path={ckpt}", f"output={exported}"])
    _predict(exported, held, tmp_path / "onnx_masks")
    from_onnx = nib.load(tmp_path / "onnx_masks" / "case_000.nii.gz")
    assert np.array_equal(np.asarray(from_onnx.dataobj), np.asarray(result.dataobj))
    evaluated = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), f"ckpt_path={ckpt}", "split=val"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert "HD95 mm" in evaluated.stdout
    (report,) = (run / "eval").glob("val-*/metrics.json")
    assert json.loads(report.read_text())["images"] >= 1


@pytest.mark.slow
def test_synthetic3d_trains_a_3d_unet(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_cli(
        ["data=synthetic3d", "data.volume_shape=[8,16,16]", "data.patch_size=[8,16,16]",
         "data.train_size=4", "data.val_size=2", "data.test_size=2", "data.samples_per_epoch=4",
         "trainer.max_epochs=1", "model.depth=2", f"hydra.run.dir={run}"],  # W&B pictures too
        cwd=tmp_path,
    )  # fmt: skip
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed" and "hd95" in summary["test"]
    assert summary["model"]["class"] == "UNet"


def test_plan_check_data_and_show_aug_read_volumes(tmp_path: Path, capsys) -> None:
    from unet_lab.commands import check_data, export, plan, show_aug

    overrides = ["data=synthetic3d", *TINY_VOLUMES, "model.depth=2"]
    plan.main(overrides)
    printed = capsys.readouterr().out
    assert "input                 1 x 8 x 16 x 16" in printed and "training compute" in printed
    check_data.main(overrides)
    assert "sizes (DxHxW)" in capsys.readouterr().out
    picture = tmp_path / "augmented.png"
    show_aug.main(["--output", str(picture), "--samples", "2", *overrides])
    assert picture.stat().st_size > 1000
    model = tmp_path / "tiny3d.onnx"
    export.main([f"ckpt_path={_tiny_3d_checkpoint(tmp_path)}", f"output={model}"])
    sidecar = json.loads(model.with_suffix(".json").read_text())
    assert sidecar["spatial_dims"] == 3 and sidecar["max_abs_difference_vs_pytorch"] < 1e-4


def _tiny_3d_checkpoint(tmp_path: Path) -> Path:
    import torch

    from unet_lab.models import UNet
    from unet_lab.runs.checkpoints import CONFIG_KEY, DATA_KEY

    model = {"depth": 2, "width": 4, "spatial_dims": 3}
    net = UNet(in_channels=1, num_classes=2, **model)
    state = {
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        CONFIG_KEY: {
            "model": {"_target_": "unet_lab.models.UNet", "depth": 2, "width": 4, "spatial_dims": 3}
        },
        DATA_KEY: {
            "in_channels": 1,
            "class_names": ["background", "solid"],
            "normalization": {"mode": "none", "mean": None, "std": None},
        },
    }
    path = tmp_path / "tiny3d.ckpt"
    torch.save(state, path)
    return path


def test_one_process_builds_a_cache_the_others_wait_and_a_dead_builder_is_replaced(
    tmp_path: Path,
) -> None:
    import socket
    import threading

    from unet_lab.data.volumes.cache import LOCK, MANIFEST, VolumeCache

    def preprocess(name: str):
        return np.zeros((1, 2, 2, 2), np.float32), np.zeros((2, 2, 2), np.uint8), {"name": name}

    cache = VolumeCache(tmp_path / "cache")
    cache.folder.mkdir()
    (cache.folder / LOCK).write_text(f"{socket.gethostname()} {os.getpid()}")  # a live builder
    waiter = threading.Thread(target=cache.build, args=(["a"], preprocess, lambda _: {}, {}))
    waiter.start()
    waiter.join(timeout=1.5)
    assert waiter.is_alive()  # waiting for the other process's manifest
    (cache.folder / MANIFEST).write_text(json.dumps({"cases": ["a"]}))
    waiter.join(timeout=5)
    assert not waiter.is_alive() and cache.complete

    rebuilt = VolumeCache(tmp_path / "other")
    rebuilt.folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (rebuilt.folder / LOCK).write_text(f"{socket.gethostname()} {dead.pid}")  # killed builder
    rebuilt.build(["a", "b"], preprocess, lambda _: {}, {})
    assert rebuilt.manifest()["cases"] == ["a", "b"] and not (rebuilt.folder / LOCK).exists()


@pytest.mark.slow
def test_volumes_train_with_ddp(tmp_path: Path) -> None:
    """Two DDP processes (gloo on CPU): rank 0 builds the cache before the other starts."""
    root = write_volume_dataset(tmp_path / "data", count=10)  # 2 validation cases, 1 per rank
    run = tmp_path / "run"
    run_cli(
        ["trainer=ddp_cpu", "data=volumes", f"data.root={root}", "data.num_classes=3",
         "data.patch_size=[8,16,8]", "data.samples_per_epoch=8", "trainer.max_epochs=1",
         "logger=csv", "model.width=4", "model.depth=2", f"hydra.run.dir={run}"],
        cwd=tmp_path,
    )  # fmt: skip
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == 2
    assert len(list((tmp_path / "cache").glob("*/manifest.json"))) == 1
