"""Building blocks of the U-Net family: convolution blocks (plain or residual), down- and
up-sampling steps, attention gates, and the size helpers (padding, centre crops) they share."""

from __future__ import annotations

from collections.abc import Sequence
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
BLOCKS = ("basic", "residual")


@dataclass(frozen=True)
class BlockSpec:
    """What every convolution block of one network shares. ``valid``: unpadded 3x3 convolutions
    (each block then trims 2 pixels from every border, as in the 2015 paper)."""

    spatial_dims: int = 2
    norm: str = "batch"
    activation: str = "relu"
    dropout: float = 0.0
    block: str = "basic"
    valid: bool = False


Size = int | tuple[int, ...]  # one side for every axis, or one per axis


def _conv_norm(c_in: int, c_out: int, spec: BlockSpec, kernel: Size) -> list[nn.Module]:
    padding: Size = 0
    if not spec.valid:
        padding = kernel // 2 if isinstance(kernel, int) else tuple(k // 2 for k in kernel)
    return [
        conv(spec.spatial_dims)(c_in, c_out, kernel, padding=padding, bias=spec.norm == "none"),
        make_norm(spec.norm, spec.spatial_dims, c_out),
    ]


class ConvBlock(nn.Sequential):
    """Two (convolution, normalization, activation) layers, then optional spatial dropout.
    ``kernel``: 3 (3x3), or one size per axis (1 along an axis too coarse to convolve)."""

    def __init__(
        self, in_channels: int, out_channels: int, spec: BlockSpec, kernel: Size = 3
    ) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers += [
                *_conv_norm(c_in, out_channels, spec, kernel),
                make_activation(spec.activation),
            ]
        layers.append(dropout(spec.spatial_dims, spec.dropout))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (He et al., 2016): ``act(F(x) + shortcut(x))``; the
    shortcut is a 1x1 convolution when the channel count changes, and is centre-cropped when the
    convolutions are unpadded. ``kernel`` as :class:`ConvBlock`'s."""

    def __init__(
        self, in_channels: int, out_channels: int, spec: BlockSpec, kernel: Size = 3
    ) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            *_conv_norm(in_channels, out_channels, spec, kernel),
            make_activation(spec.activation),
            *_conv_norm(out_channels, out_channels, spec, kernel),
        )
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(spec.spatial_dims)(in_channels, out_channels, 1, bias=False),
                make_norm(spec.norm, spec.spatial_dims, out_channels),
            )
        self.activation = make_activation(spec.activation)
        self.dropout = dropout(spec.spatial_dims, spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.residual(x)
        shortcut = center_crop(self.shortcut(x), residual.shape[2:])
        return self.dropout(self.activation(residual + shortcut))


def conv_block(in_channels: int, out_channels: int, spec: BlockSpec, kernel: Size = 3) -> nn.Module:
    """The block ``spec.block`` names: ``basic`` (:class:`ConvBlock`) or ``residual``."""
    if spec.block == "residual":
        return ResidualBlock(in_channels, out_channels, spec, kernel)
    return ConvBlock(in_channels, out_channels, spec, kernel)


class Down(nn.Sequential):
    """Max-pool by ``pool`` (2, or one factor per axis), then a convolution block."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spec: BlockSpec,
        pool: Size = 2,
        kernel: Size = 3,
    ) -> None:
        super().__init__(
            max_pool(spec.spatial_dims)(pool), conv_block(in_channels, out_channels, spec, kernel)
        )


class Upsample(nn.Module):
    """Multiplies the spatial size by ``scale`` (2, or one factor per axis: the pooling it
    undoes) and maps ``in_channels`` to ``out_channels``.

    ``transpose`` is the paper's 2x2 up-convolution; ``bilinear``/``nearest`` apply a 1x1
    convolution at the low resolution first (4x cheaper than after), then interpolate.
    """

    def __init__(
        self, in_channels: int, out_channels: int, mode: str, spatial_dims: int, scale: Size = 2
    ) -> None:
        super().__init__()
        self.mode = mode
        self.scale = scale if isinstance(scale, int) else tuple(float(s) for s in scale)
        if mode == "transpose":
            self.proj = conv_transpose(spatial_dims)(in_channels, out_channels, scale, stride=scale)
        else:
            self.proj = conv(spatial_dims)(in_channels, out_channels, 1)
        # 'bilinear' names the 2D case; the same interpolation in 3D is 'trilinear'.
        self.interpolation = "trilinear" if (mode, spatial_dims) == ("bilinear", 3) else mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if self.mode == "transpose":
            return x
        align = None if self.mode == "nearest" else False
        return F.interpolate(
            x, scale_factor=self.scale, mode=self.interpolation, align_corners=align
        )


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Oktay et al., 2018, Attention U-Net): the
    decoder's up-sampled features ``gate`` weight each skip pixel by
    ``sigmoid(psi(relu(W_x skip + W_g gate)))`` in [0, 1]."""

    def __init__(self, channels: int, spatial_dims: int) -> None:
        super().__init__()
        inner = max(1, channels // 2)
        self.skip_proj = conv(spatial_dims)(channels, inner, 1, bias=False)
        self.gate_proj = conv(spatial_dims)(channels, inner, 1)
        self.psi = conv(spatial_dims)(inner, 1, 1)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.psi(F.relu(self.skip_proj(skip) + self.gate_proj(gate))))
        return skip * weights


class Up(nn.Module):
    """Upsample the deeper feature map by ``scale``, (centre-crop and optionally
    attention-gate) the skip connection, concatenate, then a convolution block of ``kernel``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        up_mode: str,
        spec: BlockSpec,
        attention: bool = False,
        scale: Size = 2,
        kernel: Size = 3,
    ) -> None:
        super().__init__()
        self.upsample = Upsample(in_channels, out_channels, up_mode, spec.spatial_dims, scale)
        self.gate = AttentionGate(out_channels, spec.spatial_dims) if attention else None
        self.block = conv_block(2 * out_channels, out_channels, spec, kernel)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)
        skip = center_crop(skip, x.shape[2:])
        if self.gate is not None:
            skip = self.gate(skip, x)
        return self.block(torch.cat([skip, x], dim=1))


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The centre ``size`` of the trailing spatial axes of ``x`` (unchanged if it fits)."""
    first = x.ndim - len(size)
    for axis, want in enumerate(size, start=first):
        x = x.narrow(axis, max(0, (x.shape[axis] - want) // 2), min(want, x.shape[axis]))
    return x


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The first ``size`` entries of the trailing spatial axes (undoes :func:`pad_to_multiple`
    and the high-end padding of :func:`mirror_pad`)."""
    first = x.ndim - len(size)
    for axis, want in enumerate(size, start=first):
        x = x.narrow(axis, 0, min(want, x.shape[axis]))
    return x


def mirror_pad(x: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """``F.pad`` by mirroring (``pad`` in F.pad's order: last axis low, high, then the one
    before...); pads wider than the image mirror repeatedly, as the paper's overlap-tile does."""
    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        # An exported graph takes any size: the same pixels, gathered without size branches.
        for axis in range(len(pad) // 2):
            x = x.index_select(-1 - axis, _mirror_index(x, -1 - axis, pad[2 * axis : 2 * axis + 2]))
        return x
    remaining = list(pad)
    while any(remaining):
        sizes = list(reversed(x.shape[2:]))  # matches F.pad's last-axis-first order
        step = [min(p, sizes[i // 2] - 1) for i, p in enumerate(remaining)]
        if not any(step):  # a side of one pixel cannot be mirrored: repeat it
            return F.pad(x, remaining, mode="replicate")
        x = F.pad(x, step, mode="reflect")
        remaining = [p - s for p, s in zip(remaining, step, strict=True)]
    return x


def _mirror_index(x: torch.Tensor, axis: int, pad: Sequence[int]) -> torch.Tensor:
    """Indices along ``axis`` that mirror-pad it by ``pad`` (low, high), as repeated
    reflection does: a triangle wave of period ``2 (n - 1)`` (a side of one pixel repeats).
    Arithmetic on sizes only (traced, or symbolic when exported), and no device constant: the
    positions come from a tensor like ``x``."""
    n = x.shape[axis]
    ones = torch.ones_like(x.reshape(-1)[:1], dtype=torch.long).expand(n)
    period = (2 * ones.sum() - 2).clamp(min=1)
    position = F.pad(ones, [pad[0], pad[1]], value=1).cumsum(0) - (1 + pad[0])
    phase = position.remainder(period)
    return torch.where(phase < n, phase, period - phase)


def pad_to_multiple(x: torch.Tensor, multiple: Size) -> torch.Tensor:
    """Mirror-pads the high end of every spatial axis up to a multiple of ``multiple`` (one
    for every axis, or one per axis)."""
    multiples = [multiple] * (x.ndim - 2) if isinstance(multiple, int) else list(multiple)
    extra = [-s % m for s, m in zip(x.shape[2:], multiples, strict=True)]
    pad = [p for e in reversed(extra) for p in (0, e)]
    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        # An exported graph takes any size: no branch on sizes, one reflection (maybe by 0).
        return F.pad(x, pad, mode="reflect")
    if not any(extra):
        return x
    return mirror_pad(x, pad)
