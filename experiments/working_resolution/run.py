"""A working resolution for one's own data: large photographs with large objects, trained on
patches at native resolution against `data.scale` (auto, and one fixed factor), at the same
number of optimizer steps and batch size; ISBI 2012 (512 px EM slices, thin membranes) as the
control where `auto` must keep the native resolution.

    .venv/bin/python experiments/working_resolution/run.py        # ~7 min, 2-core AMD EPYC (bf16)
    .venv/bin/python experiments/working_resolution/run.py --steps 100 --no-isbi   # quicker
    .venv/bin/python experiments/working_resolution/run.py --seeds 0 1 --scales 1.0 auto

The photographs are generated (written as PNGs with masks into a temporary folder): endoscopy-
like RGB images whose long side is 900-1400 px (validation images 1000-1600 px), a textured,
vignetted background with vessel-like lines, and one or two blobs a third of the image wide whose
colour and texture differ only a little from the background; every detail scales with the image,
as in photographs of one scene taken at different resolutions. Each setting runs the command a
user types, ``python train.py data=folder data.root=DIR data.scale=S ...``, with the same batch
size, patch size and optimizer steps; the best checkpoint's validation scores are at each image's
own size (``metrics.json``: for ``data.scale`` < 1 the final validation resamples the network's
probabilities back before the argmax). Then the best checkpoint is loaded as ``eval.py`` and
``predict.py`` load it (its scale comes with it), and the validation images are predicted and
scored at their own size once more, timed: the cost of one full-size validation pass. Writes
results.md and results.json here.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from unet_lab.inference.evaluation import data_config, load_data
from unet_lab.inference.sliding_window import SlidingWindowPredictor
from unet_lab.inference.trained import load_trained

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import command_line, machine  # noqa: E402

ISBI_ROOT = REPO.parent / "shared" / "data" / "isbi2012"
PATCH = 256
BATCH = 4
STEPS_PER_EPOCH = 25  # one validation each


# --- generated photographs -------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Noise in [-1, 1] with about ``cells`` features across the shorter side (bicubic)."""
    small_h = max(2, round(cells * height / min(height, width)))
    small_w = max(2, round(cells * width / min(height, width)))
    field = rng.uniform(-1, 1, (small_h, small_w)).astype(np.float32)
    return cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC).clip(-1, 1)


def _blob(rng: np.random.Generator, height: int, width: int, taken: np.ndarray) -> np.ndarray:
    """A mask of an irregular blob about a third of the image wide, off the taken area."""
    radius = width / 6 * rng.uniform(0.8, 1.2)
    for _ in range(20):
        cy = rng.uniform(radius * 0.8, height - radius * 0.8)
        cx = rng.uniform(radius * 0.8, width - radius * 0.8)
        angles = np.linspace(0, 2 * np.pi, 120, endpoint=False)
        wobble = sum(
            rng.uniform(0, 0.12) * np.sin(k * angles + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
        )
        stretch = rng.uniform(0.75, 1.0)
        points = np.stack(
            [
                cx + radius * (1 + wobble) * np.cos(angles),
                cy + stretch * radius * (1 + wobble) * np.sin(angles),
            ],
            axis=1,
        )
        mask = np.zeros((height, width), np.uint8)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
        if not (mask & taken).any():
            return mask
    return np.zeros((height, width), np.uint8)


def photograph(rng: np.random.Generator, long_side: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image, mask {0, 1}): one endoscopy-like photograph; features scale with it."""
    width = long_side
    height = round(long_side * rng.uniform(0.72, 0.85))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.array([0.72, 0.36, 0.30]) + rng.uniform(-0.06, 0.06, 3)  # pinkish red tissue
    # Vignetting (the endoscope's light), slow shading, fine grain: all relative to the size.
    radius = np.hypot((yy - height / 2) / (height / 2), (xx - width / 2) / (width / 2))
    light = 1.0 - 0.45 * np.clip(radius - 0.4, 0, None) ** 1.5
    shading = 0.10 * _smooth_noise(rng, height, width, 4)
    grain = 0.05 * _smooth_noise(rng, height, width, 60)
    image = base[None, None] * (light + shading + grain)[..., None]
    # Vessel-like dark lines.
    lines = np.zeros((height, width), np.float32)
    for _ in range(rng.integers(4, 9)):
        points = np.cumsum(rng.normal(0, width / 25, (12, 2)), axis=0) + rng.uniform(0, width, 2)
        cv2.polylines(lines, [points.astype(np.int32)], False, 1.0, max(1, width // 400))
    lines = cv2.GaussianBlur(lines, (0, 0), max(0.5, width / 900))
    image *= (1 - 0.25 * lines)[..., None]
    mask = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(1, 3)):
        mask |= _blob(rng, height, width, mask)
    if mask.any():
        # A dome: a little brighter and yellower towards its centre, a darker rim, a coarser
        # texture of its own; locally the inside resembles the background.
        distance = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
        dome = distance / max(distance.max(), 1.0)
        inside = mask.astype(np.float32)
        rim = cv2.GaussianBlur(inside, (0, 0), width / 300) * (1 - inside)
        texture = 0.06 * _smooth_noise(rng, height, width, 25)
        tint = np.array([0.03, 0.06, -0.01]) + rng.uniform(-0.02, 0.02, 3)
        image += (inside * (0.08 * dome + texture))[..., None] * image
        image += (inside * np.sqrt(dome))[..., None] * tint[None, None]
        image *= (1 - 0.3 * rim)[..., None]
        # A specular highlight near the top of the dome.
        ys, xs = np.nonzero(distance > 0.7 * distance.max())
        if len(ys):
            spot = np.zeros((height, width), np.float32)
            cv2.circle(spot, (int(xs.mean()), int(ys.min())), max(2, width // 80), 1.0, -1)
            image += 0.5 * cv2.GaussianBlur(spot, (0, 0), width / 400)[..., None]
    image += rng.normal(0, 0.015, image.shape)  # sensor noise, per pixel
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask


def write_photographs(root: Path, train: int, val: int, seed: int) -> dict[str, Any]:
    """``root/{train,val}/{images,masks}``; returns the sizes written."""
    rng = np.random.default_rng(seed)
    sizes: dict[str, list[tuple[int, int]]] = {}
    for split, count, (low, high) in (("train", train, (900, 1400)), ("val", val, (1000, 1600))):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        sizes[split] = []
        for index in range(count):
            image, mask = photograph(rng, int(rng.integers(low, high + 1)))
            cv2.imwrite(str(root / split / "images" / f"{index:03d}.png"), image[..., ::-1])
            cv2.imwrite(str(root / split / "masks" / f"{index:03d}.png"), mask * 255)
            sizes[split].append(image.shape[:2])
    return sizes


# --- runs --------------------------------------------------------------------------------------


def train_run(name: str, arguments: list[str], workdir: Path) -> dict[str, Any]:
    """``python train.py ARGUMENTS`` (CSV log into ``workdir/name``): the run summary, with
    the wall time and the CPU time of the command, and the validation Dice while fitting after
    each epoch. A completed run found in ``workdir`` (``--workdir``) is reused."""
    log_dir = workdir / name
    timing_file = log_dir / "timing.json"
    if not timing_file.is_file():
        shutil.rmtree(log_dir, ignore_errors=True)  # an unfinished run: start it again
        command = [sys.executable, str(REPO / "train.py"), *arguments, "logger=csv"]
        cpu_before = _children_cpu_s()
        started = time.perf_counter()
        result = subprocess.run(
            [*command, f"paths.log_dir={log_dir}"], capture_output=True, text=True
        )
        wall = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"{name} failed:\n{result.stderr[-3000:]}")
        timing = {"wall_s": round(wall, 1), "cpu_s": round(_children_cpu_s() - cpu_before, 1)}
        timing_file.write_text(json.dumps(timing) + "\n")
    (summary_file,) = log_dir.glob("runs/*/*/metrics.json")
    summary = json.loads(summary_file.read_text())
    summary.update(json.loads(timing_file.read_text()))
    summary.update(
        name=name,
        command=" ".join(["python train.py", *arguments]),
        checkpoint=str(summary_file.parent / summary["best_checkpoint"]),
        curve=_fitting_curve(summary_file.parent, summary["epochs_completed"]),
    )
    return summary


def _fitting_curve(run_dir: Path, epochs: int) -> list[float]:
    """val/dice after each epoch while fitting (the rows of the final validation left out)."""
    dice: dict[int, float] = {}
    with (run_dir / "csv" / "metrics.csv").open() as file:
        for row in csv.DictReader(file):
            if row.get("val/dice") and int(row["epoch"]) < epochs:
                dice[int(row["epoch"])] = float(row["val/dice"])
    return [dice[epoch] for epoch in sorted(dice)]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def native_inference(summary: dict[str, Any]) -> dict[str, Any]:
    """The best checkpoint as ``eval.py`` and ``predict.py`` load it (its scale from the
    checkpoint) on the run's validation images, each predicted and scored at its own size
    (512 px sliding window, float32, as eval.py): foreground Dice over all pixels, pixel
    accuracy, and the seconds the predictions took (one full-size validation pass)."""
    trained = load_trained(summary["checkpoint"])
    datamodule = load_data(data_config(trained.config, []))
    images, masks = datamodule.load_split("val")
    predictor = SlidingWindowPredictor()
    overlap = predicted = truth = correct = pixels = 0
    started = time.perf_counter()
    for image, mask in zip(images, masks, strict=True):
        labels = trained.predict(image, predictor).argmax(dim=0).numpy()
        assert labels.shape == mask.shape  # at the image's own size
        overlap += int(((labels == 1) & (mask == 1)).sum())
        predicted += int((labels == 1).sum())
        truth += int((mask == 1).sum())
        correct += int((labels == mask).sum())
        pixels += mask.size
    seconds = time.perf_counter() - started
    return {
        "scale": trained.scale,
        "native_dice": 2 * overlap / max(predicted + truth, 1),
        "native_acc": correct / pixels,
        "native_inference_s": round(seconds, 1),
    }


def background_share(root: Path, split: str) -> float:
    """Pixel accuracy of predicting background everywhere."""
    masks = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in (root / split / "masks").glob("*")]
    return float(sum((m == 0).sum() for m in masks) / sum(m.size for m in masks))


def _progress(run: dict[str, Any]) -> None:
    shown = {k: run[k] for k in ("name", "scale", "wall_s", "cpu_s", "native_inference_s")}
    print(json.dumps({**shown, "val_dice": run["val"]["dice"]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["1.0", "auto", "0.3"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--steps", type=int, default=200, help="optimizer steps per run (a multiple of 25)"
    )
    parser.add_argument("--train-images", type=int, default=24)
    parser.add_argument("--val-images", type=int, default=8)
    parser.add_argument("--isbi-root", type=Path, default=ISBI_ROOT)
    parser.add_argument("--isbi-scales", nargs="+", default=["auto", "0.5"])
    parser.add_argument("--isbi-steps", type=int, default=120, help="ISBI steps (a multiple of 12)")
    parser.add_argument("--no-isbi", action="store_true", help="skip the ISBI 2012 control")
    parser.add_argument("--workdir", type=Path, help="keep the data and run folders here")
    parser.add_argument("--name", default="results", help="output file stem")
    args = parser.parse_args()
    command = command_line(__file__)
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        data = workdir / "photographs"
        sizes = write_photographs(data, args.train_images, args.val_images, seed=1234)
        shorter = [min(size) for size in sizes["train"]]
        all_background = background_share(data, "val")
        rows: list[dict[str, Any]] = []
        for seed in args.seeds:
            for scale in args.scales:
                arguments = [
                    "data=folder",
                    f"data.root={data}",
                    "data.num_classes=2",
                    f"data.scale={scale}",
                    f"data.patch_size={PATCH}",
                    f"data.batch_size={BATCH}",
                    f"data.samples_per_epoch={STEPS_PER_EPOCH * BATCH}",
                    f"trainer.max_epochs={math.ceil(args.steps / STEPS_PER_EPOCH)}",
                    "test=false",
                    f"seed={seed}",
                ]
                run = train_run(f"photographs-scale{scale}-seed{seed}", arguments, workdir)
                run.update(native_inference(run), data="photographs", setting=scale, seed=seed)
                rows.append(run)
                _progress(run)
        if not args.no_isbi and args.isbi_root.is_dir():
            for scale in args.isbi_scales:
                arguments = [
                    "experiment=isbi2012",
                    f"data.root={args.isbi_root}",
                    f"data.scale={scale}",
                    f"trainer.max_epochs={math.ceil(args.isbi_steps / 12)}",  # 12 steps each
                    "seed=0",
                ]
                run = train_run(f"isbi2012-scale{scale}", arguments, workdir)
                run.update(native_inference(run), data="isbi2012", setting=scale, seed=0)
                rows.append(run)
                _progress(run)
    load = max(load, os.getloadavg()[0])

    lines = [
        "# Working resolution (`data.scale`) on large photographs, with ISBI 2012 as control\n",
        f"Machine: {machine()}; load average up to {load:.1f} while it ran (about 2 is this "
        "study alone on the 2 cores; more means other work shared the CPU).  ",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')}.\n",
        f"Photographs: {args.train_images} training images (shorter side "
        f"{min(shorter)}-{max(shorter)} px, median {statistics.median(shorter):.0f}), "
        f"{args.val_images} validation images (long side 1000-1600 px); objects about a third "
        "of the image wide; predicting background everywhere scores pixel accuracy "
        f"{all_background:.3f}. Every photograph run: {BATCH} patches of {PATCH} px "
        f"(working-resolution pixels) per step, {args.steps} optimizer steps, a validation every "
        f"{STEPS_PER_EPOCH} steps, the default recipe otherwise (U-Net depth 4, width 16, "
        "dice_ce, AdamW, light augmentation, precision auto).\n",
        "| data | data.scale | resolved | seed | val Dice (native size) | pixel acc | "
        "val Dice while fitting | reloaded: val Dice | reloaded: predict s | run wall s | "
        "run CPU s | val Dice while fitting, each validation |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in rows:
        fitting = run.get("val_working_resolution", run["val"])
        lines.append(
            f"| {run['data']} | {run['setting']} | {run['scale']:g} | {run['seed']} | "
            f"{run['val']['dice']:.4f} | {run['val']['acc']:.4f} | {fitting['dice']:.4f} | "
            f"{run['native_dice']:.4f} | {run['native_inference_s']} | {run['wall_s']} | "
            f"{run['cpu_s']} | {' '.join(f'{v:.2f}' for v in run['curve'])} |"
        )
    lines += [
        "",
        "val Dice, native size: mean foreground Dice of the best checkpoint (by val Dice while "
        "fitting) on the validation images at their own size, from metrics.json (for "
        "data.scale < 1 the final validation resamples the probabilities back before the "
        "argmax); pixel acc likewise. val Dice while fitting: the best validation during "
        "training, on resampled images and masks when data.scale < 1. reloaded: the best "
        "checkpoint loaded as eval.py/predict.py load it (the scale from the checkpoint), the "
        "validation images predicted through the 512 px sliding window in float32 and scored "
        "at their own size, and the seconds that took (one full-size validation pass). run "
        "wall s / CPU s: the whole train.py command (start-up, reading and resampling, training, "
        "every validation, the final native-size validation, predictions.png); CPU s sums "
        "both cores. Each validation: every 25 steps (photographs), every 12 (ISBI 2012).",
    ]
    isbi = [run for run in rows if run["data"] == "isbi2012"]
    if isbi:
        rand = ", ".join(
            f"data.scale={run['setting']} {run['val'].get('rand_error', math.nan):.4f}"
            for run in isbi
        )
        lines.append(
            f"\nISBI 2012: `experiment=isbi2012` fold 0 (24 training, 6 validation slices of "
            f"512 px), {args.isbi_steps} steps of 8 patches of 256 px; membrane Dice. Rand error "
            f"of the best checkpoint at native size (argmax; lower is better): {rand}."
        )
    table = "\n".join(lines) + "\n"
    print(table)
    (HERE / f"{args.name}.md").write_text(table)
    keep = ["name", "command", "setting", "scale", "seed", "val", "val_working_resolution"]
    keep += ["best_epoch", "global_step", "precision", "wall_s", "cpu_s"]
    keep += ["native_dice", "native_acc", "native_inference_s", "curve"]
    results = {
        "machine": machine(),
        "command": command,
        "load_average_max": load,
        "photographs": {"sizes": sizes, "all_background_acc": all_background},
        "runs": [{k: run.get(k) for k in keep} for run in rows],
    }
    (HERE / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
