"""The U-Net (Ronneberger et al., 2015) with scalar knobs from which every list is derived, and
the common variants as options: residual blocks, attention gates, deep supervision."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from unet_lab.arguments import check_choice, check_float, check_int
from unet_lab.models.anisotropy import pooling_plan
from unet_lab.models.blocks import (
    BLOCKS,
    UP_MODES,
    BlockSpec,
    Down,
    Up,
    conv_block,
    crop_to,
    pad_to_multiple,
)
from unet_lab.models.layers import ACTIVATIONS, NORMS, SPATIAL_DIMS, conv

MAX_DEPTH = 7


def level_channels(depth: int, width: int, max_width: int | None = None) -> list[int]:
    """Channels at each of the ``depth + 1`` levels: ``width`` doubled per level, capped."""
    return [min(width * 2**level, max_width or width * 2**level) for level in range(depth + 1)]


class UNetFamily(nn.Module):
    """What every network of the family shares: checked arguments, the channels per level
    (derived from depth, width and cap), the block spec and the pooling plan (per-axis pooling
    and kernel sizes, from ``spacing``: :func:`~unet_lab.models.anisotropy.pooling_plan`)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int,
        width: int,
        max_width: int | None,
        up_mode: str,
        norm: str,
        activation: str,
        dropout: float,
        block: str,
        spatial_dims: int,
        valid: bool = False,
        spacing: Sequence[float] | None = None,
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
        check_choice("block", block, BLOCKS)
        if spatial_dims not in SPATIAL_DIMS:
            check_choice("spatial_dims", str(spatial_dims), [str(d) for d in SPATIAL_DIMS])
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.spatial_dims = spatial_dims
        self.channels = level_channels(depth, width, max_width)
        self.spec = BlockSpec(spatial_dims, norm, activation, dropout, block, valid)
        self.spacing = None if spacing is None else [float(s) for s in spacing]
        self.plan = pooling_plan(depth, spatial_dims, spacing)

    @property
    def size_multiple(self) -> tuple[int, ...]:
        """Per spatial axis: sizes that need no padding are multiples of this (the pooling
        grid; ``2**depth`` unless ``spacing`` spares a coarse axis some poolings)."""
        return self.plan.grid

    @property
    def output_margin(self) -> int:
        """Pixels the output lacks on each border (padded networks: none)."""
        return 0


class CheckpointedRunner:
    """Runs a block directly, or through ``torch.utils.checkpoint`` (activations recomputed in
    the backward pass instead of stored: less memory, about a third more compute)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, block: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        if self.enabled and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)


class UNet(UNetFamily):
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
        block: ``basic`` (two conv-norm-act layers) or ``residual`` (with a shortcut).
        attention: attention gates on the skip connections (Attention U-Net).
        deep_supervision: number of auxiliary outputs from the decoder levels below the top
            (0..depth-1). In training the network then returns a list: the output, then the
            auxiliary ones, each up-sampled to the input size; the module weights their losses
            by 1/2^i. In evaluation it returns the output only.
        checkpointing: recompute block activations in the backward pass instead of storing
            them (``torch.utils.checkpoint``), trading compute for memory.
        spacing: voxel size per spatial axis (``D, H, W``) of the data the network sees; an
            axis at least twice as coarse as the finest is neither pooled nor convolved (kernel
            1) until the others catch up (nnU-Net's rule, for thick slices). None: every axis
            pooled by 2 at every level.
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
        block: str = "basic",
        attention: bool = False,
        deep_supervision: int = 0,
        checkpointing: bool = False,
        spatial_dims: int = 2,
        spacing: Sequence[float] | None = None,
    ) -> None:
        super().__init__(
            in_channels, num_classes, depth, width, max_width, up_mode, norm, activation,
            dropout, block, spatial_dims, spacing=spacing,
        )  # fmt: skip
        self.deep_supervision = check_int("deep_supervision", deep_supervision, 0, depth - 1)
        self.run = CheckpointedRunner(checkpointing)
        spec, c, pools, kernels = self.spec, self.channels, self.plan.pools, self.plan.kernels
        self.stem = conv_block(in_channels, c[0], spec, kernels[0])
        self.down = nn.ModuleList(
            Down(c[i], c[i + 1], spec, pools[i], kernels[i + 1]) for i in range(depth)
        )
        self.up = nn.ModuleList(
            Up(c[i + 1], c[i], up_mode, spec, attention, pools[i], kernels[i])
            for i in reversed(range(depth))
        )
        self.head = conv(spatial_dims)(c[0], num_classes, 1)
        # Auxiliary heads on the decoder outputs of levels 1..deep_supervision.
        self.aux_heads = nn.ModuleList(
            conv(spatial_dims)(c[level], num_classes, 1)
            for level in range(1, self.deep_supervision + 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = x.shape[2:]
        x = pad_to_multiple(x, self.size_multiple)
        padded = x.shape[2:]
        skips = [self.run(self.stem, x)]
        for down in self.down:
            skips.append(self.run(down, skips[-1]))
        x = skips.pop()
        decoded = []  # decoder outputs, deepest first
        for up in self.up:
            x = self.run(up, x, skips.pop())
            decoded.append(x)
        logits = crop_to(self.head(x), size)
        if not (self.training and self.deep_supervision):
            return logits
        outputs = [logits]
        for level, head in enumerate(self.aux_heads, start=1):
            aux = head(decoded[-1 - level])
            mode = "trilinear" if self.spatial_dims == 3 else "bilinear"
            upsampled = F.interpolate(aux, size=padded, mode=mode, align_corners=False)
            outputs.append(crop_to(upsampled, size))
        return outputs
