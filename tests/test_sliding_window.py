"""Sliding-window prediction: tiles, blending, mirror padding, unpadded networks, TTA."""

import pytest
import torch
from torch import nn

from unet_lab.inference.sliding_window import SlidingWindowPredictor, gaussian_weights, tile_starts
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
