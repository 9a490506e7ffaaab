"""Scores of a trained network on a split of its data, per class and per image, with the same
metric classes as the test stage (``unet-lab eval`` writes them)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from unet_lab.config.compose import compose_train_config, instantiate
from unet_lab.data.datamodule import InMemoryDataModule
from unet_lab.errors import InputError
from unet_lab.inference.trained import TrainedNetwork
from unet_lab.metrics.scores import SegmentationScores
from unet_lab.metrics.surface import SurfaceDistances


def data_config(stored: dict[str, Any], overrides: list[str]) -> DictConfig:
    """The checkpoint's data config with ``data.key=value`` overrides, or, with ``data=OPTION``,
    that option composed afresh with the overrides."""
    if any(o.startswith("data=") for o in overrides):
        return compose_train_config(overrides).data
    node = OmegaConf.create(stored["data"])
    dotlist = [o.removeprefix("data.") for o in overrides]
    for item in dotlist:
        key = item.split("=", 1)[0]
        if OmegaConf.select(node, key, default="__missing__") == "__missing__":
            raise InputError(f"unknown config key 'data.{key}'; data has: {', '.join(node)}")
    return OmegaConf.merge(node, OmegaConf.from_dotlist(dotlist))  # type: ignore[return-value]


# Data keys that checkpoints of earlier releases stored and the data modules no longer take.
_RETIRED_DATA_KEYS = ("split_file",)  # 0.1: the run writes split.json itself now


def load_data(cfg: DictConfig) -> InMemoryDataModule:
    """The data module of a data config (a checkpoint's, see :func:`data_config`), without
    augmentation."""
    with open_dict(cfg):
        for key in _RETIRED_DATA_KEYS:
            cfg.pop(key, None)
    return instantiate(cfg, "data", train_transform=None, eval_transform=None)


def image_names(datamodule: InMemoryDataModule, split: str, count: int) -> list[str]:
    """The names of a split's images (file stems), or ``<split><index>`` for generated data."""
    samples = getattr(datamodule, "split", {}).get(split)
    return [s[0] for s in samples] if samples else [f"{split}{i:04d}" for i in range(count)]


def evaluate(
    trained: TrainedNetwork,
    datamodule: InMemoryDataModule,
    split: str,
    predictor: Any,
    device: torch.device,
    ignore_index: int | None,
    include_background: bool,
) -> tuple[dict[str, float], list[dict[str, Any]], list[tuple[np.ndarray, ...]]]:
    """Split scores, per-image rows, and (image, truth, prediction) for every image."""
    if not datamodule.has_split(split):
        raise InputError(f"the data has no {split} split")
    images, masks = datamodule.load_split(split)
    names = trained.class_names
    scores = SegmentationScores(len(names), names, ignore_index, include_background)
    surfaces = SurfaceDistances(len(names), names, ignore_index, include_background)
    rows: list[dict[str, Any]] = []
    pictures: list[tuple[np.ndarray, ...]] = []
    for name, image, mask in zip(
        image_names(datamodule, split, len(images)), images, masks, strict=True
    ):
        probs = trained.predict(image, predictor, device)  # at the image's own size
        prediction = probs.argmax(dim=0)[None]
        truth = torch.from_numpy(np.asarray(mask).astype(np.int64))[None]
        image_scores = {}
        for metrics in (
            (scores, SegmentationScores(len(names), names, ignore_index, include_background)),
            (surfaces, SurfaceDistances(len(names), names, ignore_index, include_background)),
        ):
            for metric in metrics:
                metric.update(prediction, truth)
            image_scores.update({k: float(v) for k, v in metrics[1].compute().items()})
        row: dict[str, Any] = {"image": name}
        row.update({k: image_scores[k] for k in ("dice", "iou", "hd95", "asd")})
        for class_name in names:
            row.update(
                {f"{k}_{class_name}": image_scores[f"{k}_{class_name}"] for k in ("dice", "hd95")}
            )
        rows.append(row)
        labels = prediction[0].numpy().astype(np.uint8 if len(names) <= 256 else np.uint16)
        pictures.append((image, mask, labels))  # images are in memory already; labels small
    split_scores = {k: float(v) for k, v in {**scores.compute(), **surfaces.compute()}.items()}
    return split_scores, rows, pictures


def table(scores: dict[str, float], class_names: Sequence[str]) -> str:
    """Dice, IoU, HD95 and ASD per class and their means, as printed by ``unet-lab eval``."""
    lines = [f"{'class':<16} {'Dice':>7} {'IoU':>7} {'HD95 px':>8} {'ASD px':>7}"]
    for name in [*class_names, None]:
        suffix = f"_{name}" if name else ""
        label = name or "mean (scored)"
        values = [scores.get(f"{k}{suffix}", math.nan) for k in ("dice", "iou", "hd95", "asd")]
        lines.append(f"{label:<16} " + " ".join(f"{v:>7.4f}" for v in values[:2])
                     + f" {values[2]:>8.2f} {values[3]:>7.2f}")  # fmt: skip
    lines.append(f"pixel accuracy {scores['acc']:.4f}")
    return "\n".join(lines)
