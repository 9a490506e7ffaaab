"""The 2015 U-Net as published: unpadded ("valid") 3x3 convolutions, crop-and-concatenate skips,
2x2 up-convolutions, 64 channels at the top, depth 4 (572 px in, 388 px out)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unet_lab.arguments import check_choice
from unet_lab.errors import InputError
from unet_lab.models.blocks import Down, Up, conv_block, crop_to, mirror_pad
from unet_lab.models.layers import conv
from unet_lab.models.unet import UNetFamily

CONTEXTS = ("mirror", "none")


def output_size(input_size: int, depth: int) -> int | None:
    """The output side for an input side, or None when the input does not fit: each block
    trims 4 pixels and every pooled size must be even."""
    size = input_size
    for _ in range(depth):
        size -= 4
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= 4  # the bottom block
    if size <= 0:
        return None
    for _ in range(depth):
        size = 2 * size - 4
        if size <= 0:
            return None
    return size


def valid_input_sizes(depth: int, up_to: int = 1024) -> list[int]:
    """The input sides up to ``up_to`` that the unpadded network accepts."""
    return [n for n in range(1, up_to + 1) if output_size(n, depth) is not None]


class UNetPaper(UNetFamily):
    """The original U-Net (Ronneberger et al., 2015).

    Its output is smaller than its input by ``2 * margin`` pixels per axis (184 at depth 4):
    each output pixel sees ``margin`` pixels of context on every side. ``context`` says where
    that context comes from:

    - ``mirror`` (default): the input is mirror-padded by the margin (and up to the next valid
      size), and the output is cropped to the input's size: the paper's overlap-tile strategy
      with the whole image as one tile. Any input size works, the output matches it.
    - ``none``: the raw network. Inputs must have a valid size (``valid_input_sizes``; others
      raise an error that lists the nearest ones); the output is the centre of the input,
      and training crops the target to match.

    Other arguments as :class:`~unet_lab.models.UNet` (``norm="none"`` is the paper's).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        depth: int = 4,
        width: int = 64,
        max_width: int | None = None,
        norm: str = "none",
        activation: str = "relu",
        dropout: float = 0.0,
        block: str = "basic",
        context: str = "mirror",
        spatial_dims: int = 2,
    ) -> None:
        super().__init__(
            in_channels, num_classes, depth, width, max_width, "transpose", norm, activation,
            dropout, block, spatial_dims, valid=True,
        )  # fmt: skip
        self.context = check_choice("context", context, CONTEXTS)
        self.smallest = valid_input_sizes(depth, 16 * 2**depth)[0]  # 1532 at depth 7
        self.margin = (self.smallest - (output_size(self.smallest, depth) or 0)) // 2
        spec, c = self.spec, self.channels
        self.stem = conv_block(in_channels, c[0], spec)
        self.down = nn.ModuleList(Down(c[i], c[i + 1], spec) for i in range(depth))
        self.up = nn.ModuleList(
            Up(c[i + 1], c[i], "transpose", spec) for i in reversed(range(depth))
        )
        self.head = conv(spatial_dims)(c[0], num_classes, 1)

    @property
    def output_margin(self) -> int:
        """Pixels the output lacks on each border (0 with ``context=mirror``)."""
        return self.margin if self.context == "none" else 0

    @property
    def valid_sizes(self) -> tuple[int, int] | None:
        """``(first, step)``: the raw network (``context=none``) takes sides ``first + k step``
        only; None with ``context=mirror`` (any side)."""
        return (self.smallest, 2**self.depth) if self.context == "none" else None

    def mirror_size(self, side: Any) -> Any:
        """The smallest valid input side with ``margin`` pixels of context around ``side``.
        Valid sides are ``smallest + k 2**depth``, so this is arithmetic (traced or symbolic
        when exported: an exported graph takes any size), not a search."""
        step = 2**self.depth
        return self.smallest + (side + 2 * self.margin - self.smallest + step - 1) // step * step

    def check_size(self, size: int) -> None:
        """Raises an :class:`InputError` listing the nearest valid sizes for an invalid one."""
        if output_size(size, self.depth) is not None:
            return
        valid = valid_input_sizes(self.depth, max(2 * size, self.smallest + 4 * 2**self.depth))
        nearest = sorted(valid, key=lambda n: abs(n - size))[:4]
        raise InputError(
            f"unet_paper (depth {self.depth}, context=none) cannot take {size} px: valid "
            f"sizes are {valid[0]} + {valid[1] - valid[0]}k (nearest: "
            f"{', '.join(map(str, sorted(nearest)))}); output = input - {2 * self.margin}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        if self.context == "mirror":
            pad: list[int] = []
            for side in reversed(size):  # F.pad order: last axis first
                pad += [self.margin, self.mirror_size(side) - side - self.margin]
            x = mirror_pad(x, pad)
        elif not (torch.compiler.is_exporting() or torch.jit.is_tracing()):
            for side in size:
                self.check_size(int(side))
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        logits = self.head(x)
        if self.context == "mirror":
            logits = crop_to(logits, size)
        return logits
