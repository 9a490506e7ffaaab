"""Data pipeline: images per second that the data module and each augmentation preset deliver
with the default loader settings (``data.num_workers=auto``), against the images per second the
default model trains on, from the same composed config.

    .venv/bin/python experiments/benchmarks/data_pipeline.py           # 3 repeats of 24 batches
    .venv/bin/python experiments/benchmarks/data_pipeline.py --quick   # 1 repeat of 8 batches
    .venv/bin/python experiments/benchmarks/data_pipeline.py --overrides data.num_workers=2

A preset keeps the model fed when it delivers more images per second than the model consumes
(ratio > 1). Loading runs in the training process when ``num_workers`` is 0, so its time adds
to each step: the table gives the share of a training step it costs. Writes
data_pipeline.{md,json}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

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

from unet_lab.training import build  # noqa: E402

PRESETS = ("none", "light", "medium", "heavy", "paper", "nnunet")


def loader_images_per_s(overrides: list[str], batches: int) -> tuple[float, int]:
    """Images/s of the training loader (first batch not timed) and its worker count."""
    datamodule = build(composed_config(overrides)).datamodule
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    next(iterator)  # workers starting, caches filling
    started, images = time.perf_counter(), 0
    for _ in range(batches):
        images += len(next(iterator)["image"])
    return images / (time.perf_counter() - started), loader.num_workers


def model_images_per_s(overrides: list[str], steps: int) -> float:
    """Images/s of the default model's training steps on one fixed batch (no loading)."""
    experiment = build(composed_config(overrides))
    experiment.datamodule.setup("fit")
    batch = next(iter(experiment.datamodule.train_dataloader()))
    step = plain_training_step(experiment)
    seconds = seconds_per_call(lambda: step(batch["image"], batch["mask"]), 1, steps)
    return len(batch["image"]) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat of 8 batches")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--overrides", nargs="*", default=[], help="for every measurement")
    parser.add_argument("--name", default="data_pipeline", help="output file stem")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.batches = 1, 8

    model = statistics.median(
        model_images_per_s(args.overrides, max(2, args.batches // 4)) for _ in range(args.repeats)
    )
    print(f"model: {model:.1f} images/s", flush=True)
    rows = []
    for preset in PRESETS:
        measured = [
            loader_images_per_s([f"augmentation={preset}", *args.overrides], args.batches)
            for _ in range(args.repeats)
        ]
        speed = statistics.median(m[0] for m in measured)
        rows.append(
            {"preset": preset, "images_per_s": speed, "workers": measured[0][1],
             "ratio_to_model": speed / model, "share_of_step": model / (model + speed)}
        )  # fmt: skip
        print(rows[-1], flush=True)

    command = command_line(__file__)
    lines = [
        "# Data pipeline: images/s delivered by each augmentation preset vs consumed by the model",
        "",
        provenance(command),
        f"`python train.py` defaults {' '.join(args.overrides)}; the model trains "
        f"**{model:.1f} images/s** (default precision and memory format, data already loaded).",
        "",
        "| augmentation | loader workers | images/s delivered | delivered / consumed | "
        "share of a step spent loading (0 workers) |",
        "|---|---|---|---|---|",
        *(
            f"| {r['preset']} | {r['workers']} | {r['images_per_s']:.0f} | "
            f"{r['ratio_to_model']:.1f}x | {r['share_of_step'] * 100:.0f}% |"
            for r in rows
        ),
    ]
    publish(
        HERE / f"{args.name}",
        lines,
        {"command": command, "args": vars(args), "model_images_per_s": model, "rows": rows},
    )


if __name__ == "__main__":
    main()
