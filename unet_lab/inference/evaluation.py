"""Scores of a trained network on a split of its data, per class and per image, with the same
metric classes as the test stage (``unet-lab eval`` writes them)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from unet_lab.config.compose import compose_train_config, instantiate
from unet_lab.data.datamodule import InMemoryDataModule
from unet_lab.data.regions import Regions
from unet_lab.data.volumes.patches import busiest_slice
from unet_lab.errors import InputError
from unet_lab.inference.trained import TrainedNetwork
from unet_lab.inference.volumes import is_volume_network, predict_volume, read_case
from unet_lab.metrics.multilabel import MultiLabelScores
from unet_lab.metrics.scores import SegmentationScores
from unet_lab.metrics.surface import SurfaceDistances, hd95_and_asd


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


class SplitScores:
    """Scores of a split, accumulated case by case: the split's Dice, IoU, accuracy, HD95 and
    ASD, and one row per case (``per_image.csv``)."""

    def __init__(self, class_names: Sequence[str], ignore_index: int | None, background: bool):
        self.names = list(class_names)
        self.settings = (len(self.names), self.names, ignore_index, background)
        self.overlap = SegmentationScores(*self.settings)
        self.surfaces = SurfaceDistances(*self.settings)
        self.rows: list[dict[str, Any]] = []

    def add(
        self, name: str, prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None
    ) -> None:
        """One case: predicted and true labels of the same shape; ``spacing`` in mm per axis
        (volumes; None: pixels)."""
        predicted = torch.from_numpy(np.asarray(prediction).astype(np.int64))[None]
        target = torch.from_numpy(np.asarray(truth).astype(np.int64))[None]
        scores: dict[str, float] = {}
        for total, single in (
            (self.overlap, SegmentationScores(*self.settings)),
            (self.surfaces, SurfaceDistances(*self.settings)),
        ):
            extra = {"spacing": tuple(spacing)} if spacing and total is self.surfaces else {}
            for metric in (total, single):
                metric.update(predicted, target, **extra)
            scores.update({k: float(v) for k, v in single.compute().items()})
        row: dict[str, Any] = {"image": name}
        row.update({k: scores[k] for k in ("dice", "iou", "hd95", "asd")})
        for class_name in self.names:
            row.update({f"{k}_{class_name}": scores[f"{k}_{class_name}"] for k in ("dice", "hd95")})
        self.rows.append(row)

    def compute(self) -> dict[str, float]:
        totals = {**self.overlap.compute(), **self.surfaces.compute()}
        return {k: float(v) for k, v in totals.items()}


class RegionSplitScores:
    """:class:`SplitScores` for overlapping regions (``data.regions``): Dice, IoU and accuracy
    per region over the split, HD95 and ASD per region averaged over cases, one row per case."""

    def __init__(self, regions: Regions, ignore_index: int | None) -> None:
        self.regions = regions
        self.ignore_index = ignore_index
        self.overlap = MultiLabelScores(regions.names)
        self.distances: list[dict[str, float]] = []
        self.rows: list[dict[str, Any]] = []

    def add(
        self, name: str, masks: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None
    ) -> None:
        """One case: predicted region masks ``(R, *spatial)`` and its true label map."""
        target = self.regions.targets(torch.from_numpy(np.asarray(truth))[None], self.ignore_index)
        predicted = torch.from_numpy(np.asarray(masks))[None]
        single = MultiLabelScores(self.regions.names)
        for metric in (self.overlap, single):
            metric.update(predicted, target)
        scores = {k: float(v) for k, v in single.compute().items()}
        distances: dict[str, float] = {}
        for index, region in enumerate(self.regions.names):
            hd95, asd = hd95_and_asd(masks[index], (target[0, index] > 0).numpy(), spacing)
            distances[f"hd95_{region}"], distances[f"asd_{region}"] = hd95, asd
        self.distances.append(distances)
        row: dict[str, Any] = {"image": name, "dice": scores["dice"], "iou": scores["iou"]}
        row["hd95"] = _nanmean([distances[f"hd95_{r}"] for r in self.regions.names])
        row["asd"] = _nanmean([distances[f"asd_{r}"] for r in self.regions.names])
        for region in self.regions.names:
            row[f"dice_{region}"] = scores[f"dice_{region}"]
            row[f"hd95_{region}"] = distances[f"hd95_{region}"]
        self.rows.append(row)

    def compute(self) -> dict[str, float]:
        totals = {k: float(v) for k, v in self.overlap.compute().items()}
        for key in self.distances[0] if self.distances else []:
            totals[key] = _nanmean([d[key] for d in self.distances])
        for kind in ("hd95", "asd"):
            totals[kind] = _nanmean([totals[f"{kind}_{r}"] for r in self.regions.names])
        return totals


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


class CasePrediction(NamedTuple):
    """One case of a split, predicted: its image (``(H, W[, C])``, or a volume's
    ``(I, J, K, C)``), true and predicted labels at its own size, its spacing in mm per axis
    (volumes; None: pixels), and for a network of overlapping regions its predicted region
    masks ``(R, *spatial)``."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    spacing: Sequence[float] | None
    masks: np.ndarray | None = None


def predicted_cases(
    trained: TrainedNetwork,
    datamodule: InMemoryDataModule,
    split: str,
    predictor: Any,
    device: torch.device,
    postprocess: bool = True,
) -> Iterator[CasePrediction]:
    """The cases of a split, one at a time, predicted at their own size (volumes: read from
    their files and predicted in their own geometry), with the network's postprocessing unless
    ``postprocess`` is false."""
    if not datamodule.has_split(split):
        raise InputError(f"the data has no {split} split")
    if is_volume_network(trained):
        for case in datamodule.split[split]:  # type: ignore[attr-defined]
            image, volume = read_case(trained, case.images)
            truth = datamodule.read_labels(case).array  # type: ignore[attr-defined]
            probs = predict_volume(trained, image, volume.affine, predictor, device)
            labels = trained.labels(probs, postprocess)
            region_masks = probs > 0.5 if trained.regions is not None else None
            yield CasePrediction(case.name, image, truth, labels, volume.spacing, region_masks)
        return
    images, masks = datamodule.load_split(split)
    for name, image, mask in zip(
        image_names(datamodule, split, len(images)), images, masks, strict=True
    ):
        probs = trained.predict(image, predictor, device).numpy()
        region_masks = probs > 0.5 if trained.regions is not None else None
        labels = trained.labels(probs, postprocess)
        yield CasePrediction(name, image, mask, labels, None, region_masks)


def evaluate(
    trained: TrainedNetwork,
    datamodule: InMemoryDataModule,
    split: str,
    predictor: Any,
    device: torch.device,
    ignore_index: int | None,
    include_background: bool,
    postprocess: bool = True,
) -> tuple[dict[str, float], list[dict[str, Any]], list[tuple[np.ndarray, ...]]]:
    """Split scores, per-image rows, and (image, truth, prediction) for every image (for
    volumes: the slice with the most foreground), each at the image's own size (volumes: in
    the file's own geometry, distances in mm)."""
    scores: SplitScores | RegionSplitScores
    if trained.regions is not None:
        scores = RegionSplitScores(trained.regions, ignore_index)
    else:
        scores = SplitScores(trained.class_names, ignore_index, include_background)
    pictures: list[tuple[np.ndarray, ...]] = []
    classes = len(trained.class_names)
    for case in predicted_cases(trained, datamodule, split, predictor, device, postprocess):
        if isinstance(scores, RegionSplitScores):
            assert case.masks is not None
            scores.add(case.name, case.masks, case.truth, case.spacing)
        else:
            scores.add(case.name, case.prediction, case.truth, case.spacing)
        if case.spacing is None:
            pictures.append((case.image, case.truth, _small(case.prediction, classes)))
            continue
        k = busiest_slice(case.truth, axis=2)
        picture = (
            case.image[:, :, k, :1],
            case.truth[:, :, k],
            _small(case.prediction[:, :, k], classes),
        )
        pictures.append(picture)
    return scores.compute(), scores.rows, pictures


def _small(labels: np.ndarray, classes: int) -> np.ndarray:
    return labels.astype(np.uint8 if classes <= 256 else np.uint16)


def table(scores: dict[str, float], class_names: Sequence[str], unit: str = "px") -> str:
    """Dice, IoU, HD95 and ASD (in ``unit``) per class and their means, as printed by
    ``unet-lab eval``."""
    lines = [f"{'class':<16} {'Dice':>7} {'IoU':>7} {'HD95 ' + unit:>8} {'ASD ' + unit:>7}"]
    for name in [*class_names, None]:
        suffix = f"_{name}" if name else ""
        label = name or "mean (scored)"
        values = [scores.get(f"{k}{suffix}", math.nan) for k in ("dice", "iou", "hd95", "asd")]
        lines.append(f"{label:<16} " + " ".join(f"{v:>7.4f}" for v in values[:2])
                     + f" {values[2]:>8.2f} {values[3]:>7.2f}")  # fmt: skip
    lines.append(f"pixel accuracy {scores['acc']:.4f}")
    return "\n".join(lines)
