"""``unet-lab check-data [overrides]``: read and check a data set, print what it holds.

Uses the same config as training (``data=folder data.root=DIR ...``), so what passes here
loads the same way in ``train.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from omegaconf import DictConfig

from unet_lab.config.compose import compose_train_config
from unet_lab.data.datamodule import SPLITS, InMemoryDataModule
from unet_lab.errors import input_errors_exit
from unet_lab.training.build import build_datamodule


def summarize(datamodule: InMemoryDataModule) -> str:
    """Counts, sizes, channels, dtypes per split, and class pixel shares with stored labels."""
    names = datamodule.class_names
    volumes = getattr(datamodule, "spatial_dims", 2) == 3  # (C, D, H, W) as preprocessed
    size_names = "sizes (DxHxW)" if volumes else "sizes (HxW)"
    lines = [f"{'split':<6} {'images':>6}  {size_names:<21} {'channels':>8}  dtypes"]
    pixels = np.zeros(len(names) + 1, np.int64)  # the last bin counts ignored pixels
    for split in SPLITS:
        if not datamodule.has_split(split):
            lines.append(f"{split:<6} {'-':>6}")
            continue
        images, masks = datamodule.load_split(split)
        shapes = [mask.shape for mask in masks]
        smallest, largest = (
            tuple(f(axis) for axis in zip(*shapes, strict=True)) for f in (min, max)
        )
        sizes = "x".join(map(str, smallest))
        if largest != smallest:
            sizes += " .. " + "x".join(map(str, largest))
        channels = sorted({image.shape[0] if volumes else image.shape[2] for image in images})
        dtypes = sorted({str(image.dtype) for image in images})
        lines.append(
            f"{split:<6} {len(images):>6}  {sizes:<21} {','.join(map(str, channels)):>8}  "
            f"{','.join(dtypes)}"
        )
        for mask in masks:
            counts = np.bincount(mask.ravel().astype(np.int64), minlength=len(names))
            pixels[: len(names)] += counts[: len(names)]
            pixels[-1] += counts[len(names) :].sum()
    total = max(int(pixels.sum()), 1)
    shares = ", ".join(f"{name} {100 * pixels[i] / total:.1f}%" for i, name in enumerate(names))
    lines.append(f"classes (share of labelled pixels): {shares}")
    if pixels[-1]:
        lines.append(f"ignored pixels: {100 * pixels[-1] / total:.1f}%")
    scale = float(getattr(datamodule, "scale", 1.0))
    if scale != 1:
        lines.append(
            f"working resolution: data.scale={scale:g} (training and validation while fitting; "
            "final scores, eval and predict at each image's own size)"
        )
    return "\n".join(lines)


def background_line(cfg: DictConfig) -> str:
    """Which mean scores are in force: with or without class 0."""
    names = list(cfg.data.get("class_names") or []) or ["background"]
    if cfg.module.get("include_background", False):
        return (
            f"mean scores include class 0 ({names[0]}): module.include_background=true "
            "(set false when class 0 is background)"
        )
    return (
        f"mean scores leave class 0 ({names[0]}) out, as background: "
        "module.include_background=false (set true when class 0 is a real class, e.g. sky)"
    )


def main(args: Sequence[str]) -> None:
    with input_errors_exit():
        cfg = compose_train_config(list(args))
        report = summarize(build_datamodule(cfg))
    print(f"data: {cfg.data._target_}")
    print(report)
    print(background_line(cfg))
    print("OK: every image and mask was read and matches the configured classes")
