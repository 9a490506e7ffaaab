"""Data pipeline: training images per second that each augmentation preset delivers, per sample
in a loader worker (albumentations, on the CPU) and in batches on the training device
(``augmentation.on_device=true``: the GPU when there is one, else CPU tensors), against the
images per second the default model trains on there, at several image sizes; and the same for
3D patches of the embedded volumes (``data=synthetic3d``, its 3D U-Net, the volume presets).

    .venv/bin/python experiments/benchmarks/data_pipeline.py           # 256², 512², 64³, 128³
    .venv/bin/python experiments/benchmarks/data_pipeline.py --quick   # 1 repeat, fewer batches
    .venv/bin/python experiments/benchmarks/data_pipeline.py --sizes 128 --volume-sizes --repeats 1

Per worker: the loader with ``data.num_workers=0`` (each worker process does this much; the
total of ``num_workers=auto`` on this machine, its worker count given, is also measured when it
starts workers). On the device: the preset's batch transforms and the normalization after them
(presets with a transform that has no batch counterpart: blur, elastic, ... are marked "-").
Volumes have no batch transforms yet (their column is "-"). A pipeline keeps the model fed when
it delivers more than the model consumes (ratio > 1).
Writes data_pipeline.{md,json}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import (  # noqa: E402
    command_line,
    composed_config,
    plain_training_step,
    provenance,
    publish,
    seconds_per_call,
)

from unet_lab.errors import ConfigError  # noqa: E402
from unet_lab.training import build  # noqa: E402
from unet_lab.training.build import build_datamodule  # noqa: E402

PRESETS = ("none", "light", "medium", "heavy", "paper", "nnunet")
PRESETS_3D = ("none", "volume_light", "volume_medium")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _size(size: int) -> list[str]:
    """The synthetic default at ``size`` px, with few images (made once per measurement)."""
    return [f"data.image_size={size}", "data.train_size=48", "data.val_size=4",
            "data.test_size=4"]  # fmt: skip


def _volume_size(size: int) -> list[str]:
    """The embedded volumes (1 mm voxels) with cubic patches of ``size`` voxels cropped from
    cubes 1.5 times as wide, few of them (made once per measurement)."""
    cube, patch = [size * 3 // 2] * 3, [size] * 3
    return ["data=synthetic3d", f"data.volume_shape={cube}", f"data.patch_size={patch}",
            "data.spacing=[1.0,1.0,1.0]", "data.train_size=4", "data.val_size=2",
            "data.test_size=2"]  # fmt: skip


def loader_images_per_s(overrides: list[str], batches: int) -> tuple[float, int]:
    """Images/s of the training loader (first batch not timed) and its worker count."""
    datamodule = build(composed_config(overrides)).datamodule
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    next(iterator)  # workers starting, caches filling
    started, images = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        images += len(batch["image"])
    return images / (time.perf_counter() - started), loader.num_workers


def device_images_per_s(overrides: list[str], batches: int) -> float | None:
    """Images/s of the preset's batch transforms and normalization on ``DEVICE``, on one
    batch from the loader; None when the preset has a transform without a batch form."""
    cfg = composed_config([*overrides, "augmentation.on_device=true", "data.num_workers=0"])
    try:
        datamodule = build_datamodule(cfg, augment=True)
    except ConfigError:
        return None
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    image, mask = batch["image"].to(DEVICE), batch["mask"].to(DEVICE)
    augmentation, normalizer = datamodule.device_augmentation, datamodule.normalizer
    assert augmentation is not None

    def run() -> None:
        normalizer.batch(augmentation(image, mask)[0])
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    return len(image) / seconds_per_call(run, 2, batches)


def model_images_per_s(overrides: list[str], steps: int) -> float:
    """Images/s of the default model's training steps on ``DEVICE``, one fixed batch."""
    experiment = build(composed_config(overrides))
    experiment.module.to(DEVICE)
    experiment.datamodule.setup("fit")
    batch = next(iter(experiment.datamodule.train_dataloader()))
    image, mask = batch["image"].to(DEVICE), batch["mask"].to(DEVICE)
    step = plain_training_step(experiment)

    def run() -> None:
        step(image, mask)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    return len(image) / seconds_per_call(run, 1, steps)


def measure(
    size: str, base: list[str], presets: tuple[str, ...], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """One row per preset at one ``size`` (its label), ``base`` the overrides making it."""
    base = [*base, *args.overrides]
    model = statistics.median(
        model_images_per_s(base, max(2, args.batches // 4)) for _ in range(args.repeats)
    )
    print(f"{size}: the model trains {model:.1f} images/s on {DEVICE.type}", flush=True)
    rows = []
    for preset in presets:
        chosen = [f"augmentation={preset}", *base]
        worker = statistics.median(
            loader_images_per_s([*chosen, "data.num_workers=0"], args.batches)[0]
            for _ in range(args.repeats)
        )
        total, workers = loader_images_per_s(chosen, args.batches)
        on_device = [device_images_per_s(chosen, args.batches) for _ in range(args.repeats)]
        device = None if on_device[0] is None else statistics.median(on_device)  # type: ignore[type-var]
        rows.append({"size": size, "preset": preset, "model_images_per_s": model,
                     "per_worker": worker, "auto_workers": workers, "auto_total": total,
                     "on_device": device})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat of 6 batches")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512], help="2D, px")
    parser.add_argument("--volume-sizes", type=int, nargs="*", default=[64, 128],
                        help="3D patches, voxels per side")  # fmt: skip
    parser.add_argument("--overrides", nargs="*", default=[], help="for every measurement")
    parser.add_argument("--name", default="data_pipeline", help="output file stem")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.batches = 1, 6
    rows = [row for size in args.sizes for row in measure(f"{size}²", _size(size), PRESETS, args)]
    rows += [
        row
        for size in args.volume_sizes
        for row in measure(f"{size}³", _volume_size(size), PRESETS_3D, args)
    ]

    def ratio(value: float | None, model: float) -> str:
        return "-" if value is None else f"{value:.0f} ({value / model:.1f}x)"

    command = command_line(__file__)
    lines = [
        "# Data pipeline: training images/s delivered per augmentation preset vs consumed by "
        "the model",
        "",
        provenance(command),
        f"`python train.py` defaults with `data.image_size` as given (²), and "
        f"`data=synthetic3d` with cubic patches as given (³, from cubes 1.5 times as wide)"
        f"{''.join(' ' + o for o in args.overrides)}; batch and model as configured; device "
        f"for the batch "
        f"transforms and the model: **{DEVICE.type}**"
        + (f" ({torch.cuda.get_device_name(0)})" if DEVICE.type == "cuda" else "")
        + f". Medians of {args.repeats} repeats of {args.batches} batches.",
        "",
        "| size | augmentation | model trains (images or patches/s) | per sample, one loader "
        "worker (x model) | num_workers=auto here: workers, images/s | in batches on the "
        "device (x model) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['size']} | {r['preset']} | {r['model_images_per_s']:.1f} | "
            f"{ratio(r['per_worker'], r['model_images_per_s'])} | {r['auto_workers']}, "
            f"{r['auto_total']:.0f} | {ratio(r['on_device'], r['model_images_per_s'])} |"
            for r in rows
        ),
        "",
        "A loader with N workers delivers up to N times the per-worker rate (while the CPU has "
        "cores for them); the batch transforms run on the device between the model's steps, "
        "so their time adds to each step instead: a rate 10x the model's costs a tenth of a "
        "step.",
    ]
    publish(HERE / args.name, lines, {"command": command, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
