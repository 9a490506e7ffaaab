"""The synthetic data module, the in-memory dataset and augmentation pipelines."""

import albumentations as A
import numpy as np
import pytest
import torch

from unet_lab.arguments import InvalidArgumentError
from unet_lab.data import SegmentationArrayDataset, SyntheticShapesDataModule, compose
from unet_lab.data.datamodule import auto_workers
from unet_lab.data.dataset import as_unit_float


def _datamodule(**kwargs) -> SyntheticShapesDataModule:
    args = {"image_size": 48, "train_size": 6, "val_size": 3, "test_size": 3, "batch_size": 4}
    return SyntheticShapesDataModule(**{**args, **kwargs})


def test_same_seed_same_images_other_seed_other_images() -> None:
    a, b, c = _datamodule(seed=1), _datamodule(seed=1), _datamodule(seed=2)
    images_a, masks_a = a.load_split("train")
    images_b, masks_b = b.load_split("train")
    images_c, _ = c.load_split("train")
    assert all(np.array_equal(x, y) for x, y in zip(images_a, images_b, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(masks_a, masks_b, strict=True))
    assert not np.array_equal(images_a[0], images_c[0])


def test_splits_differ() -> None:
    dm = _datamodule()
    assert not np.array_equal(dm.load_split("train")[0][0], dm.load_split("val")[0][0])


@pytest.mark.parametrize(
    ("num_classes", "names"),
    [
        (2, ["background", "shape"]),
        (4, ["background", "ellipse", "rectangle", "triangle"]),
        (6, ["background", "ellipse", "rectangle", "triangle", "ring", "cross"]),
    ],
)
def test_labels_and_class_names(num_classes: int, names: list[str]) -> None:
    dm = _datamodule(num_classes=num_classes, train_size=40)
    assert dm.class_names == names
    images, masks = dm.load_split("train")
    labels = np.unique(np.concatenate([m.ravel() for m in masks]))
    assert set(labels.tolist()) == set(range(num_classes))  # every class occurs in 40 images
    assert images[0].shape == (48, 48, 3) and images[0].dtype == np.uint8


def test_images_are_not_trivial() -> None:
    """Foreground and background intensities overlap: a threshold cannot segment them."""
    images, masks = _datamodule(train_size=20, in_channels=1).load_split("train")
    fg = np.concatenate([i[..., 0][m > 0] for i, m in zip(images, masks, strict=True)])
    bg = np.concatenate([i[..., 0][m == 0] for i, m in zip(images, masks, strict=True)])
    assert np.percentile(fg, 90) > np.percentile(bg, 10)
    assert np.percentile(bg, 90) > np.percentile(fg, 10)


def test_shapes_are_whole_and_apart() -> None:
    """Every object is one region inside the image, apart from the others, so its kind can be
    told from the image (a half-hidden or cut-off shape could pass for another kind)."""
    import cv2

    _, masks = _datamodule(image_size=96, train_size=30, max_objects=6).load_split("train")
    objects = 0
    for mask in masks:
        count, regions = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
        for region in range(1, count):
            inside = regions == region
            labels = np.unique(mask[inside])
            assert len(labels) == 1  # one object, one kind: no two objects touch
            border = np.concatenate([inside[0], inside[-1], inside[:, 0], inside[:, -1]])
            assert not border.any()  # not cut by the image border
            objects += 1
    assert objects > 2 * len(masks)  # and still several per image


def test_loaders_give_normalized_float_images_and_int64_masks() -> None:
    dm = _datamodule(in_channels=1, train_transform=compose({"flip": A.HorizontalFlip(p=1.0)}))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 48, 48) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 48, 48) and batch["mask"].dtype == torch.int64
    assert batch["image"].mean().abs() < 0.1
    assert len(dm.val_dataloader().dataset) == 3


def test_augmentation_moves_image_and_mask_together_and_keeps_labels() -> None:
    images, masks = _datamodule(num_classes=6, train_size=4).load_split("train")
    pipeline = compose(
        {
            "rotate": A.Rotate(limit=30, p=1.0),
            "elastic": A.ElasticTransform(alpha=30, sigma=5, p=1.0),
            "flip": A.HorizontalFlip(p=1.0),
        }
    )
    dataset = SegmentationArrayDataset(images, masks, pipeline)
    for index in range(4):
        sample = dataset[index]
        assert set(sample["mask"].unique().tolist()) <= set(range(6))
    flipped = SegmentationArrayDataset(images, masks, compose({"f": A.HorizontalFlip(p=1.0)}))[0]
    assert torch.equal(flipped["mask"], torch.from_numpy(masks[0][:, ::-1].astype(np.int64)))


def test_compose_skips_switched_off_transforms_and_keeps_order() -> None:
    pipeline = compose({"a": A.HorizontalFlip(p=1.0), "off": None, "b": A.VerticalFlip(p=1.0)})
    assert [type(t).__name__ for t in pipeline.transforms] == ["HorizontalFlip", "VerticalFlip"]
    with pytest.raises(TypeError, match="'bad'"):
        compose({"bad": "not a transform"})  # type: ignore[dict-item]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InvalidArgumentError, match="num_classes"):
        SyntheticShapesDataModule(num_classes=9)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        SyntheticShapesDataModule(batch_size=0)


@pytest.mark.parametrize("mode", ["image", "dataset", "fixed", "none"])
def test_normalization_modes(mode: str) -> None:
    fixed = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]} if mode == "fixed" else {}
    dm = _datamodule(normalization=mode, **fixed)
    dm.setup("fit")
    train_images = np.stack([as_unit_float(i) for i in dm.load_split("train")[0]])
    image = dm.datasets["val"][0]["image"].numpy()
    raw = as_unit_float(dm.load_split("val")[0][0]).transpose(2, 0, 1)
    if mode == "image":
        assert np.allclose(image.mean(axis=(1, 2)), 0, atol=1e-4)
        assert np.allclose(image.std(axis=(1, 2)), 1, atol=1e-3)
    elif mode == "dataset":  # the training split's statistics, the same for every image
        mean, std = train_images.mean(axis=(0, 1, 2)), train_images.std(axis=(0, 1, 2))
        assert np.allclose(image, (raw - mean[:, None, None]) / std[:, None, None], atol=1e-4)
    elif mode == "fixed":
        assert np.allclose(image, (raw - 0.5) / 0.25, atol=1e-5)
    else:
        assert np.allclose(image, raw)


def test_fixed_normalization_needs_its_statistics() -> None:
    with pytest.raises(InvalidArgumentError, match="mean"):
        _datamodule(normalization="fixed")
    with pytest.raises(InvalidArgumentError, match="normalization"):
        _datamodule(normalization="minmax")


@pytest.mark.parametrize(
    ("cpus", "on_gpu", "processes", "workers"),
    [
        (2, False, 1, 0),  # this machine: loading stays in the training process
        (16, False, 1, 4),
        (8, False, 1, 2),
        (16, True, 1, 8),
        (16, True, 4, 3),
        (2, True, 2, 0),
    ],
)
def test_auto_workers_follow_the_cpus_of_each_process(
    monkeypatch: pytest.MonkeyPatch, cpus: int, on_gpu: bool, processes: int, workers: int
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)))
    assert auto_workers(on_gpu, processes) == workers
    data = SyntheticShapesDataModule(image_size=32, train_size=8, val_size=4, test_size=4)
    data.setup("fit")
    assert data.train_dataloader().num_workers == auto_workers(False, 1)
