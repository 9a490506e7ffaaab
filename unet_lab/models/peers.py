"""Networks of other libraries behind unet-lab's model interface, for side-by-side comparisons.

They take ``in_channels`` and ``num_classes`` like :class:`~unet_lab.models.UNet` (the data sets
them), so ``model=monai_basic_unet`` trains with exactly the data, loss, optimizer, schedule and
augmentation of any other run. Their libraries are optional: ``pip install monai``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from unet_lab.errors import ConfigError


class MonaiBasicUNet(nn.Module):
    """MONAI's ``BasicUNet`` (``monai.networks.nets.BasicUNet``): five levels, features
    ``(32, 32, 64, 128, 256, 32)`` by default (the last is the output block's), instance norm and
    leaky ReLU. Any side works from about 32 px up (its deepest level sees 1/16 of it; instance
    norm needs more than one pixel there); skip connections are padded to match."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        norm: str = "instance",
        activation: str = "leakyrelu",
        dropout: float = 0.0,
        upsample: str = "deconv",
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        try:
            from monai.networks.nets import BasicUNet
        except ImportError as exc:
            raise ConfigError(
                "model=monai_basic_unet needs MONAI: pip install monai (or unet-lab[peers])"
            ) from exc
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.channels = list(features)
        self.net = BasicUNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=num_classes,
            features=tuple(features),
            act=activation,
            norm=norm,
            dropout=dropout,
            upsample=upsample,
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting() or torch.jit.is_tracing():
            return self._forward_traceable(image)
        return self.net(image)

    def _forward_traceable(self, x: torch.Tensor) -> torch.Tensor:
        """``BasicUNet.forward`` as MONAI computes it, but with the skip padding as arithmetic
        on sizes: MONAI pads an up-sampled map by one pixel where the skip is one larger (an odd
        side pooled) after a Python ``if``, which a trace or an export would fix to the example
        input's sizes."""
        net = self.net
        x0 = net.conv_0(x)
        x1 = net.down_1(x0)
        x2 = net.down_2(x1)
        x3 = net.down_3(x2)
        x4 = net.down_4(x3)
        u4 = _up_concatenate(net.upcat_4, x4, x3)
        u3 = _up_concatenate(net.upcat_3, u4, x2)
        u2 = _up_concatenate(net.upcat_2, u3, x1)
        u1 = _up_concatenate(net.upcat_1, u2, x0)
        return net.final_conv(u1)


def _up_concatenate(upcat: Any, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """MONAI's ``UpCat.forward(x, skip)``: the replicate padding of the up-sampled map by
    ``skip``'s size minus its own (0 or 1 per axis) without a branch on sizes."""
    up = upcat.upsample(x)
    if upcat.is_pad:
        pad: list[Any] = []
        for axis in range(up.ndim - 1, 1, -1):  # F.pad order: last axis first
            pad += [0, skip.shape[axis] - up.shape[axis]]
        up = F.pad(up, pad, mode="replicate")
    return upcat.convs(torch.cat([skip, up], dim=1))
