"""Connected-component clean-up of predicted label maps (2D or 3D), per class: keep only the
largest component, or remove components smaller than a size. ``unet-lab cv`` chooses the rules
on out-of-fold predictions (keeping one only where it raises the class's mean Dice); ``predict``
and ``eval`` apply the chosen ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from unet_lab.arguments import check_choice, check_int

# face: neighbours share a side (4 in 2D, 6 in 3D); full: also edges and corners (8, 26).
CONNECTIVITIES = ("full", "face")
KINDS = ("largest", "min_size")


def components(mask: np.ndarray, connectivity: str = "full") -> tuple[np.ndarray, np.ndarray]:
    """Connected components of a boolean ``mask`` (any number of axes): the component index of
    every pixel (0 outside the mask) and each component's size (index ``i`` at ``i - 1``)."""
    rank = 1 if check_choice("connectivity", connectivity, CONNECTIVITIES) == "face" else mask.ndim
    structure = ndimage.generate_binary_structure(mask.ndim, rank)
    labelled, count = ndimage.label(mask, structure=structure)
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)[1:]
    return labelled, sizes


@dataclass(frozen=True)
class ComponentRule:
    """One class's clean-up.

    Args:
        class_index: the class it applies to; removed pixels become background (class 0).
        kind: ``largest`` (keep the largest connected component only) or ``min_size``
            (remove components of fewer than ``min_size`` pixels or voxels).
        min_size: the smallest component kept by ``min_size``.
    """

    class_index: int
    kind: str
    min_size: int = 0

    def __post_init__(self) -> None:
        check_int("class_index", self.class_index, 1)
        check_choice("kind", self.kind, KINDS)
        if self.kind == "min_size":
            check_int("min_size", self.min_size, 2)

    def apply(self, labels: np.ndarray, connectivity: str) -> np.ndarray:
        """``labels`` with this class's removed components set to 0 (a new array)."""
        labelled, sizes = components(labels == self.class_index, connectivity)
        if len(sizes) == 0:
            return labels
        if self.kind == "largest":
            keep = np.zeros(len(sizes) + 1, bool)
            keep[int(np.argmax(sizes)) + 1] = True
        else:
            keep = np.concatenate([[False], sizes >= self.min_size])
        removed = (labelled > 0) & ~keep[labelled]
        return np.where(removed, 0, labels).astype(labels.dtype, copy=False)

    def describe(self, class_names: Sequence[str]) -> str:
        name = class_names[self.class_index]
        if self.kind == "largest":
            return f"{name}: keep the largest component"
        return f"{name}: remove components under {self.min_size} px/voxels"


@dataclass
class Postprocessing:
    """Rules applied in order to a label map ``(H, W)`` or ``(D, H, W)``.

    Args:
        rules: at most one per class.
        connectivity: ``full`` (edges and corners connect) or ``face`` (sides only).
    """

    rules: list[ComponentRule] = field(default_factory=list)
    connectivity: str = "full"

    def __post_init__(self) -> None:
        check_choice("connectivity", self.connectivity, CONNECTIVITIES)

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        for rule in self.rules:
            labels = rule.apply(labels, self.connectivity)
        return labels

    def describe(self, class_names: Sequence[str]) -> str:
        if not self.rules:
            return "none"
        return "; ".join(rule.describe(class_names) for rule in self.rules)

    def state_dict(self) -> dict[str, Any]:
        """Plain values for JSON (the cv folder, an export's sidecar)."""
        return {
            "connectivity": self.connectivity,
            "rules": [
                {"class_index": r.class_index, "kind": r.kind, "min_size": r.min_size}
                for r in self.rules
            ],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Postprocessing:
        return cls([ComponentRule(**rule) for rule in state["rules"]], state["connectivity"])
