import pytest
import torch

from unet_lab.arguments import InvalidArgumentError
from unet_lab.models import UNet, level_channels


@pytest.mark.parametrize("up_mode", ["transpose", "bilinear", "nearest"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6])
def test_output_has_input_size_for_odd_sizes(up_mode: str, depth: int) -> None:
    net = UNet(in_channels=3, num_classes=4, depth=depth, width=4, up_mode=up_mode).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 97, 131))
    assert out.shape == (2, 4, 97, 131)


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (64, 64), (65, 127)])
def test_any_size_including_smaller_than_the_receptive_field(size: tuple[int, int]) -> None:
    net = UNet(in_channels=1, num_classes=2, depth=4, width=4).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, *size)).shape == (1, 2, *size)


def test_padding_does_not_leak_into_the_result_for_multiples() -> None:
    """A size that needs no padding gives the same logits as the same image inside a batch."""
    torch.manual_seed(0)
    net = UNet(in_channels=1, num_classes=2, depth=3, width=4).eval()
    x = torch.randn(1, 1, 32, 40)
    with torch.no_grad():
        assert torch.allclose(net(x), net(torch.cat([x, x]))[:1], atol=1e-6)


def test_channels_are_derived_from_depth_width_and_cap() -> None:
    assert level_channels(4, 16) == [16, 32, 64, 128, 256]
    assert level_channels(5, 32, max_width=256) == [32, 64, 128, 256, 256, 256]
    assert UNet(depth=2, width=8, max_width=12).channels == [8, 12, 12]


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "gelu", "silu", "elu"])
def test_norms_and_activations_train(norm: str, activation: str) -> None:
    net = UNet(
        in_channels=2,
        num_classes=3,
        depth=2,
        width=8,
        norm=norm,
        activation=activation,
        dropout=0.1,
    )
    out = net(torch.randn(2, 2, 20, 24))
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_three_dimensional_volumes() -> None:
    net = UNet(
        in_channels=1, num_classes=2, depth=2, width=4, spatial_dims=3, up_mode="bilinear"
    ).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 9, 17, 10)).shape == (1, 2, 9, 17, 10)


def test_channels_last_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    net = UNet(in_channels=3, num_classes=2, depth=3, width=8).eval()
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        expected = net(x)
        net.to(memory_format=torch.channels_last)
        got = net(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(expected, got, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "name", "expected"),
    [
        ({"depth": 0}, "depth", "an integer in 1..7"),
        ({"depth": 8}, "depth", "an integer in 1..7"),
        ({"up_mode": "cubic"}, "up_mode", "one of transpose, bilinear, nearest"),
        ({"norm": "layer"}, "norm", "one of batch, instance, group, none"),
        ({"width": 0}, "width", "an integer >= 1"),
        ({"dropout": 1.5}, "dropout", "a number in 0.0..1.0"),
        ({"max_width": 8, "width": 16}, "max_width", "an integer >= 16"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, name: str, expected: str) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        UNet(**kwargs)
    assert error.value.name == name
    assert expected in str(error.value)
