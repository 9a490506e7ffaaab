"""Pooling and convolution kernel sizes per axis, derived from the voxel spacing.

Thick-slice volumes (0.7 x 0.7 x 5 mm) pooled by 2 along every axis lose their few slices
long before the in-plane axes have context. nnU-Net's rule avoids it: an axis is pooled, and
convolved with a kernel of 3, only while its spacing is less than twice the finest axis'
spacing; each pooling doubles the spacing of the axes it pools, so the in-plane axes catch up
with a coarse one after a few levels, and from there every axis is pooled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from unet_lab.arguments import InvalidArgumentError

ANISOTROPY_RATIO = 2.0  # an axis this many times coarser than the finest is left alone


@dataclass(frozen=True)
class PoolingPlan:
    """Per-axis sizes of a network's down-sampling steps and convolutions.

    Attributes:
        pools: one entry per down-sampling step (``depth``): the pooling factor per spatial
            axis, 2 or 1.
        kernels: one entry per level (``depth + 1``; level 0 is full resolution): the
            convolution kernel per spatial axis, 3 or 1.
    """

    pools: tuple[tuple[int, ...], ...]
    kernels: tuple[tuple[int, ...], ...]

    @property
    def grid(self) -> tuple[int, ...]:
        """Per axis, the product of the pooling factors: sizes that are multiples of it need
        no padding."""
        grid = [1] * len(self.kernels[0])
        for pool in self.pools:
            grid = [g * p for g, p in zip(grid, pool, strict=True)]
        return tuple(grid)


def pooling_plan(depth: int, spatial_dims: int, spacing: Sequence[float] | None) -> PoolingPlan:
    """The pooling factors and kernel sizes of a ``depth``-step network for voxels of
    ``spacing``.

    Args:
        depth: number of down-sampling steps.
        spatial_dims: 2 or 3.
        spacing: voxel size per spatial axis, in the array's axis order (``D, H, W``), in any
            unit; None: isotropic (every axis pooled by 2 at every step, kernels of 3).

    Returns:
        A :class:`PoolingPlan`. Isotropic voxels (and ratios under 2) give the plain U-Net's
        sizes, so its weights keep their shapes.
    """
    if spacing is None:
        return PoolingPlan(
            pools=((2,) * spatial_dims,) * depth, kernels=((3,) * spatial_dims,) * (depth + 1)
        )
    values = [float(s) for s in spacing]
    if len(values) != spatial_dims or min(values) <= 0:
        raise InvalidArgumentError(
            "spacing", list(spacing), f"{spatial_dims} positive sizes, one per spatial axis"
        )
    pools, kernels = [], []
    for level in range(depth + 1):
        fine = [s < ANISOTROPY_RATIO * min(values) for s in values]
        kernels.append(tuple(3 if f else 1 for f in fine))
        if level < depth:
            pools.append(tuple(2 if f else 1 for f in fine))
            values = [2 * s if f else s for s, f in zip(values, fine, strict=True)]
    return PoolingPlan(pools=tuple(pools), kernels=tuple(kernels))
