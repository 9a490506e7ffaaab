"""``python eval.py ckpt_path=CKPT [split=test] [data.* overrides]``: scores of a checkpoint on
a split, per class and per image, with pictures of the worst images (``conf/eval.yaml``).

Writes ``metrics.json`` (per-class Dice, IoU, HD95, ASD and their means, as the test stage logs
them), ``per_image.csv`` and ``worst_<rank>_<name>.png`` (image | truth | prediction).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from unet_lab.config import compose_config, compose_train_config, instantiate
from unet_lab.data.datamodule import InMemoryDataModule
from unet_lab.errors import InputError, input_errors_exit
from unet_lab.inference import TrainedNetwork, load_trained
from unet_lab.metrics import SegmentationScores
from unet_lab.predict import pick_device
from unet_lab.surface_metrics import SurfaceDistances
from unet_lab.visual import colour, display, side_by_side, write_rgb


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


def load_data(cfg: DictConfig) -> InMemoryDataModule:
    extra = {"split_file": None} if "split_file" in cfg else {}
    return instantiate(cfg, "data", train_transform=None, eval_transform=None, **extra)


def image_names(datamodule: InMemoryDataModule, split: str, count: int) -> list[str]:
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
    lines = [f"{'class':<16} {'Dice':>7} {'IoU':>7} {'HD95 px':>8} {'ASD px':>7}"]
    for name in [*class_names, None]:
        suffix = f"_{name}" if name else ""
        label = name or "mean (scored)"
        values = [scores.get(f"{k}{suffix}", math.nan) for k in ("dice", "iou", "hd95", "asd")]
        lines.append(f"{label:<16} " + " ".join(f"{v:>7.4f}" for v in values[:2])
                     + f" {values[2]:>8.2f} {values[3]:>7.2f}")  # fmt: skip
    lines.append(f"pixel accuracy {scores['acc']:.4f}")
    return "\n".join(lines)


def output_folder(cfg: DictConfig) -> Path:
    if cfg.output:
        return Path(cfg.output)
    checkpoint = Path(cfg.ckpt_path).resolve()
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else Path.cwd()
    return run_dir / "eval" / f"{cfg.split}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def run(cfg: DictConfig, data_overrides: list[str]) -> dict[str, Any]:
    trained = load_trained(cfg.ckpt_path)
    device = pick_device(cfg.device)
    trained.net.to(device)
    datamodule = load_data(data_config(trained.config, data_overrides))
    module_cfg = trained.config.get("module", {})
    split_scores, rows, pictures = evaluate(
        trained,
        datamodule,
        cfg.split,
        instantiate(cfg.window, "window", tta=cfg.tta),
        device,
        module_cfg.get("ignore_index"),
        bool(module_cfg.get("include_background", False)),
    )
    output = output_folder(cfg)
    output.mkdir(parents=True, exist_ok=True)
    summary = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "split": cfg.split,
        "images": len(rows),
        "tta": bool(cfg.tta),
        "scale": trained.scale,  # the network's working resolution; scores at native size
        "window": OmegaConf.to_container(cfg.window),
        "scores": {k: (None if math.isnan(v) else v) for k, v in split_scores.items()},
    }
    (output / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (output / "per_image.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    order = sorted(range(len(rows)), key=lambda i: (math.isnan(rows[i]["dice"]), rows[i]["dice"]))
    for rank, index in enumerate(order[: cfg.worst], start=1):
        image, truth, prediction = pictures[index]
        picture = side_by_side([display(image), colour(truth), colour(prediction)])
        write_rgb(output / f"worst_{rank}_{rows[index]['image']}.png", picture)
    print(f"{cfg.split}: {len(rows)} images, checkpoint {cfg.ckpt_path}")
    print(table(split_scores, trained.class_names))
    print(f"wrote {output}/metrics.json, per_image.csv and {min(cfg.worst, len(rows))} overlays")
    return summary


def main(args: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if args is None else args)
    data_overrides = [a for a in arguments if a.startswith(("data.", "data="))]
    own = [a for a in arguments if a not in data_overrides]
    with input_errors_exit(full_traceback=os.environ.get("HYDRA_FULL_ERROR") == "1"):
        run(compose_config("eval", own), data_overrides)
