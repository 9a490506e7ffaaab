"""``unet-lab eval ckpt_path=CKPT [split=test] [data.* overrides]`` (``python eval.py``): scores
of a checkpoint on a split, per class and per image, with pictures of the worst images
(``conf/eval.yaml``).

Writes ``metrics.json`` (per-class Dice, IoU, HD95, ASD and their means, as the test stage logs
them), ``per_image.csv`` and ``worst_<rank>_<name>.png`` (image | truth | prediction).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from unet_lab.config.compose import compose_config, instantiate
from unet_lab.errors import input_errors_exit
from unet_lab.inference.evaluation import data_config, evaluate, load_data, table
from unet_lab.inference.models import describe, load_model
from unet_lab.inference.trained import pick_device
from unet_lab.inference.volumes import default_tile_size, is_volume_network
from unet_lab.pictures import colour, display, side_by_side, write_rgb
from unet_lab.runs.folders import run_dir_of_checkpoint


def output_folder(cfg: DictConfig) -> Path:
    """``output``, else ``eval/<split>-<time>`` in the checkpoint's run folder, in the folder
    ``ckpt_path`` names (a run, a cross-validation), or here (a list of checkpoints)."""
    if cfg.output:
        return Path(cfg.output)
    if isinstance(cfg.ckpt_path, str):
        named = Path(cfg.ckpt_path)
        folder = named if named.is_dir() else run_dir_of_checkpoint(named)
    else:
        folder = None
    return (folder or Path.cwd()) / "eval" / f"{cfg.split}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def run(cfg: DictConfig, data_overrides: list[str]) -> dict[str, Any]:
    """Scores ``cfg.ckpt_path`` on ``cfg.split`` and writes the files; returns the summary."""
    trained = load_model(cfg.ckpt_path)
    device = pick_device(cfg.device)
    trained.net.to(device)
    datamodule = load_data(data_config(trained.config, data_overrides))
    module_cfg = trained.config.get("module", {})
    split_scores, rows, pictures = evaluate(
        trained,
        datamodule,
        cfg.split,
        instantiate(
            cfg.window,
            "window",
            tta=cfg.tta,
            tile_size=cfg.window.tile_size or default_tile_size(trained),
        ),
        device,
        module_cfg.get("ignore_index"),
        bool(module_cfg.get("include_background", False)),
        bool(cfg.postprocess),
    )
    output = output_folder(cfg)
    output.mkdir(parents=True, exist_ok=True)
    summary = {
        "checkpoint": trained.sources[0] if len(trained.sources) == 1 else trained.sources,
        "postprocessing": (
            trained.postprocessing.state_dict()
            if cfg.postprocess and trained.postprocessing is not None
            else None
        ),
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
    print(f"{cfg.split}: {len(rows)} images, {describe(trained)}")
    if len(trained.sources) > 1 and cfg.split != "test":
        print(
            f"note: the networks of this ensemble trained on each other's {cfg.split} images; "
            "score ensembles on the test split (cv/summary.md has the out-of-fold scores)"
        )
    names = trained.regions.names if trained.regions is not None else trained.class_names
    print(table(split_scores, names, "mm" if is_volume_network(trained) else "px"))
    print(f"wrote {output}/metrics.json, per_image.csv and {min(cfg.worst, len(rows))} overlays")
    return summary


def main(args: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if args is None else args)
    data_overrides = [a for a in arguments if a.startswith(("data.", "data="))]
    own = [a for a in arguments if a not in data_overrides]
    with input_errors_exit():
        run(compose_config("eval", own), data_overrides)
