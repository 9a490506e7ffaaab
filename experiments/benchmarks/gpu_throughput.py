"""GPU throughput: training images/s of unet-lab's whole stack and of a bare PyTorch loop over
its U-Net and over MONAI's BasicUNet (the same five levels and widths), per precision (32-true,
bf16-mixed, 16-mixed), memory format (channels_last) and torch.compile, with the TFLOP/s
achieved against the device's measured bf16 matrix-multiply rate and the peak memory.

    .venv/bin/python experiments/benchmarks/gpu_throughput.py            # on a CUDA GPU
    .venv/bin/python experiments/benchmarks/gpu_throughput.py --quick    # small sizes (any device)

Configurations: ``default`` (the default recipe's network, 128 px, batch 16), ``large`` (width
64, 512 px, batch 8) and ``3d`` (width 32, 128^3 voxels, batch 2); ``--quick`` shrinks each to
a few pixels so that the script runs on a CPU in seconds (the test suite does). Every row is
measured in its own process (peak memory of that row alone). The stack's rows train the
synthetic default through Lightning (``python train.py``'s callbacks, scores, logging) and
are given for the 2D configurations. Achieved TFLOP/s = 3 x forward FLOPs (counted by
torch's FlopCounterMode) x images / time. Writes gpu_throughput.{md,json} (``--name``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import command_line, provenance, publish  # noqa: E402

IN_CHANNELS, CLASSES = 3, 4
# name: (spatial dims, side, batch, top-level width); the widths double over 4 poolings.
CONFIGS = {"default": (2, 128, 16, 16), "large": (2, 512, 8, 64), "3d": (3, 128, 2, 32)}
QUICK = {"default": (2, 32, 4, 4), "large": (2, 64, 2, 8), "3d": (3, 32, 2, 4)}
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
VARIANTS = ("plain", "channels_last", "compile")
LOOPS = ("unet-lab stack", "bare loop: unet-lab UNet", "bare loop: MONAI BasicUNet")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def network(loop: str, dims: int, width: int) -> torch.nn.Module:
    """The network of a row: unet-lab's UNet as ``python train.py`` builds it (depth 4) or
    MONAI's BasicUNet with the same widths."""
    if loop.endswith("MONAI BasicUNet"):
        from unet_lab.models import MonaiBasicUNet

        widths = (width, width, 2 * width, 4 * width, 8 * width, width)
        return MonaiBasicUNet(IN_CHANNELS, CLASSES, features=widths, spatial_dims=dims)
    from unet_lab.config.compose import compose_train_config, instantiate

    cfg = compose_train_config([f"model.width={width}", "model.depth=4",
                                f"model.spatial_dims={dims}"])  # fmt: skip
    return instantiate(cfg.model, "model", in_channels=IN_CHANNELS, num_classes=CLASSES)


def forward_flops(net: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass of one sample of ``shape`` (C, *spatial)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.eval()(torch.randn(1, *shape))
    return float(counter.get_total_flops())


def bare_loop(config: tuple[int, ...], loop: str, precision: str, variant: str,
              steps: int) -> dict[str, float]:  # fmt: skip
    """Seconds per training step of a plain loop (random batch, cross-entropy, AdamW)."""
    dims, side, batch, width = config
    net = network(loop, dims, width)
    flops = forward_flops(net, (IN_CHANNELS, *[side] * dims))
    net = net.to(DEVICE).train()
    image = torch.randn(batch, IN_CHANNELS, *[side] * dims, device=DEVICE)
    target = torch.randint(0, CLASSES, (batch, *[side] * dims), device=DEVICE)
    if variant == "channels_last":
        layout = torch.channels_last_3d if dims == 3 else torch.channels_last
        net = net.to(memory_format=layout)  # type: ignore[call-overload]
        image = image.contiguous(memory_format=layout)
    if variant == "compile":
        net = torch.compile(net)  # type: ignore[assignment]
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3)
    mixed = "mixed" in precision
    dtype = torch.float16 if precision.startswith("16") else torch.bfloat16
    scaler = torch.amp.GradScaler(DEVICE.type, enabled=precision == "16-mixed")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE.type, dtype=dtype, enabled=mixed):
            output = net(image)
            output = output[0] if isinstance(output, list | tuple) else output
            loss = torch.nn.functional.cross_entropy(output.float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return {"seconds_per_step": _timed(step, steps), "flops_per_image": flops, "batch": batch}


def stack(config: tuple[int, ...], precision: str, variant: str, steps: int) -> dict[str, float]:
    """Seconds per training step of ``python train.py``'s stack on the synthetic default at
    this size (Lightning, callbacks, scores, logging, checkpoints)."""
    from overhead import time_unet_lab, window_rate

    dims, side, batch, width = config
    overrides = [f"data.image_size={side}", f"data.batch_size={batch}", f"model.width={width}",
                 "model.depth=4", f"trainer.precision={precision}", "data.train_size=64",
                 f"module.channels_last={variant == 'channels_last'}",
                 f"module.compile={variant == 'compile'}"]  # fmt: skip
    if DEVICE.type == "cuda":
        overrides.append("trainer.accelerator=gpu")
    window = max(2, steps // 2)
    with tempfile.TemporaryDirectory() as folder:
        times = time_unet_lab(overrides, 3, 2 * window, folder)
    flops = forward_flops(network("unet-lab UNet", dims, width), (IN_CHANNELS, side, side))
    return {"seconds_per_step": 1 / window_rate(times, window), "flops_per_image": flops,
            "batch": batch}  # fmt: skip


def _timed(step: Any, steps: int) -> float:
    """Median seconds per call of ``step`` over ``steps`` calls after 3 warm-up calls."""
    for _ in range(3):
        step()
    durations = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def peak_mib() -> float:
    if DEVICE.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_tflops(size: int) -> float:
    """Best bf16 matrix-multiply TFLOP/s of this device on ``size`` x ``size`` matrices."""
    a = torch.randn(size, size, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=DEVICE, dtype=torch.bfloat16)
    best = _timed(lambda: torch.mm(a, b), 5)
    return 2 * size**3 / best / 1e12


def child(row: dict[str, Any], steps: int) -> dict[str, Any]:
    config = tuple(row["config_values"])
    if row["loop"] == "unet-lab stack":
        measured = stack(config, row["precision"], row["variant"], steps)
    else:
        measured = bare_loop(config, row["loop"], row["precision"], row["variant"], steps)
    images_per_s = measured["batch"] / measured["seconds_per_step"]
    return {**row, "images_per_s": images_per_s, "peak_mib": peak_mib(),
            "tflops": 3 * measured["flops_per_image"] * images_per_s / 1e12}  # fmt: skip


def rows_to_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    configs = QUICK if args.quick else CONFIGS
    rows = []
    for name, config in configs.items():
        for precision in args.precisions:
            for variant in args.variants:
                for loop in LOOPS:
                    if loop == "unet-lab stack" and config[0] == 3:
                        continue  # the stack trains volumes from data=volumes: not a row here
                    rows.append({"config": name, "config_values": list(config), "loop": loop,
                                 "precision": precision, "variant": variant})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few steps")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precisions", nargs="+", default=None, choices=PRECISIONS)
    parser.add_argument("--variants", nargs="+", default=None, choices=VARIANTS)
    parser.add_argument("--name", default="gpu_throughput", help="output file stem")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.steps)))
        return
    on_cpu = DEVICE.type == "cpu"
    if args.precisions is None:  # fp16 autocast on a CPU is neither fast nor used
        args.precisions = ["32-true", "bf16-mixed"] if on_cpu else list(PRECISIONS)
    if args.variants is None:
        args.variants = ["plain", "channels_last"] if args.quick else list(VARIANTS)
    if args.quick:
        args.steps = min(args.steps, 4)
    ceiling = matmul_tflops(1024 if on_cpu or args.quick else 8192)
    results = []
    for row in rows_to_run(args):
        command = [sys.executable, __file__, "--child", json.dumps(row), "--steps",
                   str(args.steps)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=HERE,
                              env={**os.environ, "PYTHONPATH": str(HERE)})  # fmt: skip
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["?"])[-1]
            results.append({**row, "error": tail[:160]})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)

    device = torch.cuda.get_device_name(0) if not on_cpu else "CPU (no GPU: rows pending)"
    lines = [
        "# Training throughput on the device: unet-lab against a bare loop and MONAI",
        "",
        provenance(command_line(__file__)),
        f"Device: **{device}**; bf16 matrix multiply measured at **{ceiling:.1f} TFLOP/s**. "
        f"Median of {args.steps} steps after 3; each row in its own process.",
        "",
        "| config | precision | variant | loop | images/s | TFLOP/s (share of bf16 mm) | "
        "peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['precision']} | {r['variant']} | {r['loop']} | "
                         f"failed: {r['error']} | | |")  # fmt: skip
            continue
        lines.append(
            f"| {r['config']} | {r['precision']} | {r['variant']} | {r['loop']} | "
            f"{r['images_per_s']:.1f} | {r['tflops']:.3f} ({r['tflops'] / ceiling:.0%}) | "
            f"{r['peak_mib']:.0f} |"
        )
    lines += ["", "Stack against bare loop (same config, precision, variant; done-when: at "
              "least 80 % on a GPU):", ""]  # fmt: skip
    for r in results:
        if r["loop"] != "unet-lab stack" or "error" in r:
            continue
        bare = next((b for b in results if b["loop"] == "bare loop: unet-lab UNet"
                     and "error" not in b and all(b[k] == r[k] for k in
                     ("config", "precision", "variant"))), None)  # fmt: skip
        if bare is not None:
            share = r["images_per_s"] / bare["images_per_s"]
            lines.append(f"- {r['config']} {r['precision']} {r['variant']}: {share:.0%} of the "
                         "bare loop")  # fmt: skip
    publish(HERE / args.name, lines, {"device": device, "bf16_matmul_tflops": ceiling,
                                      "args": vars(args), "rows": results})  # fmt: skip


if __name__ == "__main__":
    main()
