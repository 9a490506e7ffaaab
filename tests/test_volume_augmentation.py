"""3D augmentation of volume patches: shapes, exact labels, seeding and the YAML presets."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config

from unet_lab.arguments import InvalidArgumentError
from unet_lab.config.compose import instantiate
from unet_lab.data.volumes.augmentation import (
    GaussianBlur3d,
    GaussianNoise,
    RandomAffine3d,
    RandomBrightness,
    RandomContrast,
    RandomElastic3d,
    RandomFlip3d,
    RandomGamma,
    RandomRotate90InPlane,
    VolumeAugmentation,
    compose3d,
)

SHAPE = (16, 24, 24)  # D, H, W


def spatial(p: float = 1.0) -> list:
    return [
        RandomFlip3d(p=p),
        RandomRotate90InPlane(p=p),
        RandomAffine3d(p=p),
        RandomAffine3d(rotate_out_of_plane_deg=[-20, 20], scale_axes="in_plane", p=p),
        RandomAffine3d(image_order=3, p=p),
        RandomElastic3d(p=p),
    ]


def intensity(p: float = 1.0) -> list:
    return [
        RandomBrightness(p=p),
        RandomContrast(p=p),
        RandomGamma(p=p),
        GaussianNoise(p=p),
        GaussianBlur3d(p=p),
    ]


def patch(seed: int = 0, channels: int = 1, shape: tuple[int, ...] = SHAPE, dtype=np.uint8):
    """A z-scored-like image and a label of several classes made from it."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((channels, *shape)).astype(np.float32)
    label = np.digitize(image[0], [0.0, 0.8, 1.5]).astype(dtype)  # values 0..3
    label[label == 2] = 7  # not a range: values must stay among {0, 1, 3, 7}
    return image, label


@pytest.mark.parametrize("transform", spatial() + intensity(), ids=repr)
@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_shapes_and_dtypes_are_kept(transform, dtype) -> None:
    image, label = patch(channels=2, dtype=dtype)
    before = image.copy(), label.copy()
    out_image, out_label = transform(image, label, np.random.default_rng(1))
    assert out_image.shape == image.shape and out_label.shape == label.shape
    assert out_image.dtype == np.float32 and out_label.dtype == dtype
    assert out_image.flags.c_contiguous and out_label.flags.c_contiguous
    assert np.isfinite(out_image).all()
    # The given arrays (a cached volume's patch) are never changed.
    assert np.array_equal(image, before[0]) and np.array_equal(label, before[1])


@pytest.mark.parametrize("transform", spatial(), ids=repr)
def test_spatial_transforms_keep_label_values(transform) -> None:
    image, label = patch()
    values = set(np.unique(label).tolist())
    assert values == {0, 1, 3, 7}
    rng = np.random.default_rng(2)
    for _ in range(4):
        _, out_label = transform(image, label, rng)
        assert set(np.unique(out_label).tolist()) <= values


@pytest.mark.parametrize(
    "transform", [RandomFlip3d(p=0.5), RandomFlip3d(axes=[2], p=1), RandomRotate90InPlane(p=1)]
)
def test_flips_and_rot90_move_image_and_label_together(transform) -> None:
    image, _ = patch(channels=2)
    label = (image[0] > 0.5).astype(np.uint8)
    rng = np.random.default_rng(3)
    changed = 0
    for _ in range(6):
        out_image, out_label = transform(image, label, rng)
        assert np.array_equal(out_label, (out_image[0] > 0.5).astype(np.uint8))
        changed += not np.array_equal(out_image, image)
    assert changed >= 3


def test_rot90_turns_in_plane_and_skips_non_square_patches() -> None:
    image, label = patch()
    out_image, out_label = RandomRotate90InPlane(p=1)(image, label, np.random.default_rng(0))
    (k,) = [k for k in (1, 2, 3) if np.array_equal(out_label, np.rot90(label, k, axes=(1, 2)))]
    assert np.array_equal(out_image, np.rot90(image, k, axes=(2, 3)))
    image, label = patch(shape=(8, 12, 20))  # H != W: a turn would change the shape
    out_image, out_label = RandomRotate90InPlane(p=1)(image, label, np.random.default_rng(0))
    assert np.array_equal(out_image, image) and np.array_equal(out_label, label)


def test_affine_rotates_about_the_centre() -> None:
    image, label = patch()
    still = RandomAffine3d(scale=[1, 1], rotate_deg=[0, 0], p=1)
    out_image, out_label = still(image, label, np.random.default_rng(0))
    assert np.allclose(out_image, image, atol=1e-5) and np.array_equal(out_label, label)
    quarter = RandomAffine3d(scale=[1, 1], rotate_deg=[90, 90], p=1)
    out_image, out_label = quarter(image, label, np.random.default_rng(0))
    turned = [np.rot90(label, k, axes=(1, 2)) for k in (1, 3)]
    assert any(np.array_equal(out_label, t) for t in turned)  # exact: a quarter turn
    cube = np.zeros(SHAPE, dtype=np.uint8)
    cube[4:12, 8:16, 8:16] = 1  # a cube at the centre
    for scale, low, high in ((1.5, 3.0, 3.8), (0.75, 0.3, 0.55)):  # volume ~ scale ** 3
        zoom = RandomAffine3d(scale=[scale, scale], rotate_deg=[0, 0], p=1)
        _, out_label = zoom(image, cube, np.random.default_rng(0))
        assert low < out_label.sum() / cube.sum() < high  # above 1 enlarges the content


def test_zooming_out_fills_with_zero() -> None:
    image = np.full((1, *SHAPE), 3.0, dtype=np.float32)
    label = np.full(SHAPE, 2, dtype=np.uint8)
    out = RandomAffine3d(scale=[0.5, 0.5], rotate_deg=[0, 0], p=1)
    out_image, out_label = out(image, label, np.random.default_rng(0))
    assert out_image[0, 0, 0, 0] == 0.0 and out_label[0, 0, 0] == 0
    assert out_image[0, 8, 12, 12] == 3.0 and out_label[8, 12, 12] == 2


def test_elastic_deforms_smoothly_and_not_at_all_with_zero_alpha() -> None:
    image, label = patch()
    _, out_label = RandomElastic3d(alpha=[3, 3], p=1)(image, label, np.random.default_rng(0))
    assert 0 < np.mean(out_label != label) < 0.9
    still = RandomElastic3d(alpha=[0, 0], p=1)
    out_image, out_label = still(image, label, np.random.default_rng(0))
    assert np.array_equal(out_image, image) and np.array_equal(out_label, label)


@pytest.mark.parametrize("transform", spatial(p=0) + intensity(p=0), ids=repr)
def test_identity_when_p_is_zero(transform) -> None:
    image, label = patch(channels=2)
    out_image, out_label = transform(image, label, np.random.default_rng(0))
    assert np.array_equal(out_image, image) and np.array_equal(out_label, label)


@pytest.mark.parametrize("transform", intensity(), ids=repr)
def test_intensity_transforms_leave_the_label_untouched(transform) -> None:
    image, label = patch(channels=2)
    out_image, out_label = transform(image, label, np.random.default_rng(4))
    assert out_label is label
    assert not np.array_equal(out_image, image)


def test_intensity_transforms_as_nnunet_does_them() -> None:
    image, label = patch(channels=2)
    rng = np.random.default_rng(5)
    for transform in (RandomContrast(factor=[1.5, 1.5], p=1), RandomGamma(p=1)):
        out, _ = transform(image, label, rng)
        for channel in range(2):  # the range of each channel is kept
            assert out[channel].min() >= image[channel].min() - 1e-5
            assert out[channel].max() <= image[channel].max() + 1e-5
    out, _ = RandomContrast(factor=[0.5, 0.5], p=1)(image, label, rng)
    assert np.allclose(out.mean(axis=(1, 2, 3)), image.mean(axis=(1, 2, 3)), atol=1e-4)
    assert np.allclose(out.std(axis=(1, 2, 3)), 0.5 * image.std(axis=(1, 2, 3)), rtol=1e-4)
    out, _ = RandomBrightness(multiplier=[1.2, 1.2], p=1)(image, label, rng)
    assert np.allclose(out, 1.2 * image, rtol=1e-6)
    out, _ = GaussianNoise(std=[0.1, 0.1], p=1)(image, label, rng)
    assert 0.09 < float((out - image).std()) < 0.11
    out, _ = GaussianBlur3d(sigma=[1.0, 1.0], p=1)(image, label, rng)
    assert out.std() < 0.5 * image.std()


def test_empty_pipeline_returns_the_arrays() -> None:
    image, label = patch()
    out_image, out_label = compose3d({}, seed=0)(image, label)
    assert out_image is image and out_label is label
    out_image, out_label = compose3d({"flip": None}, seed=0)(image, label)
    assert out_image is image and out_label is label


def _medium(seed: int | None) -> VolumeAugmentation:
    steps = spatial(p=0.5) + intensity(p=0.5)
    return compose3d({f"step{i}": step for i, step in enumerate(steps)}, seed=seed)


def test_same_seed_same_output_and_state_dict_reproduces_the_next_draw() -> None:
    image, label = patch(channels=2)
    first, second, other = _medium(7), _medium(7), _medium(8)
    a, b, c = first(image, label), second(image, label), other(image, label)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # Through a checkpoint, as RandomStateInCheckpoint stores it.
    buffer = io.BytesIO()
    torch.save({"augmentation": first.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["augmentation"]
    expected = [first(image, label) for _ in range(3)]
    resumed = _medium(None)
    resumed.load_state_dict(state)
    for want in expected:
        got = resumed(image, label)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_reseed_gives_each_worker_its_own_repeatable_stream() -> None:
    image, label = patch()
    pipelines = [_medium(0) for _ in range(3)]
    for pipeline, worker_seed in zip(pipelines, (11, 11, 12), strict=True):
        pipeline.reseed(worker_seed)
    a, b, c = (p(image, label)[0] for p in pipelines)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # Not the same numbers as another generator given the same seed (the patch sampler's).
    assert pipelines[0].rng.random() != np.random.default_rng(11).random()
    assert compose3d().seed >= 0  # seed=None draws one


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: RandomFlip3d(p=1.5), "p"),
        (lambda: RandomFlip3d(axes=[3]), "axes"),
        (lambda: RandomFlip3d(axes=[1, 1]), "axes"),
        (lambda: RandomRotate90InPlane(p=-0.1), "p"),
        (lambda: RandomAffine3d(scale=[1.2, 0.9]), "scale"),
        (lambda: RandomAffine3d(rotate_deg=[-15, 200]), "rotate_deg[1]"),
        (lambda: RandomAffine3d(rotate_out_of_plane_deg=5), "rotate_out_of_plane_deg"),
        (lambda: RandomAffine3d(scale_axes="depth"), "scale_axes"),
        (lambda: RandomAffine3d(image_order=2), "image_order"),
        (lambda: RandomElastic3d(alpha=[1, 2, 3]), "alpha"),
        (lambda: RandomElastic3d(sigma=[0.5, 2]), "sigma[0]"),
        (lambda: RandomBrightness(multiplier="0.9,1.1"), "multiplier"),
        (lambda: RandomContrast(factor=[-1, 1]), "factor[0]"),
        (lambda: RandomGamma(gamma=[0, 1.5]), "gamma[0]"),
        (lambda: GaussianNoise(std=0.1), "std"),
        (lambda: GaussianBlur3d(sigma=[True, 1.0]), "sigma[0]"),
        (lambda: compose3d(seed=-1), "seed"),
        (lambda: compose3d(seed=0).reseed(1.5), "worker_seed"),
    ],
)
def test_bad_arguments_name_the_argument(make, name: str) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        make()
    assert error.value.name == name


def test_bad_inputs() -> None:
    with pytest.raises(TypeError, match="'flip'"):
        compose3d({"flip": "RandomFlip3d"})
    image, label = patch()
    with pytest.raises(ValueError, match=r"\(C, D, H, W\)"):
        compose3d({"flip": RandomFlip3d()}, seed=0)(image[0], label)
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        RandomGamma(p=1)(image, label[:8], np.random.default_rng(0))


@pytest.mark.parametrize("preset", ["volume_light", "volume_medium"])
def test_presets_build_and_run_on_a_patch(preset: str, tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, [f"augmentation={preset}"])
    train = instantiate(cfg.augmentation.train, "augmentation.train", seed=0)
    evaluation = instantiate(cfg.augmentation.eval, "augmentation.eval", seed=0)
    assert isinstance(train, VolumeAugmentation) and len(train) >= 4
    assert len(evaluation) == 0  # evaluation sees the data as it is
    image, label = patch(channels=2)
    for _ in range(8):
        out_image, out_label = train(image, label)
        assert out_image.shape == image.shape and out_image.dtype == np.float32
        assert set(np.unique(out_label).tolist()) <= {0, 1, 3, 7}


def test_medium_preset_switches_elastic_on_from_the_command_line(tmp_path: Path) -> None:
    elastic = "{_target_:unet_lab.data.volumes.augmentation.RandomElastic3d,p:1}"
    cfg = compose_config(
        tmp_path, ["augmentation=volume_medium", f"augmentation.train.transforms.elastic={elastic}"]
    )
    train = instantiate(cfg.augmentation.train, "augmentation.train", seed=0)
    assert isinstance(train.transforms["elastic"], RandomElastic3d)
    assert list(train.transforms)[:4] == ["flip", "rotate90", "affine", "elastic"]
