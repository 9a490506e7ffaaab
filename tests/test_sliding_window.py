"""Sliding-window prediction: tiles, blending, mirror padding, unpadded networks, TTA, for
images and volumes."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from unet_lab.arguments import InvalidArgumentError
from unet_lab.inference.sliding_window import (
    BLENDINGS,
    SlidingWindowPredictor,
    gaussian_weights,
    tile_starts,
)
from unet_lab.inference.trained import probabilities
from unet_lab.models import UNet, UNetPaper
from unet_lab.models.blocks import mirror_pad


def test_tiles_cover_the_image_and_end_at_the_border() -> None:
    assert tile_starts(100, 32, 24) == [0, 24, 48, 68]
    assert tile_starts(32, 32, 8) == [0]


def test_gaussian_weights_peak_at_the_centre_and_stay_positive() -> None:
    weights = gaussian_weights((16, 16))
    assert weights.max() == weights[7:9, 7:9].max() and weights.min() > 0
    assert torch.allclose(weights, weights.T)


def test_an_unpadded_network_tile_by_tile_equals_the_whole_image() -> None:
    """Valid convolutions see no padding, so overlap-tile is exact: the paper's strategy (in
    float64, to tell exactness from float32 summation order: about 1e-4 there)."""
    torch.manual_seed(0)
    net = UNetPaper(1, 3, depth=2, width=4, context="none").double().eval()
    image = torch.randn(1, 84, 100, dtype=torch.float64)  # + 2 x 20 margin: valid at depth 2
    m = net.margin
    with torch.no_grad():
        whole = probabilities(net, mirror_pad(image[None], [m, m, m, m]))[0]
    predictor = SlidingWindowPredictor(tile_size=64, overlap=0.25, blending="constant")
    tiled = predictor(net, image)
    assert tiled.shape == whole.shape == (3, 84, 100)
    assert (tiled - whole).abs().max() < 1e-10


def test_a_pointwise_network_gives_the_whole_image_result_with_any_blending() -> None:
    net = nn.Conv2d(2, 4, 1)
    image = torch.randn(2, 150, 97)
    whole = probabilities(net, image[None])[0]
    for blending in ("constant", "gaussian"):
        predictor = SlidingWindowPredictor(tile_size=32, overlap=0.5, blending=blending)
        assert torch.allclose(predictor(net, image), whole, atol=1e-5)


def test_images_smaller_than_a_tile_and_tta() -> None:
    net = UNet(1, 2, depth=2, width=4).eval()
    image = torch.randn(1, 20, 45)
    probs = SlidingWindowPredictor(tile_size=32, tta=True, batch_size=2)(net, image)
    assert probs.shape == (2, 20, 45) and torch.allclose(probs.sum(0), torch.ones(20, 45))


def test_a_padded_unet_tiles_agree_with_the_whole_image_away_from_tile_borders() -> None:
    torch.manual_seed(0)
    net = UNet(1, 2, depth=2, width=4, norm="none").eval()
    image = torch.randn(1, 96, 96)
    whole = probabilities(net, image[None])[0]
    tiled = SlidingWindowPredictor(tile_size=64, overlap=0.5)(net, image)
    assert (tiled - whole).abs().mean() < 0.02


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="overlap"):
        SlidingWindowPredictor(overlap=1.0)
    with pytest.raises(ValueError, match="blending"):
        SlidingWindowPredictor(blending="max")


def _volume_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(in_channels=1, num_classes=3, depth=2, width=4, spatial_dims=3).eval()


def test_gaussian_weights_for_a_volume_tile() -> None:
    weights = gaussian_weights((8, 16, 12))
    assert weights.shape == (8, 16, 12) and weights.min() > 0
    assert weights.max() == weights[3:5, 7:9, 5:7].max()
    for axis in range(3):
        assert torch.equal(weights, weights.flip(axis))


def test_a_volume_tile_by_tile_is_close_to_the_whole_volume() -> None:
    """A padded 3D U-Net (eval-mode batch norm) on an odd-sized volume, off its pooling grid,
    with tiles of their own size per axis: tile borders see padding, not context, so close."""
    net = _volume_unet()
    image = torch.randn(1, 19, 45, 38)
    whole = probabilities(net, image[None])[0]
    for blending in BLENDINGS:
        predictor = SlidingWindowPredictor(tile_size=[16, 32, 32], overlap=0.5, blending=blending)
        tiled = predictor(net, image)
        assert tiled.shape == whole.shape == (3, 19, 45, 38)
        assert torch.allclose(tiled.sum(0), torch.ones(19, 45, 38))
        assert (tiled - whole).abs().mean() < 0.005


def test_a_volume_within_one_tile_is_the_whole_volume_prediction() -> None:
    """Tiles covering the volume (a cube, or per axis: 20 is the depth on the pooling grid)
    take it whole, padded as the network pads itself (up to softmax rounding)."""
    net = _volume_unet()
    image = torch.randn(1, 19, 45, 38)
    whole = probabilities(net, image[None])[0]
    for tile_size in (48, [20, 48, 40]):
        covering = SlidingWindowPredictor(tile_size=tile_size, overlap=0.5)(net, image)
        assert torch.allclose(covering, whole, rtol=0, atol=1e-6)


def test_an_unpadded_volume_network_tile_by_tile_equals_the_whole_volume() -> None:
    """Overlap-tile is exact in 3D too, with a different tile side per axis (float64)."""
    torch.manual_seed(0)
    net = UNetPaper(1, 3, depth=2, width=2, context="none", spatial_dims=3).double().eval()
    m = net.margin
    image = torch.randn(1, 8, 20, 12, dtype=torch.float64)
    with torch.no_grad():
        whole = probabilities(net, mirror_pad(image[None], [m] * 6))[0]
    tile_size = [2 * m + 4, 2 * m + 12, 2 * m + 8]  # output tiles 4, 12, 8
    tiled = SlidingWindowPredictor(tile_size, overlap=0.5, blending="constant")(net, image)
    assert tiled.shape == whole.shape == (3, 8, 20, 12)
    assert (tiled - whole).abs().max() < 1e-10


def test_a_measured_margin_and_any_blending_in_3d() -> None:
    """A valid 3x3x3 convolution states no margin: it is measured (1 voxel), and the mirrored
    context makes every tile agree with the whole, mirror-padded volume."""
    torch.manual_seed(0)
    net = nn.Conv3d(2, 3, 3)
    image = torch.randn(2, 13, 30, 21)
    whole = probabilities(net, mirror_pad(image[None], [1] * 6))[0]
    for blending in BLENDINGS:
        predictor = SlidingWindowPredictor([8, 12, 10], overlap=0.5, blending=blending)
        assert torch.allclose(predictor(net, image), whole, atol=1e-5)


def test_volumes_smaller_than_a_tile_with_tta_and_progress() -> None:
    net = _volume_unet()
    image = torch.randn(1, 10, 21, 14)
    predictor = SlidingWindowPredictor(tile_size=16, tta=True, batch_size=2, progress=True)
    probs = predictor(net, image)
    assert probs.shape == (3, 10, 21, 14)
    assert torch.allclose(probs.sum(0), torch.ones(10, 21, 14))


def test_tile_sizes_per_axis_from_a_config_list() -> None:
    net = nn.Conv2d(1, 2, 1)
    image = torch.randn(1, 40, 50)
    predictor = SlidingWindowPredictor(tile_size=OmegaConf.create([16, 32]))  # as YAML gives
    assert predictor.tile_size == (16, 32)
    assert torch.allclose(predictor(net, image), probabilities(net, image[None])[0], atol=1e-6)


@pytest.mark.parametrize("tile_size", [[32, 4, 32], [], [32, 32.5], "32", True])
def test_a_bad_tile_size_is_named(tile_size: object) -> None:
    with pytest.raises(InvalidArgumentError, match="tile_size") as error:
        SlidingWindowPredictor(tile_size=tile_size)  # type: ignore[arg-type]
    assert error.value.name == "tile_size"


def test_a_tile_size_list_must_match_the_spatial_axes() -> None:
    predictor = SlidingWindowPredictor(tile_size=[16, 32])
    with pytest.raises(InvalidArgumentError, match=r"tile_size.*3 sides"):
        predictor(nn.Conv3d(1, 2, 1), torch.randn(1, 8, 16, 16))
