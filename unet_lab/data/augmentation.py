"""Albumentations pipelines built from a mapping of named transforms.

A pipeline is configured as ``{name: transform}`` so each transform can be changed or switched
off from the command line (``augmentation.train.transforms.hflip.p=1`` or
``augmentation.train.transforms.hflip=null``); transforms run in the mapping's order.
"""

from __future__ import annotations

from collections.abc import Mapping

import albumentations as A


def compose(transforms: Mapping[str, A.BasicTransform | None] | None = None) -> A.Compose:
    """``A.Compose`` of the transforms that are not None, applied jointly to image and mask."""
    steps = [t for t in (transforms or {}).values() if t is not None]
    for name, step in (transforms or {}).items():
        if step is not None and not isinstance(step, A.BasicTransform | A.BaseCompose):
            raise TypeError(f"augmentation transform {name!r} is not an albumentations transform")
    return A.Compose(steps)
