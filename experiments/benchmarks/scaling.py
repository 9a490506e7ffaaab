"""Scaling with work: training step time and peak memory of the default U-Net as image size,
depth and width grow (one at a time around the default), against the forward FLOPs that
``unet-lab plan`` counts, and the FLOP/s achieved against a matrix-multiply ceiling measured on
the same machine.

    .venv/bin/python experiments/benchmarks/scaling.py            # 3 repeats of 6 steps
    .venv/bin/python experiments/benchmarks/scaling.py --quick    # 1 repeat of 2 steps

A training step costs about 3 forward passes (forward, and a backward of twice the work), so
achieved FLOP/s = 3 x forward FLOPs x batch / step time. The ceiling is the best of
``torch.mm`` on 2048 x 2048 matrices in bf16 and fp32 (the default trains in bf16-mixed here).
Each setting runs in a fresh process. Writes scaling.{md,json} and scaling.png.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

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

DEFAULT = {"size": 128, "depth": 4, "width": 16}
AXES = {"size": (64, 128, 256), "depth": (2, 3, 4, 5), "width": (8, 16, 32)}
BATCH = 16


def settings() -> list[dict[str, int]]:
    unique: list[dict[str, int]] = []
    for axis, values in AXES.items():
        for value in values:
            setting = {**DEFAULT, axis: value}
            if setting not in unique:
                unique.append(setting)
    return unique


def overrides(setting: dict[str, int]) -> list[str]:
    return [
        f"data.image_size={setting['size']}",
        f"model.depth={setting['depth']}",
        f"model.width={setting['width']}",
        f"data.batch_size={BATCH}",
        "data.train_size=32",  # planning and timing need a batch, not a data set
        "data.val_size=8",
        "data.test_size=8",
    ]


def measure(setting: dict[str, int], warmup: int, steps: int) -> dict:
    """In a child process: forward GFLOPs from the plan, step time and peak memory."""
    from unet_lab.training import build
    from unet_lab.training.plan import make_plan

    cfg = composed_config(overrides(setting))
    plan = make_plan(cfg)
    experiment = build(cfg)
    experiment.datamodule.setup("fit")
    batch = next(iter(experiment.datamodule.train_dataloader()))
    step = plain_training_step(experiment)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step_s = seconds_per_call(lambda: step(batch["image"], batch["mask"]), warmup, steps)
    return {
        "gflops_forward_per_image": plan.gflops_per_image,
        "parameters": plan.parameters,
        "step_s": step_s,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline,
    }


def matmul_ceiling(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best GFLOP/s of torch.mm per dtype on this machine."""
    ceiling = {}
    for dtype in (torch.bfloat16, torch.float32):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - started)
        ceiling[str(dtype).removeprefix("torch.")] = 2 * size**3 / best / 1e9
    return ceiling


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, marker in zip(AXES, "osD", strict=True):
        points = [r for r in rows if r["axis"] == axis]
        flops = [BATCH * r["gflops_forward_per_image"] for r in points]
        time_ax.plot(flops, [r["step_s"] for r in points], marker=marker, label=f"vary {axis}")
        memory_ax.plot(flops, [r["peak_mib"] for r in points], marker=marker, label=f"vary {axis}")
        for r, x in zip(points, flops, strict=True):
            time_ax.annotate(str(r[axis]), (x, r["step_s"]), fontsize=7)
    for ax, label in ((time_ax, "training step, s"), (memory_ax, "peak memory above start, MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"forward GFLOP per batch of {BATCH} (unet-lab plan)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat of 2 steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--name", default="scaling", help="output file stem")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps, args.warmup = 1, 2, 1
    if args.child:
        print(json.dumps(measure(json.loads(args.child), args.warmup, args.steps)))
        return

    ceiling = matmul_ceiling()
    rows = []
    for setting in settings():
        measured = []
        for _ in range(args.repeats):
            command = [sys.executable, __file__, "--child", json.dumps(setting),
                       "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            measured.append(json.loads(done.stdout.strip().splitlines()[-1]))
        step_s = statistics.median(m["step_s"] for m in measured)
        gflops = measured[0]["gflops_forward_per_image"]
        achieved = 3 * gflops * BATCH / step_s
        for axis in AXES:  # the axis it varies (the default setting is on every axis)
            if setting[axis] != DEFAULT[axis] or setting == DEFAULT:
                rows.append(
                    {**setting, "axis": axis, "step_s": step_s,
                     "gflops_forward_per_image": gflops,
                     "peak_mib": statistics.median(m["peak_mib"] for m in measured),
                     "parameters": measured[0]["parameters"], "achieved_gflop_s": achieved,
                     "share_of_ceiling": achieved / max(ceiling.values())}
                )  # fmt: skip
        print(setting, f"{step_s:.3f} s/step, {achieved:.1f} GFLOP/s", flush=True)

    rows.sort(key=lambda r: (list(AXES).index(r["axis"]), r[r["axis"]]))
    command = command_line(__file__)
    lines = [
        "# Scaling with work: step time and memory vs image size, depth and width",
        "",
        provenance(command),
        f"Default config otherwise (precision auto, channels_last), batch {BATCH}; median of "
        f"{args.repeats} repeats of {args.steps} steps. Matrix-multiply ceiling: "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceiling.items())
        + f". Plot: [{Path(args.name).name}.png]({Path(args.name).name}.png).",
        "",
        "| varied | size | depth | width | parameters (M) | forward GFLOP/image | step s | "
        "peak MiB | achieved GFLOP/s | share of ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['axis']} | {r['size']} | {r['depth']} | {r['width']} | "
            f"{r['parameters'] / 1e6:.2f} | {r['gflops_forward_per_image']:.2f} | "
            f"{r['step_s']:.3f} | {r['peak_mib']:.0f} | {r['achieved_gflop_s']:.1f} | "
            f"{r['share_of_ceiling'] * 100:.0f}% |"
            for r in rows
        ),
    ]
    publish(
        HERE / f"{args.name}",
        lines,
        {"command": command, "args": vars(args), "matmul_ceiling_gflop_s": ceiling, "rows": rows},
    )
    plot(rows, HERE / f"{args.name}.png")


if __name__ == "__main__":
    main()
