"""Layer factory: the one place that knows about 2D versus 3D, norms and activations.

Blocks ask for ``conv(spatial_dims)`` or ``make_norm(...)`` instead of naming ``nn.Conv2d``, so a
3D network is the same code with ``spatial_dims=3``.
"""

from __future__ import annotations

import math

from torch import nn

from unet_lab.arguments import check_choice

NORMS = ("batch", "instance", "group", "none")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu", "elu")
SPATIAL_DIMS = (2, 3)

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_ACTIVATION = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
}
GROUP_NORM_GROUPS = 8


def conv(spatial_dims: int) -> type[nn.Module]:
    return _CONV[spatial_dims]


def conv_transpose(spatial_dims: int) -> type[nn.Module]:
    return _CONV_TRANSPOSE[spatial_dims]


def max_pool(spatial_dims: int) -> type[nn.Module]:
    return _MAX_POOL[spatial_dims]


def dropout(spatial_dims: int, p: float) -> nn.Module:
    return _DROPOUT[spatial_dims](p) if p > 0 else nn.Identity()


def make_norm(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """A normalization layer; group norm uses up to 8 groups that divide ``channels``."""
    check_choice("norm", norm, NORMS)
    if norm == "batch":
        return _BATCH_NORM[spatial_dims](channels)
    if norm == "instance":
        return _INSTANCE_NORM[spatial_dims](channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(math.gcd(channels, GROUP_NORM_GROUPS), channels)
    return nn.Identity()


def make_activation(activation: str) -> nn.Module:
    check_choice("activation", activation, ACTIVATIONS)
    return _ACTIVATION[activation]()
