"""UNet++ (Zhou et al., 2018): the U-Net's skips replaced by nested, densely connected decoders,
built from the same blocks as :class:`~unet_lab.models.UNet`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from unet_lab.arguments import check_int
from unet_lab.models.blocks import Down, Upsample, conv_block, crop_to, pad_to_multiple
from unet_lab.models.layers import conv
from unet_lab.models.unet import CheckpointedRunner, UNetFamily


class UNetPlusPlus(UNetFamily):
    """UNet++: node ``X[i][j]`` (level ``i``, column ``j``) is a convolution block over
    ``X[i][0..j-1]`` and the up-sampled ``X[i+1][j-1]``; the output comes from ``X[0][depth]``.

    Arguments as :class:`~unet_lab.models.UNet` (no attention gates). ``deep_supervision``:
    auxiliary outputs from the top-level nodes ``X[0][depth-1]``, ``X[0][depth-2]``, ... (the
    paper's deep supervision), returned in training only, loss weights 1/2^i.
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
        # Keys "i_j" for the nodes X[i][j], j >= 1 (i + j <= depth).
        self.upsample = nn.ModuleDict()
        self.nodes = nn.ModuleDict()
        for j in range(1, depth + 1):
            for i in range(depth - j + 1):
                self.upsample[f"{i}_{j}"] = Upsample(
                    c[i + 1], c[i], up_mode, spatial_dims, pools[i]
                )
                self.nodes[f"{i}_{j}"] = conv_block(c[i] * (j + 1), c[i], spec, kernels[i])
        self.head = conv(spatial_dims)(c[0], num_classes, 1)
        self.aux_heads = nn.ModuleList(
            conv(spatial_dims)(c[0], num_classes, 1) for _ in range(self.deep_supervision)
        )

    def _node(self, key: str, inputs: list[torch.Tensor], deeper: torch.Tensor) -> torch.Tensor:
        return self.nodes[key](torch.cat([*inputs, self.upsample[key](deeper)], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = x.shape[2:]
        x = pad_to_multiple(x, self.size_multiple)
        grid: list[list[torch.Tensor]] = [[self.run(self.stem, x)]]
        for down in self.down:
            grid.append([self.run(down, grid[-1][0])])
        for j in range(1, self.depth + 1):
            for i in range(self.depth - j + 1):
                grid[i].append(self.run(self._node, f"{i}_{j}", grid[i][:j], grid[i + 1][j - 1]))
        logits = crop_to(self.head(grid[0][self.depth]), size)
        if not (self.training and self.deep_supervision):
            return logits
        aux = [
            crop_to(head(grid[0][self.depth - k]), size)
            for k, head in enumerate(self.aux_heads, start=1)
        ]
        return [logits, *aux]
