"""Prediction on images of any size, tile by tile (the U-Net paper's overlap-tile strategy).

The image is cut into tiles of ``tile_size`` that overlap by ``overlap``; tiles go through the
network in batches of ``batch_size``, so the network's memory is bounded by the tile batch,
whatever the image size (the accumulated output is image-sized). Overlapping predictions are
blended with a constant or a Gaussian weight (the tile centre counts most). Borders are
mirror-padded: images smaller than a tile, and networks whose output is smaller than their input
(unpadded convolutions, ``unet_paper`` with ``context=none``), get their missing context by
mirroring, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from unet_lab.arguments import check_choice, check_float, check_int
from unet_lab.inference.trained import probabilities
from unet_lab.models.blocks import mirror_pad

BLENDINGS = ("gaussian", "constant")
MIN_TILE_SIZE = 8
MAX_OVERLAP = 0.95  # tiles overlapping more would barely advance


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``length`` (>= tile), ``step`` apart; the
    last tile ends at the border."""
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def gaussian_weights(size: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """A separable Gaussian over a tile, 1 at the centre, sigma = ``sigma_scale`` x the side
    (nnU-Net's choice), floored so that no pixel has weight 0."""
    weights = torch.ones(())
    for side in size:
        axis = torch.arange(side, dtype=torch.float32) - (side - 1) / 2
        profile = torch.exp(-0.5 * (axis / (sigma_scale * side)) ** 2)
        weights = weights[..., None] * profile
    return weights.clamp_min(1e-3)


class SlidingWindowPredictor:
    """Class probabilities of a network for one image of any size, tile by tile.

    Args:
        tile_size: side of the square tiles fed to the network.
        overlap: share of a tile that overlaps its neighbour (0 <= overlap < 1).
        blending: ``gaussian`` (centre pixels count most) or ``constant`` (plain mean).
        batch_size: tiles per forward pass.
        tta: average each tile over the 8 flips/rotations.
        progress: show a progress bar over the tile batches.
    """

    def __init__(
        self,
        tile_size: int = 512,
        overlap: float = 0.25,
        blending: str = "gaussian",
        batch_size: int = 4,
        tta: bool = False,
        progress: bool = False,
    ) -> None:
        self.tile_size = check_int("tile_size", tile_size, MIN_TILE_SIZE)
        self.overlap = check_float("overlap", overlap, 0.0, MAX_OVERLAP)
        self.blending = check_choice("blending", blending, BLENDINGS)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.tta = tta
        self.progress = progress
        self._margins: dict[tuple[int, int], int] = {}

    def _margin(self, net: nn.Module, image: torch.Tensor, device: torch.device) -> int:
        """Pixels a tile loses per border in the network: its ``output_margin`` if it says,
        else measured once with a blank tile (and remembered)."""
        known = getattr(net, "output_margin", None)
        if known is not None:
            return int(known)
        key = (id(net), image.shape[0])
        if key not in self._margins:
            size = (1, image.shape[0], self.tile_size, self.tile_size)
            probe = torch.zeros(size, dtype=image.dtype, device=device)
            with torch.inference_mode():
                self._margins[key] = (self.tile_size - int(net(probe).shape[-1])) // 2
        return self._margins[key]

    def __call__(self, net: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(classes, H, W)`` for ``image`` ``(C, H, W)`` (normalized)."""
        device = next(net.parameters(), torch.empty(0)).device  # (ONNX networks: CPU)
        sides = tuple(int(s) for s in image.shape[-2:])
        margin = self._margin(net, image, device)
        # Tiles start on the network's pooling grid, so each tile pools the pixels the whole
        # image would (with unpadded networks overlap-tile is then exact).
        align = int(getattr(net, "size_multiple", 1))
        # Output tile per axis: a padded network takes smaller images whole (no padding).
        out_tile = tuple(
            self.tile_size - 2 * margin
            if margin
            else min(self.tile_size, -(-side // align) * align)
            for side in sides
        )
        # Room for whole tiles on the grid along each axis, and context for the borders.
        extra = [
            max(0, out - side) + -max(0, side - out) % align
            for out, side in zip(out_tile, sides, strict=True)
        ]
        padded = mirror_pad(image[None], [margin, margin + extra[1], margin, margin + extra[0]])
        starts = [
            tile_starts(
                side + room, out, max(align, round(out * (1 - self.overlap)) // align * align)
            )
            for side, room, out in zip(sides, extra, out_tile, strict=True)
        ]
        dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
        weight = (
            gaussian_weights(out_tile) if self.blending == "gaussian" else torch.ones(out_tile)
        ).to(device, dtype)
        total: torch.Tensor | None = None
        weights = torch.zeros(sides[0] + extra[0], sides[1] + extra[1], device=device, dtype=dtype)
        out_height, out_width = out_tile
        in_height, in_width = out_height + 2 * margin, out_width + 2 * margin
        positions = [(row, col) for row in starts[0] for col in starts[1]]
        for batch in self._batches(positions):
            tiles = torch.cat(
                [padded[..., row : row + in_height, col : col + in_width] for row, col in batch]
            ).to(device)
            probs = probabilities(net, tiles, self.tta)
            if total is None:
                total = torch.zeros(probs.shape[1], *weights.shape, device=device, dtype=dtype)
            for (row, col), tile_probs in zip(batch, probs, strict=True):
                total[:, row : row + out_height, col : col + out_width] += tile_probs * weight
                weights[row : row + out_height, col : col + out_width] += weight
        assert total is not None
        return (total / weights)[:, : sides[0], : sides[1]].cpu()

    def _batches(self, positions: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
        chunks = [
            positions[i : i + self.batch_size] for i in range(0, len(positions), self.batch_size)
        ]
        if not self.progress or len(chunks) < 2:
            yield from chunks
            return
        from rich.progress import track

        yield from track(chunks, description="tiles", transient=True)
