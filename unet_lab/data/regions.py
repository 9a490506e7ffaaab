"""Overlapping classes as regions: each region is a union of label values of the label maps
(BraTS: whole tumour = {1, 2, 3}, tumour core = {2, 3}, enhancing tumour = {3}), trained with
one sigmoid per region, so a pixel can belong to several. ``data.regions`` defines them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from unet_lab.arguments import InvalidArgumentError

# Region targets mark ignored pixels (``ignore_index`` in the label map) with this value.
IGNORED = -1.0


class Regions:
    """Regions of label maps.

    Args:
        regions: region name -> the label values it unites, in the order they paint back into
            one label map (larger regions first: ``{whole: [1, 2, 3], core: [2, 3],
            enhancing: [3]}``).
        num_classes: label values are ``1 .. num_classes - 1`` (0 is background).

    A region paints, where it is predicted, the smallest of its values that no later region
    holds (whole -> 1, core -> 2, enhancing -> 3), so later regions win where they overlap; a
    region whose values all belong to later regions paints nothing. Regions that are the bits
    of the label values (:meth:`of_bits`, binary masks per class) pack back without loss
    instead: the value is the sum of ``2**k`` over the predicted regions k.
    """

    def __init__(self, regions: Mapping[str, Sequence[int]], num_classes: int) -> None:
        if not regions:
            raise InvalidArgumentError("regions", dict(regions), "at least one region")
        self.names = [str(name) for name in regions]
        self.values: list[list[int]] = []
        for name, values in regions.items():
            listed = [v for v in values] if isinstance(values, Sequence) else None
            ok = listed and all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v < num_classes
                for v in listed
            )
            if not ok:
                raise InvalidArgumentError(
                    f"regions.{name}", values, f"a list of label values in 1..{num_classes - 1}"
                )
            self.values.append(sorted(set(listed or [])))
        self.paint = []
        for index, values in enumerate(self.values):
            later = {v for region in self.values[index + 1 :] for v in region}
            own = [v for v in values if v not in later]
            self.paint.append(own[0] if own else None)
        count = len(self.values)
        self.packed = num_classes == 2**count and self.values == _bit_values(count)

    @classmethod
    def of_bits(cls, names: Sequence[str]) -> Regions:
        """One region per bit of the label values: region k holds every value with bit k set
        (label maps packed from binary masks, :mod:`unet_lab.data.mask_classes`)."""
        return cls(dict(zip(names, _bit_values(len(names)), strict=True)), 2 ** len(names))

    def __len__(self) -> int:
        return len(self.names)

    def targets(self, labels: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
        """Binary targets ``(N, R, *spatial)`` (float; :data:`IGNORED` at ignored pixels) of
        label maps ``(N, *spatial)``."""
        values = torch.as_tensor(labels)
        channels = [torch.isin(values, torch.tensor(v, device=values.device)) for v in self.values]
        targets = torch.stack(channels, dim=1).float()
        if ignore_index is not None:
            targets = targets.masked_fill((values == ignore_index).unsqueeze(1), IGNORED)
        return targets

    def masks(self, labels: np.ndarray) -> np.ndarray:
        """Boolean masks ``(R, *spatial)`` of a label map."""
        return np.stack([np.isin(labels, v) for v in self.values])

    def label_map(self, masks: np.ndarray) -> np.ndarray:
        """One label map (uint8, or uint16 beyond 256 values) from region masks
        ``(R, *spatial)``, painted in order or packed (see the class docstring)."""
        top = max(v for values in self.values for v in values)
        labels = np.zeros(masks.shape[1:], np.uint8 if top < 256 else np.uint16)
        if self.packed:
            for bit, mask in enumerate(masks):
                labels[mask] |= 1 << bit
            return labels
        for mask, value in zip(masks, self.paint, strict=True):
            if value is not None:
                labels[mask] = value
        return labels

    def legend(self) -> dict[int, str]:
        """The name of each value :meth:`label_map` writes (``0``: no region)."""
        if self.packed:
            return {
                value: "+".join(n for k, n in enumerate(self.names) if value >> k & 1) or "none"
                for value in range(2 ** len(self))
            }
        return {0: "none", **{v: n for n, v in zip(self.names, self.paint, strict=True) if v}}

    def state_dict(self) -> dict[str, list[int]]:
        """``{name: values}``, for checkpoints and sidecars."""
        return dict(zip(self.names, self.values, strict=True))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], num_classes: int) -> Regions:
        return cls({k: list(v) for k, v in state.items()}, num_classes)


def _bit_values(count: int) -> list[list[int]]:
    """For each of ``count`` bits, the values 1 .. 2**count - 1 that have it set."""
    return [[v for v in range(1, 2**count) if v >> k & 1] for k in range(count)]
