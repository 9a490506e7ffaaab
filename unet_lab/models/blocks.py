"""Building blocks of the U-Net family: convolution blocks, down- and up-sampling steps."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from unet_lab.models.layers import (
    conv,
    conv_transpose,
    dropout,
    make_activation,
    make_norm,
    max_pool,
)

UP_MODES = ("transpose", "bilinear", "nearest")


@dataclass(frozen=True)
class BlockSpec:
    """What every convolution block of one network shares."""

    spatial_dims: int = 2
    norm: str = "batch"
    activation: str = "relu"
    dropout: float = 0.0


class ConvBlock(nn.Sequential):
    """Two (convolution 3x3, normalization, activation) layers, then optional spatial dropout."""

    def __init__(self, in_channels: int, out_channels: int, spec: BlockSpec) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers += [
                conv(spec.spatial_dims)(c_in, out_channels, 3, padding=1, bias=spec.norm == "none"),
                make_norm(spec.norm, spec.spatial_dims, out_channels),
                make_activation(spec.activation),
            ]
        layers.append(dropout(spec.spatial_dims, spec.dropout))
        super().__init__(*layers)


class Down(nn.Sequential):
    """Max-pool by 2, then a :class:`ConvBlock`."""

    def __init__(self, in_channels: int, out_channels: int, spec: BlockSpec) -> None:
        super().__init__(max_pool(spec.spatial_dims)(2), ConvBlock(in_channels, out_channels, spec))


class Upsample(nn.Module):
    """Doubles the spatial size and maps ``in_channels`` to ``out_channels``.

    ``transpose`` is the paper's 2x2 up-convolution; ``bilinear``/``nearest`` apply a 1x1
    convolution at the low resolution first (4x cheaper than after), then interpolate.
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str, spatial_dims: int) -> None:
        super().__init__()
        self.mode = mode
        if mode == "transpose":
            self.proj = conv_transpose(spatial_dims)(in_channels, out_channels, 2, stride=2)
        else:
            self.proj = conv(spatial_dims)(in_channels, out_channels, 1)
        # 'bilinear' names the 2D case; the same interpolation in 3D is 'trilinear'.
        self.interpolation = "trilinear" if (mode, spatial_dims) == ("bilinear", 3) else mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if self.mode == "transpose":
            return x
        align = None if self.mode == "nearest" else False
        return F.interpolate(x, scale_factor=2, mode=self.interpolation, align_corners=align)


class Up(nn.Module):
    """Upsample the deeper feature map, concatenate the skip connection, then a ConvBlock."""

    def __init__(self, in_channels: int, out_channels: int, up_mode: str, spec: BlockSpec) -> None:
        super().__init__()
        self.upsample = Upsample(in_channels, out_channels, up_mode, spec.spatial_dims)
        self.block = ConvBlock(2 * out_channels, out_channels, spec)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([skip, self.upsample(x)], dim=1))
