"""Every augmentation preset builds from its YAML, keeps mask labels exact and can be edited."""

from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, compose_config

from unet_lab.commands.show_aug import augmentation_grid
from unet_lab.config.compose import instantiate
from unet_lab.data import compose
from unet_lab.data.augmentation import random_state, seed_pipeline, set_random_state
from unet_lab.data.dataset import as_unit_float
from unet_lab.data.shapes import render_shapes
from unet_lab.data.synthetic import SyntheticShapesDataModule
from unet_lab.data.transforms import CoarseGridElastic
from unet_lab.training.build import build_datamodule
from unet_lab.training.callbacks import RandomStateInCheckpoint

# The 2D presets (the volume_* ones are 3D pipelines: tests/test_volume_augmentation.py).
PRESETS = sorted(
    p.stem
    for p in (REPO / "conf" / "augmentation").glob("*.yaml")
    if not p.stem.startswith("volume_")
)


def _pipelines(tmp_path: Path, overrides: list[str]):
    cfg = compose_config(tmp_path, overrides)
    return {s: instantiate(cfg.augmentation[s], f"augmentation.{s}") for s in ("train", "eval")}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_presets_keep_labels_and_sizes(preset: str, dtype, tmp_path: Path) -> None:
    pipelines = _pipelines(tmp_path, [f"augmentation={preset}"])
    for index in range(6):
        image, mask = render_shapes(np.random.default_rng(index), 64, 1, 6, 6, 0.05)
        image = image.astype(dtype) * (257 if dtype == np.uint16 else 1)
        out = pipelines["train"](image=as_unit_float(image), mask=mask)  # as the dataset does
        assert out["image"].shape[:2] == (64, 64) and out["mask"].shape == (64, 64)
        assert out["image"].dtype == np.float32
        assert set(np.unique(out["mask"]).tolist()) <= set(range(6))
    assert len(pipelines["eval"].transforms) == 0  # evaluation sees the data as it is


def test_presets_build_on_each_other(tmp_path: Path) -> None:
    names = {
        p: list(_pipelines(tmp_path, [f"augmentation={p}"])["train"].transforms)
        for p in ("light", "medium", "heavy")
    }
    assert len(names["light"]) < len(names["medium"]) < len(names["heavy"])


def test_a_transform_can_be_changed_or_switched_off(tmp_path: Path) -> None:
    changed = _pipelines(
        tmp_path,
        [
            "augmentation=heavy",
            "augmentation.train.transforms.blur.p=1",
            "augmentation.train.transforms.elastic=null",
        ],
    )["train"]
    kinds = [type(t).__name__ for t in changed.transforms]
    assert "ElasticTransform" not in kinds
    assert next(t for t in changed.transforms if type(t).__name__ == "GaussianBlur").p == 1


def test_augmentation_grid_layout(tmp_path: Path) -> None:
    pipeline = _pipelines(tmp_path, ["augmentation=heavy"])["train"]
    samples = [render_shapes(np.random.default_rng(i), 32, 3, 4, 3, 0.05) for i in range(2)]
    grid = augmentation_grid([s[0] for s in samples], [s[1] for s in samples], pipeline, 3)
    gap = 4
    assert grid.shape == (2 * (32 + gap), (1 + 3) * 2 * (32 + gap), 3)
    first_mask_tile = grid[:32, 32 + gap : 64 + gap]
    assert (first_mask_tile.any(axis=2) == (samples[0][1] > 0)).all()  # colour only on objects


def test_paper_elastic_deformation() -> None:
    image, mask = render_shapes(np.random.default_rng(3), 64, 1, 4, 6, 0.05)
    image = as_unit_float(image)
    still = CoarseGridElastic(grid=3, sigma=0.0, p=1.0)(image=image, mask=mask)
    assert np.array_equal(still["mask"], mask) and np.allclose(still["image"], image, atol=1e-6)
    moved = CoarseGridElastic(grid=3, sigma=10.0, p=1.0)(image=image, mask=mask)
    assert not np.array_equal(moved["mask"], mask)
    assert set(np.unique(moved["mask"]).tolist()) <= set(np.unique(mask).tolist())
    # Image and mask move together: an image that encodes the labels, deformed with the mask,
    # still encodes the deformed labels (bilinear and nearest resampling differ only at edges).
    encoded = (mask.astype(np.float32) / 10)[..., None]
    deform = CoarseGridElastic(grid=3, sigma=10.0, p=1.0)
    deform.set_random_seed(0)
    both = deform(image=encoded, mask=mask)
    assert both["image"].shape == encoded.shape
    # Measured over 285 draws: 0.94-1.0 (median 0.99); image and mask deformed independently
    # agree 0.77 (median of 20, at most 0.88).
    assert (np.round(both["image"][..., 0] * 10) == both["mask"]).mean() > 0.9


def test_the_run_seed_makes_augmentation_repeatable() -> None:
    """The same seed gives the same augmented images (albumentations alone draws from OS
    entropy), and a restored generator state continues the same stream."""
    image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    mask = np.zeros((32, 32), np.uint8)

    def pipeline() -> A.Compose:
        transforms = {"flip": A.HorizontalFlip(p=0.5), "rot": A.RandomRotate90(p=0.5)}
        return compose(transforms, seed=7)

    def draws(p: A.Compose, n: int = 6) -> list[np.ndarray]:
        return [p(image=image, mask=mask)["image"] for _ in range(n)]

    first, second = pipeline(), pipeline()
    assert all(np.array_equal(a, b) for a, b in zip(draws(first), draws(second), strict=True))
    state = random_state(first)
    expected = draws(first)
    set_random_state(second, state)
    assert all(np.array_equal(a, b) for a, b in zip(expected, draws(second), strict=True))


def _flip_outcomes(pipeline: A.BaseCompose, draws: int = 400) -> dict[tuple[bool, bool], int]:
    """How often each (left-right, up-down) flip combination comes out of ``pipeline``."""
    image = np.arange(4, dtype=np.float32).reshape(2, 2, 1)
    counts: dict[tuple[bool, bool], int] = {}
    for _ in range(draws):
        out = pipeline(image=image)["image"][..., 0]
        key = (bool(out[0, 0] in (1, 3)), bool(out[0, 0] in (2, 3)))
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_transforms_of_a_seeded_pipeline_draw_independently(tmp_path: Path) -> None:
    # Albumentations seeds every transform of A.Compose(seed=...) alike: the two flips came
    # out together or not at all. Each of the four combinations has a quarter of the draws.
    flips = {"hflip": A.HorizontalFlip(p=0.5), "vflip": A.VerticalFlip(p=0.5)}
    counts = _flip_outcomes(compose(flips, seed=3))
    assert len(counts) == 4 and min(counts.values()) > 60
    # ... also in a DataLoader worker, which reseeds its copy of the pipeline
    seed_pipeline(pipeline := compose(flips, seed=3), 12345)
    assert len(_flip_outcomes(pipeline)) == 4


def test_the_folder_modules_patch_crops_keep_the_run_seed(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(4):
        cv2.imwrite(
            str(folder / "images" / f"{index}.png"), rng.integers(0, 255, (40, 40), np.uint8)
        )
        cv2.imwrite(str(folder / "masks" / f"{index}.png"), np.zeros((40, 40), np.uint8))
    overrides = ["data=folder", f"data.root={folder}", "data.num_classes=2", "data.patch_size=16",
                 "augmentation=light", "seed=5"]  # fmt: skip

    def crops() -> list[np.ndarray]:
        datamodule = build_datamodule(compose_config(tmp_path, overrides), augment=True)
        pipeline = datamodule.train_transform
        image = np.arange(40 * 40, dtype=np.float32).reshape(40, 40, 1)
        mask = np.zeros((40, 40), np.uint8)
        return [pipeline(image=image, mask=mask)["image"] for _ in range(5)]

    first, second = crops(), crops()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def _ddp_module(rank: int | None, workers: int = 0, step: int = 0) -> SyntheticShapesDataModule:
    """A data module set up in the DDP process of ``rank`` (None: no trainer, one process)."""
    transforms = {"contrast": A.RandomBrightnessContrast(p=1.0), "flip": A.HorizontalFlip()}
    module = SyntheticShapesDataModule(
        image_size=16, train_size=8, val_size=1, test_size=1, batch_size=4,
        num_workers=workers, train_transform=compose(transforms, seed=7),
    )  # fmt: skip
    if rank is not None:
        module.trainer = SimpleNamespace(  # type: ignore[assignment]
            global_rank=rank,
            global_step=step,
            datamodule=module,
            state=SimpleNamespace(fn=None),
            strategy=SimpleNamespace(root_device=torch.device("cpu")),
        )
    module.setup("fit")
    return module


def _first_batch(module: SyntheticShapesDataModule) -> torch.Tensor:
    torch.manual_seed(0)  # seed_everything seeds every rank's generator alike
    return next(iter(module.train_dataloader()))["image"]


@pytest.mark.parametrize("workers", [0, 1])
def test_each_ddp_rank_augments_with_draws_of_its_own(workers: int) -> None:
    # The ranks compose the same seeded pipeline and their workers get the same torch seeds:
    # before, rank 1 applied rank 0's sequence of augmentations to its images.
    rank0, rank1 = _first_batch(_ddp_module(0, workers)), _first_batch(_ddp_module(1, workers))
    assert torch.equal(rank0, _first_batch(_ddp_module(None, workers)))  # as one process
    assert not torch.equal(rank0, rank1)
    assert torch.equal(rank1, _first_batch(_ddp_module(1, workers)))  # and repeatably so


def test_a_resumed_ddp_rank_augments_on_a_stream_of_its_own() -> None:
    # The checkpoint holds rank 0's augmentation state and step (each module's state_dict).
    unbroken, checkpoint = _ddp_module(0, step=7), {}
    first_epoch = _first_batch(unbroken)
    RandomStateInCheckpoint().on_save_checkpoint(unbroken.trainer, unbroken, checkpoint)  # type: ignore[arg-type]
    saved = unbroken.state_dict()
    expected = _first_batch(unbroken)
    resumed = {rank: _ddp_module(rank) for rank in (0, 1)}
    for module in resumed.values():  # as Lightning restores: the data module, then callbacks
        module.load_state_dict(saved)
        RandomStateInCheckpoint().on_load_checkpoint(module.trainer, module, checkpoint)  # type: ignore[arg-type]
    assert torch.equal(_first_batch(resumed[0]), expected)
    assert not torch.equal(expected, first_epoch)
    rank1 = _first_batch(resumed[1])
    assert not torch.equal(rank1, expected)
    assert not torch.equal(rank1, _first_batch(_ddp_module(1)))  # nor its first epoch's draws
