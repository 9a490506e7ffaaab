"""The U-Net (Ronneberger et al., 2015) with scalar knobs from which every list is derived."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from unet_lab.models.blocks import UP_MODES, BlockSpec, ConvBlock, Down, Up
from unet_lab.models.layers import ACTIVATIONS, NORMS, SPATIAL_DIMS, conv
from unet_lab.validation import check_choice, check_float, check_int

MAX_DEPTH = 7


def level_channels(depth: int, width: int, max_width: int | None = None) -> list[int]:
    """Channels at each of the ``depth + 1`` levels: ``width`` doubled per level, capped."""
    return [min(width * 2**level, max_width or width * 2**level) for level in range(depth + 1)]


class UNet(nn.Module):
    """U-Net for 2D (or 3D) segmentation that accepts inputs of any spatial size.

    Args:
        in_channels: channels of the input image.
        num_classes: output channels, one logit per class.
        depth: number of 2x down-samplings (1..7); the network has ``depth + 1`` levels.
        width: channels at the top level, doubled at each level below.
        max_width: optional cap on the channels of any level.
        up_mode: ``transpose`` (2x2 transposed convolution), ``bilinear`` or ``nearest``
            (1x1 convolution then interpolation).
        norm: ``batch``, ``instance``, ``group`` or ``none``.
        activation: ``relu``, ``leaky_relu``, ``gelu``, ``silu`` or ``elu``.
        dropout: spatial dropout probability after each convolution block (0 disables it).
        spatial_dims: 2 for images, 3 for volumes.

    Inputs whose size is not a multiple of ``2**depth`` are mirror-padded and the output is
    cropped back, so the logits always have the input's spatial size.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        depth: int = 4,
        width: int = 32,
        max_width: int | None = None,
        up_mode: str = "transpose",
        norm: str = "batch",
        activation: str = "relu",
        dropout: float = 0.0,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels, 1)
        check_int("num_classes", num_classes, 1)
        check_int("depth", depth, 1, MAX_DEPTH)
        check_int("width", width, 1)
        if max_width is not None:
            check_int("max_width", max_width, width)
        check_choice("up_mode", up_mode, UP_MODES)
        check_choice("norm", norm, NORMS)
        check_choice("activation", activation, ACTIVATIONS)
        check_float("dropout", dropout, 0.0, 1.0)
        if spatial_dims not in SPATIAL_DIMS:
            check_choice("spatial_dims", str(spatial_dims), [str(d) for d in SPATIAL_DIMS])

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.spatial_dims = spatial_dims
        self.channels = level_channels(depth, width, max_width)

        spec = BlockSpec(spatial_dims, norm, activation, dropout)
        c = self.channels
        self.stem = ConvBlock(in_channels, c[0], spec)
        self.down = nn.ModuleList(Down(c[i], c[i + 1], spec) for i in range(depth))
        self.up = nn.ModuleList(Up(c[i + 1], c[i], up_mode, spec) for i in reversed(range(depth)))
        self.head = conv(spatial_dims)(c[0], num_classes, 1)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes that need no padding are multiples of this."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        x = self._pad(x)
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        logits = self.head(x)
        return logits[(..., *(slice(0, s) for s in size))]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        sizes = x.shape[2:]
        extra = [-s % self.size_multiple for s in sizes]
        if not any(extra):
            return x
        # F.pad takes (last_lo, last_hi, ..., first_lo, first_hi); pad only at the high end.
        pad = [p for e in reversed(extra) for p in (0, e)]
        mode = "reflect" if all(e < s for e, s in zip(extra, sizes, strict=True)) else "replicate"
        return F.pad(x, pad, mode=mode)
