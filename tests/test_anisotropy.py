"""Pooling and kernel sizes per axis from the voxel spacing (``model.spacing``): thick slices
are not pooled along z until the in-plane axes catch up, as nnU-Net plans it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_VOLUMES, compose_config
from torch import nn

from unet_lab.arguments import InvalidArgumentError
from unet_lab.inference.sliding_window import SlidingWindowPredictor
from unet_lab.models import UNet, UNetPlusPlus
from unet_lab.models.anisotropy import pooling_plan
from unet_lab.training.build import build_datamodule, build_network


def test_thick_slices_are_pooled_in_plane_first_as_nnunet_plans() -> None:
    # 0.7 x 0.7 x 5 mm: z is 7x coarser; in-plane pooling halves the gap per level
    # (1.4 -> 3.6x, 2.8 -> 1.8x: from there z is convolved and pooled too).
    plan = pooling_plan(depth=4, spatial_dims=3, spacing=[5.0, 0.7, 0.7])
    assert plan.pools == ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))
    assert plan.kernels == ((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
    assert plan.grid == (4, 16, 16)
    # Under twice the finest spacing an axis counts as fine: the plain U-Net.
    assert pooling_plan(3, 3, [1.5, 1.0, 1.0]) == pooling_plan(3, 3, None)
    assert pooling_plan(3, 3, None).grid == (8, 8, 8)


@pytest.mark.parametrize("spacing", [[1.0, 1.0], [0.0, 1.0, 1.0], [-2.0, 1.0, 1.0]])
def test_a_bad_spacing_names_the_argument(spacing: list[float]) -> None:
    with pytest.raises(InvalidArgumentError, match=r"spacing=.*3 positive sizes"):
        UNet(1, 2, depth=2, width=4, spatial_dims=3, spacing=spacing)


def test_isotropic_spacing_keeps_the_plain_networks_weights() -> None:
    plain = UNet(1, 3, depth=3, width=4, spatial_dims=3)
    spaced = UNet(1, 3, depth=3, width=4, spatial_dims=3, spacing=[1.2, 1.0, 1.0])
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in spaced.state_dict().items()
    }
    spaced.load_state_dict(plain.state_dict())  # checkpoints from before model.spacing load


def _bottom_shape(net: nn.Module, image: torch.Tensor) -> tuple[int, ...]:
    shapes: list[tuple[int, ...]] = []
    hook = net.down[-1].register_forward_hook(lambda m, i, out: shapes.append(tuple(out.shape)))
    net.eval()
    with torch.no_grad():
        net(image)
    hook.remove()
    return shapes[0][2:]


def test_a_thick_axis_keeps_its_slices_down_to_the_deepest_level() -> None:
    image = torch.randn(1, 1, 8, 64, 64)
    plain = UNet(1, 2, depth=3, width=4, spatial_dims=3)
    thick = UNet(1, 2, depth=3, width=4, spatial_dims=3, spacing=[4.0, 1.0, 1.0])
    assert _bottom_shape(plain, image) == (1, 8, 8)
    assert _bottom_shape(thick, image) == (4, 8, 8)
    first_conv = thick.stem[0]
    assert first_conv.kernel_size == (1, 3, 3) and first_conv.padding == (0, 1, 1)


@pytest.mark.parametrize("network", [UNet, UNetPlusPlus])
def test_an_anisotropic_network_takes_any_size(network: type[nn.Module]) -> None:
    net = network(
        1, 3, depth=3, width=4, spatial_dims=3, spacing=[3.0, 0.8, 0.8], deep_supervision=1
    )
    image = torch.randn(2, 1, 5, 21, 18)  # no side a multiple of its grid
    outputs = net(image)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 5, 21, 18)] * 2
    net.eval()
    assert net(image).shape == (2, 3, 5, 21, 18)


def test_the_sliding_window_tiles_on_each_axis_grid() -> None:
    torch.manual_seed(0)
    net = UNet(1, 2, depth=2, width=4, spatial_dims=3, spacing=[3.0, 1.0, 1.0]).eval()
    assert net.size_multiple == (2, 4, 4)
    volume = torch.randn(1, 19, 30, 25)
    tiled = SlidingWindowPredictor(tile_size=[8, 16, 16], overlap=0.5, batch_size=3)(net, volume)
    assert tiled.shape == (2, 19, 30, 25)
    assert torch.allclose(tiled.sum(0), torch.ones(19, 30, 25), atol=1e-5)
    # A tile that covers the volume is the network on the whole volume.
    whole = SlidingWindowPredictor(tile_size=[20, 32, 28], blending="constant")(net, volume)
    with torch.no_grad():
        expected = torch.softmax(net(volume[None]), 1)[0]
    assert torch.allclose(whole, expected, atol=1e-5)


def test_auto_spacing_is_the_datas_and_is_stored_in_the_run_config(tmp_path: Path) -> None:
    cfg = compose_config(
        tmp_path, ["data=synthetic3d", *TINY_VOLUMES, "model.depth=2", "data.spacing=[3,1,1]"]
    )
    assert cfg.model.spacing == "auto"  # from conf/recipe/synthetic3d_unet.yaml
    datamodule = build_datamodule(cfg)
    net = build_network(cfg.model, datamodule, torch.nn.CrossEntropyLoss())
    assert cfg.model.spacing == [3.0, 1.0, 1.0] and net.size_multiple == (2, 4, 4)


def test_an_anisotropic_network_exports_with_its_grid(tmp_path: Path) -> None:
    from unet_lab.commands import export
    from unet_lab.runs.checkpoints import CONFIG_KEY, DATA_KEY

    model = {"depth": 2, "width": 4, "spatial_dims": 3, "spacing": [3.0, 1.0, 1.0]}
    net = UNet(in_channels=1, num_classes=2, **model)
    checkpoint = tmp_path / "thick.ckpt"
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            CONFIG_KEY: {"model": {"_target_": "unet_lab.models.UNet", **model}},
            DATA_KEY: {
                "in_channels": 1,
                "class_names": ["background", "solid"],
                "normalization": {"mode": "none", "mean": None, "std": None},
            },
        },
        checkpoint,
    )
    onnx_model = tmp_path / "thick.onnx"
    export.main([f"ckpt_path={checkpoint}", f"output={onnx_model}"])
    sidecar = json.loads(onnx_model.with_suffix(".json").read_text())
    assert sidecar["size_multiple"] == [2, 4, 4]
    assert np.isfinite(sidecar["max_abs_difference_vs_pytorch"])
    assert sidecar["max_abs_difference_vs_pytorch"] < 1e-4
