"""Networks of other libraries behind unet-lab's model interface, for side-by-side comparisons.

They take ``in_channels`` and ``num_classes`` like :class:`~unet_lab.models.UNet` (the data sets
them), so ``model=monai_basic_unet`` trains with exactly the data, loss, optimizer, schedule and
augmentation of any other run. Their libraries are optional: ``pip install monai``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

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
        return self.net(image)
