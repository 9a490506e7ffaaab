"""``augmentation.on_device``: the batch transforms draw the same distribution of augmentations
as the albumentations pipeline of the same YAML (tested statistically on CPU tensors), refuse
what they cannot do, and train."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from scipy import stats

from tests.conftest import FAST, TINY_DATA, compose_config, run_cli
from unet_lab.config.compose import instantiate
from unet_lab.data.augmentation import compose
from unet_lab.data.batch_augmentation import BatchAugmentation
from unet_lab.data.normalization import Normalizer
from unet_lab.errors import ConfigError
from unet_lab.training.build import build_datamodule

SAMPLES = 3000
PREFIX = "augmentation.train.transforms"
# Per-sample statistics compared (two-sample Kolmogorov-Smirnov) at this level: with SAMPLES
# draws it finds a rotation range of +-40 degrees instead of +-20, a contrast range of 0.3
# instead of 0.2, a flip probability of 0.3 instead of 0.5
# (test_the_comparison_finds_a_different_distribution).
SIGNIFICANCE = 1e-3


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """A 64 x 64 grey image (float in [0, 1]) with a horizontal ramp, a bright rectangle
    (class 1) and a small dark disc (class 2), away from the borders and from the centre, so
    that flips, turns, scaling and shifts all move what the statistics see."""
    ys, xs = np.mgrid[0:64, 0:64]
    image = 0.2 + 0.3 * xs / 63
    mask = np.zeros((64, 64), np.uint8)
    mask[14:30, 20:44] = 1
    mask[(ys - 44) ** 2 + (xs - 40) ** 2 <= 25] = 2
    image[mask == 1] = 0.8
    image[mask == 2] = 0.05
    return image.astype(np.float32)[..., None], mask


def _summary(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per sample: mean and spread of the intensities, the brightness of class 1, the area,
    centroid row and column of class 1 and of class 2, the ramp's direction (mean left minus
    mean right, top minus bottom)."""
    rows, cols = np.mgrid[0 : mask.shape[-2], 0 : mask.shape[-1]]
    out = []
    for picture, labels in zip(image, mask, strict=True):
        values = [picture.mean(), picture.std()]
        ones = labels == 1
        values.append(picture[ones].mean() if ones.any() else 0.0)
        for label in (1, 2):
            inside = labels == label
            area = inside.sum()
            values += [
                area,
                (rows * inside).sum() / max(area, 1),
                (cols * inside).sum() / max(area, 1),
            ]
        values += [picture[:, :32].mean() - picture[:, 32:].mean(),
                   picture[:32].mean() - picture[32:].mean()]  # fmt: skip
        out.append(values)
    # Rounded: flips and turns give a few exact values, which float noise between numpy and
    # torch would otherwise split into separate ones.
    return np.asarray(out).round(4)


def _named(preset: str, extra: list[str] | None = None) -> dict[str, A.BasicTransform | None]:
    cfg = compose_config(Path("."), [f"augmentation={preset}", *(extra or [])])
    specs = cfg.augmentation.train.transforms
    return {n: None if s is None else instantiate(s, f"{PREFIX}.{n}") for n, s in specs.items()}


def _per_sample(named: dict[str, A.BasicTransform | None]) -> tuple[np.ndarray, np.ndarray]:
    pipeline = compose(named, seed=1)
    image, mask = _scene()
    outputs = [pipeline(image=image, mask=mask) for _ in range(SAMPLES)]
    return (np.stack([o["image"][..., 0] for o in outputs]),
            np.stack([o["mask"] for o in outputs]))  # fmt: skip


def _in_batch(named: dict[str, A.BasicTransform | None]) -> tuple[np.ndarray, np.ndarray]:
    image, mask = _scene()
    images = torch.from_numpy(image[..., 0]).expand(SAMPLES, 1, 64, 64).contiguous()
    masks = torch.from_numpy(mask).long().expand(SAMPLES, 64, 64).contiguous()
    out_image, out_mask = BatchAugmentation.from_albumentations(named, PREFIX, seed=2)(
        images, masks
    )
    assert out_image.dtype == images.dtype and out_mask.dtype == masks.dtype
    return out_image[:, 0].numpy(), out_mask.numpy()


def _smallest_p(named_cpu: dict, named_batch: dict) -> tuple[float, int]:
    cpu, batch = _summary(*_per_sample(named_cpu)), _summary(*_in_batch(named_batch))
    pvalues = [stats.ks_2samp(cpu[:, k], batch[:, k]).pvalue for k in range(cpu.shape[1])]
    return min(pvalues), int(np.argmin(pvalues))


@pytest.mark.parametrize(
    "preset, extra",
    [
        ("light", []),
        ("medium", []),
        (
            "medium",
            [
                "+augmentation.train.transforms.noise={_target_:albumentations.GaussNoise,"
                "std_range:[0.05,0.15],p:0.5}"
            ],
        ),
    ],
)
def test_batch_transforms_draw_what_albumentations_draws(preset: str, extra: list[str]) -> None:
    named = _named(preset, extra)
    smallest, statistic = _smallest_p(named, named)
    assert smallest > SIGNIFICANCE, f"statistic {statistic} differs (p = {smallest:.2g})"


@pytest.mark.parametrize(
    "changed",
    [
        "augmentation.train.transforms.affine.rotate=[-40,40]",
        "augmentation.train.transforms.brightness_contrast.contrast_limit=0.3",
        "augmentation.train.transforms.hflip.p=0.3",
    ],
)
def test_the_comparison_finds_a_different_distribution(changed: str) -> None:
    # The test above has the power to see a wrong range or probability.
    smallest, _ = _smallest_p(_named("medium"), _named("medium", [changed]))
    assert smallest < SIGNIFICANCE


def test_masks_keep_their_labels_and_images_their_range() -> None:
    image, mask = _in_batch(_named("medium"))
    assert set(np.unique(mask)) <= {0, 1, 2}
    assert image.min() >= 0 and image.max() <= 1


@pytest.mark.parametrize(
    "extra, key",
    [
        (["augmentation=heavy"], f"{PREFIX}.blur"),
        (
            ["augmentation=medium", "+augmentation.train.transforms.affine.shear=10"],
            f"{PREFIX}.affine",
        ),
    ],
)
def test_a_transform_without_batch_counterpart_is_refused_by_its_key(
    tmp_path: Path, extra: list[str], key: str
) -> None:
    cfg = compose_config(tmp_path, [*extra, "augmentation.on_device=true"])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_datamodule(cfg, augment=True)


@pytest.mark.parametrize("mode", ["image", "dataset", "none"])
def test_batch_normalization_is_the_per_image_normalization(mode: str) -> None:
    rng = np.random.default_rng(0)
    images = [rng.random((8, 9, 3), np.float32) for _ in range(4)]
    normalizer = Normalizer(mode)
    if normalizer.needs_fit:
        normalizer.fit(images)
    expected = np.stack([normalizer(i).transpose(2, 0, 1) for i in images])
    batch = normalizer.batch(torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(batch.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_each_rank_and_epoch_draws_its_own_and_the_same_again() -> None:
    augmentation = BatchAugmentation.from_albumentations(_named("medium"), PREFIX, seed=2)
    image, mask = torch.rand(8, 1, 32, 32), torch.randint(0, 3, (8, 32, 32))
    draws = {key: augmentation(image, mask, *key)[0] for key in [(0, 0), (0, 1), (1, 0)]}
    assert not torch.equal(draws[0, 0], draws[0, 1]) and not torch.equal(draws[0, 0], draws[1, 0])
    fresh = BatchAugmentation.from_albumentations(_named("medium"), PREFIX, seed=2)
    assert torch.equal(fresh(image, mask, 0, 1)[0], draws[0, 1])  # epoch 1 without epoch 0


def test_a_resumed_run_augments_on_device_as_the_unbroken_run(tmp_path: Path) -> None:
    """Training with augmentation on the device, resumed after epoch 1, ends with the weights
    of the run never stopped (fp32, deterministic, constant learning rate)."""
    common = [*FAST, *TINY_DATA, "augmentation=medium", "augmentation.on_device=true",
              "trainer.precision=32-true", "trainer.deterministic=true", "scheduler=none",
              "test=false"]  # fmt: skip
    run_cli([*common, "hydra.run.dir=unbroken"], cwd=tmp_path)
    run_cli([*common, "trainer.max_epochs=1", "hydra.run.dir=first"], cwd=tmp_path)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    run_cli([*common, f"ckpt_path={last}", "trainer.max_epochs=2"], cwd=tmp_path)  # in "first"
    unbroken, resumed = (
        torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False)
        for run in ("unbroken", "first")
    )
    assert resumed["global_step"] == unbroken["global_step"] == 8
    expected, actual = unbroken["state_dict"], resumed["state_dict"]
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_volumes_are_refused(tmp_path: Path) -> None:
    result = run_cli([*FAST, "data=synthetic3d", "augmentation.on_device=true",
                      f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 2
    assert "augmentation.on_device=true is for 2D images" in result.stderr
