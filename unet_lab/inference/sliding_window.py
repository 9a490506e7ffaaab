"""Prediction on images and volumes of any size, tile by tile (the U-Net paper's overlap-tile
strategy), with 2 or 3 spatial axes alike.

The input is cut into tiles of ``tile_size`` (one side for all axes, or one per axis) that
overlap by ``overlap``; tiles go through the network in batches of ``batch_size``, so the
network's memory is bounded by the tile batch, whatever the input size (the accumulated output
is input-sized). Overlapping predictions are blended with a constant or a Gaussian weight (the
tile centre counts most). Borders are mirror-padded: inputs smaller than a tile, and networks
whose output is smaller than their input (unpadded convolutions, ``unet_paper`` with
``context=none``), get their missing context by mirroring, as in the paper.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from unet_lab.arguments import (
    InvalidArgumentError,
    check_choice,
    check_float,
    check_int,
    per_axis,
)
from unet_lab.inference.trained import probabilities
from unet_lab.models.blocks import mirror_pad

BLENDINGS = ("gaussian", "constant")
MIN_TILE_SIZE = 8
MAX_OVERLAP = 0.95  # tiles overlapping more would barely advance

Position = tuple[int, ...]  # a tile's start along each spatial axis


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``length`` (>= tile), ``step`` apart; the
    last tile ends at the border."""
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def gaussian_weights(size: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """A separable Gaussian over a tile with any number of axes, 1 at the centre, sigma =
    ``sigma_scale`` x the side (nnU-Net's choice), floored so that no pixel has weight 0."""
    weights = torch.ones(())
    for side in size:
        axis = torch.arange(side, dtype=torch.float32) - (side - 1) / 2
        profile = torch.exp(-0.5 * (axis / (sigma_scale * side)) ** 2)
        weights = weights[..., None] * profile
    return weights.clamp_min(1e-3)


def check_tile_size(value: int | Sequence[int]) -> int | tuple[int, ...]:
    """``tile_size``: an integer >= MIN_TILE_SIZE, or a non-empty list of them (one per
    spatial axis); else :class:`InvalidArgumentError` naming ``tile_size``."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        sides = list(value)
        expected = f"integers >= {MIN_TILE_SIZE}, one per spatial axis"
        if not sides:
            raise InvalidArgumentError("tile_size", sides, expected)
        try:
            return tuple(check_int("tile_size", side, MIN_TILE_SIZE) for side in sides)
        except InvalidArgumentError:
            raise InvalidArgumentError("tile_size", sides, expected) from None
    return check_int("tile_size", value, MIN_TILE_SIZE)


class SlidingWindowPredictor:
    """Class probabilities of a network for one image or volume of any size, tile by tile.

    Args:
        tile_size: side of the tiles fed to the network: one integer (square or cubic tiles),
            or one per spatial axis (e.g. ``[32, 128, 128]`` for depth, height, width).
        overlap: share of a tile that overlaps its neighbour (0 <= overlap < 1).
        blending: ``gaussian`` (centre pixels count most) or ``constant`` (plain mean).
        batch_size: tiles per forward pass.
        tta: average each tile over its symmetries (see
            :func:`unet_lab.inference.trained.probabilities`).
        progress: show a progress bar over the tile batches.
    """

    def __init__(
        self,
        tile_size: int | Sequence[int] = 512,
        overlap: float = 0.25,
        blending: str = "gaussian",
        batch_size: int = 4,
        tta: bool = False,
        progress: bool = False,
    ) -> None:
        self.tile_size = check_tile_size(tile_size)
        self.overlap = check_float("overlap", overlap, 0.0, MAX_OVERLAP)
        self.blending = check_choice("blending", blending, BLENDINGS)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.tta = tta
        self.progress = progress
        self._margins: dict[tuple[int, int, Position], int] = {}

    def tile_sides(self, spatial_dims: int) -> Position:
        """The input tile's side along each of ``spatial_dims`` axes."""
        if isinstance(self.tile_size, int):
            return (self.tile_size,) * spatial_dims
        if len(self.tile_size) != spatial_dims:
            raise InvalidArgumentError(
                "tile_size", list(self.tile_size), f"{spatial_dims} sides, one per spatial axis"
            )
        return self.tile_size

    def _margin(
        self, net: nn.Module, image: torch.Tensor, tile: Position, device: torch.device
    ) -> int:
        """Pixels a tile loses per border in the network: its ``output_margin`` if it says,
        else measured once with a blank tile (and remembered)."""
        known = getattr(net, "output_margin", None)
        if known is not None:
            return int(known)
        key = (id(net), image.shape[0], tile)
        if key not in self._margins:
            probe = torch.zeros((1, image.shape[0], *tile), dtype=image.dtype, device=device)
            with torch.inference_mode():
                self._margins[key] = (tile[-1] - int(net(probe).shape[-1])) // 2
        return self._margins[key]

    def __call__(self, net: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(classes, *spatial)`` for ``image`` ``(C, *spatial)`` (normalized;
        2 or 3 spatial axes)."""
        device = next(net.parameters(), torch.empty(0)).device  # (ONNX networks: CPU)
        sides = tuple(int(side) for side in image.shape[1:])
        tile = self.tile_sides(len(sides))
        margin = self._margin(net, image, tile, device)
        # Tiles start on the network's pooling grid, so each tile pools the pixels the whole
        # image would (with unpadded networks overlap-tile is then exact).
        aligns = per_axis(getattr(net, "size_multiple", 1), len(sides))
        # Output tile per axis: a padded network takes smaller inputs whole (no padding).
        out_tile = tuple(
            in_side - 2 * margin if margin else min(in_side, -(-side // align) * align)
            for in_side, side, align in zip(tile, sides, aligns, strict=True)
        )
        # Room for whole tiles on the grid along each axis, and context for the borders.
        extra = [
            max(0, out - side) + -max(0, side - out) % align
            for out, side, align in zip(out_tile, sides, aligns, strict=True)
        ]
        pad = [p for room in reversed(extra) for p in (margin, margin + room)]  # F.pad order
        padded = mirror_pad(image[None], pad)
        starts = [
            tile_starts(
                side + room, out, max(align, round(out * (1 - self.overlap)) // align * align)
            )
            for side, room, out, align in zip(sides, extra, out_tile, aligns, strict=True)
        ]
        dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
        weight = (
            gaussian_weights(out_tile) if self.blending == "gaussian" else torch.ones(out_tile)
        ).to(device, dtype)
        total: torch.Tensor | None = None
        padded_sides = [side + room for side, room in zip(sides, extra, strict=True)]
        weights = torch.zeros(padded_sides, device=device, dtype=dtype)
        in_tile = [out + 2 * margin for out in out_tile]
        for batch in self._batches(list(itertools.product(*starts))):
            tiles = [padded[(slice(None), slice(None), *window(start, in_tile))] for start in batch]
            probs = probabilities(net, torch.cat(tiles).to(device), self.tta)
            if total is None:
                total = torch.zeros(probs.shape[1], *weights.shape, device=device, dtype=dtype)
            for start, tile_probs in zip(batch, probs, strict=True):
                region = window(start, out_tile)
                total[(slice(None), *region)] += tile_probs * weight
                weights[region] += weight
        assert total is not None
        total /= weights  # in place: a large volume's probabilities are held once
        return total[(slice(None), *window((0,) * len(sides), sides))].cpu()

    def _batches(self, positions: list[Position]) -> Iterator[list[Position]]:
        chunks = [
            positions[i : i + self.batch_size] for i in range(0, len(positions), self.batch_size)
        ]
        if not self.progress or len(chunks) < 2:
            yield from chunks
            return
        from rich.progress import track

        yield from track(chunks, description="tiles", transient=True)


def window(start: Sequence[int], size: Sequence[int]) -> tuple[slice, ...]:
    """The slices of a box of ``size`` at ``start``, one per axis."""
    return tuple(slice(low, low + side) for low, side in zip(start, size, strict=True))
