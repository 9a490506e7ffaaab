"""A trained network back from its checkpoint; test-time averaging over flips and rotations."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, SMALL_UNET, TINY_DATA, compose_config
from torch import nn

from unet_lab.errors import ConfigError, InputError
from unet_lab.inference.trained import label_map, load_trained, probabilities
from unet_lab.training import build, train


def _symmetries(x: torch.Tensor) -> list[torch.Tensor]:
    return [torch.rot90(m, k, dims=(-2, -1)) for m in (x, x.flip(-1)) for k in range(4)]


def test_averaging_makes_any_network_commute_with_flips_and_rotations() -> None:
    torch.manual_seed(0)
    net = nn.Conv2d(1, 3, 3, padding=1)  # not symmetric: its plain output does not commute
    image = torch.randn(1, 1, 12, 12)
    averaged = probabilities(net, image, tta=True)
    for moved_image, moved_output in zip(_symmetries(image), _symmetries(averaged), strict=True):
        assert torch.allclose(probabilities(net, moved_image, tta=True), moved_output, atol=1e-6)
    plain = probabilities(net, image)
    rotated = probabilities(net, torch.rot90(image, 1, dims=(-2, -1)))
    assert not torch.allclose(rotated, torch.rot90(plain, 1, dims=(-2, -1)), atol=1e-3)
    assert torch.allclose(averaged.sum(dim=1), torch.ones(1, 12, 12))


def test_averaging_leaves_a_pointwise_network_unchanged() -> None:
    net = nn.Conv2d(2, 4, 1)
    image = torch.randn(2, 2, 8, 10)  # not square: rotations change the shape on the way
    assert torch.allclose(probabilities(net, image, tta=True), probabilities(net, image), atol=1e-6)


VOLUME_FLIPS = [(), (-1,), (-2,), (-3,), (-2, -1), (-3, -1), (-3, -2), (-3, -2, -1)]


def _flipped(x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    return x.flip(axes) if axes else x


def test_volume_averaging_makes_any_network_commute_with_flips_of_each_axis() -> None:
    """Volumes (5D) average over the eight flip combinations of their three axes."""
    torch.manual_seed(0)
    net = nn.Conv3d(1, 3, 3, padding=1)  # not symmetric
    image = torch.randn(1, 1, 6, 8, 10)  # anisotropic sides: no rotation could apply
    averaged = probabilities(net, image, tta=True)
    assert averaged.shape == (1, 3, 6, 8, 10)
    assert torch.allclose(averaged.sum(dim=1), torch.ones(1, 6, 8, 10))
    for axes in VOLUME_FLIPS:
        moved = probabilities(net, _flipped(image, axes), tta=True)
        assert torch.allclose(moved, _flipped(averaged, axes), atol=1e-6)
    plain = probabilities(net, image)
    assert not torch.allclose(probabilities(net, image.flip(-3)), plain.flip(-3), atol=1e-3)


def test_volume_averaging_leaves_a_flip_equivariant_network_unchanged() -> None:
    """A kernel symmetric under every flip (but not under rotations of the last two axes)
    commutes with flips: averaging gives back its plain prediction, so no rotation is used."""
    torch.manual_seed(0)
    net = nn.Conv3d(2, 4, 3, padding=1)
    with torch.no_grad():
        flips = [_flipped(net.weight, axes) for axes in VOLUME_FLIPS]
        net.weight.copy_(torch.stack(flips).sum(0))
    image = torch.randn(2, 2, 5, 7, 7)  # square in-plane: rotations would apply
    plain = probabilities(net, image)
    assert torch.allclose(probabilities(net, image, tta=True), plain, atol=1e-6)
    rotated = probabilities(net, torch.rot90(image, 1, dims=(-2, -1)))
    assert not torch.allclose(torch.rot90(rotated, -1, dims=(-2, -1)), plain, atol=1e-3)


def test_a_checkpoint_gives_back_the_network_and_its_normalization(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, [*FAST, *TINY_DATA, "data.normalization=dataset"])
    train(cfg)
    trained = load_trained(tmp_path / "checkpoints" / "last.ckpt")
    assert trained.class_names == ["background", "ellipse", "rectangle", "triangle"]
    assert trained.in_channels == 3 and trained.normalizer.mode == "dataset"
    assert trained.normalizer.mean is not None and trained.normalizer.mean.shape == (3,)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    weight = next(k for k in checkpoint["state_dict"] if k.endswith("weight"))
    assert torch.equal(
        dict(trained.net.named_parameters())[weight.removeprefix("net.")],
        checkpoint["state_dict"][weight],
    )
    image = np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    probs = trained.probabilities(image, tta=True)
    assert probs.shape == (4, 40, 36) and np.allclose(probs.sum(axis=0), 1, atol=1e-5)
    with pytest.raises(InputError, match="1 channels, the network expects 3"):
        trained.prepare(image[..., 0])


def test_a_file_that_is_not_a_unet_lab_checkpoint(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(InputError, match="not a unet-lab checkpoint"):
        load_trained(tmp_path / "other.ckpt")
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"broken.ckpt: not a readable checkpoint \(truncated"):
        load_trained(tmp_path / "broken.ckpt")


def test_the_monai_peer_trains_and_loads_like_our_unet(tmp_path: Path) -> None:
    fast = [o for o in FAST if o not in SMALL_UNET]
    overrides = ["model=monai_basic_unet", "model.features=[8,8,16,16,32,8]"]
    summary = train(compose_config(tmp_path, [*fast, *TINY_DATA, *overrides]))
    assert summary["status"] == "completed" and summary["model"]["class"] == "MonaiBasicUNet"
    trained = load_trained(tmp_path / "checkpoints" / "last.ckpt")
    assert type(trained.net).__name__ == "MonaiBasicUNet"
    image = np.zeros((40, 52, 3), np.uint8)  # sides not multiples of 16
    assert trained.probabilities(image).shape == (4, 40, 52)


def test_a_single_output_binary_network_trains_scores_and_predicts(tmp_path: Path) -> None:
    overrides = [*FAST, *TINY_DATA, "loss=bce", "data.num_classes=2"]
    summary = train(compose_config(tmp_path, overrides))
    assert summary["status"] == "completed" and "dice_shape" in summary["val"]
    trained = load_trained(tmp_path / "checkpoints" / "last.ckpt")
    assert trained.net.num_classes == 1 and trained.class_names == ["background", "shape"]
    probs = trained.probabilities(np.zeros((32, 32, 3), np.uint8))
    assert probs.shape == (2, 32, 32) and np.allclose(probs.sum(axis=0), 1)


def test_a_single_output_loss_refuses_data_with_more_classes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loss=bce is for binary data"):
        build(compose_config(tmp_path, [*FAST, *TINY_DATA, "loss=bce"]))


class _Payload:
    """Pickles to a call that creates a file: what a malicious checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": {}, "extra": _Payload(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(InputError, match=r"refused: .* could run code"):
        load_trained(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_the_label_map_is_the_argmax_in_the_smallest_type() -> None:
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 4, (5, 6, 7, 8)).astype(np.float32)  # many ties: the first wins
    labels = label_map(probs)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, probs.argmax(axis=0))
    assert label_map(rng.random((300, 4, 4)).astype(np.float32)).dtype == np.uint16
