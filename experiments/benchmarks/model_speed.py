"""Model speed against peers: training and inference throughput and peak memory of unet-lab's
UNet, MONAI's BasicUNet at the same widths and depth, and a plain reference U-Net written the
usual way (double conv, max-pool, transposed conv), in fp32, bf16-mixed, channels_last, both,
and (``--compile``) both plus ``torch.compile``.

    .venv/bin/python experiments/benchmarks/model_speed.py            # 3 repeats, 12 steps
    .venv/bin/python experiments/benchmarks/model_speed.py --quick    # 1 repeat, 4 steps
    .venv/bin/python experiments/benchmarks/model_speed.py --compile  # adds torch.compile rows

Every network has 5 levels of 16, 32, 64, 128, 256 channels (unet-lab's default depth 4,
width 16), takes 3-channel 128 x 128 images in batches of 16 (the synthetic default) and gives
4 classes; training steps use cross-entropy and AdamW. Each (network, mode) runs in a fresh
process: warm-up steps, then timed steps (median over repeats); peak memory is the process's
resident peak above its state after building the network. Writes model_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import command_line, provenance, publish, seconds_per_call  # noqa: E402

WIDTHS = (16, 32, 64, 128, 256)
BATCH, SIZE, IN_CHANNELS, CLASSES = 16, 128, 3, 4
MODES = {
    "fp32": {"bf16": False, "channels_last": False, "compile": False},
    "channels_last": {"bf16": False, "channels_last": True, "compile": False},
    "bf16-mixed": {"bf16": True, "channels_last": False, "compile": False},
    "bf16-mixed + channels_last": {"bf16": True, "channels_last": True, "compile": False},
    "bf16-mixed + channels_last + compile": {"bf16": True, "channels_last": True, "compile": True},
}
DEFAULT_MODE = "bf16-mixed + channels_last"  # unet-lab's default on this CPU (precision=auto)


class ReferenceUNet(nn.Module):
    """A U-Net as tutorials write it: (conv-BN-ReLU) x 2 per level, max-pool, transposed conv,
    concatenate, no other tricks."""

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...]) -> None:
        super().__init__()

        def double_conv(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            )

        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.down.append(double_conv(channels, width))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.up_conv.append(double_conv(2 * width, width))
            channels = width
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips[:-1]), strict=True):
            x = conv(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def build(network: str) -> nn.Module:
    if network == "unet-lab UNet":
        from unet_lab.models import UNet

        return UNet(IN_CHANNELS, CLASSES, depth=len(WIDTHS) - 1, width=WIDTHS[0])
    if network == "MONAI BasicUNet":
        from unet_lab.models import MonaiBasicUNet

        return MonaiBasicUNet(IN_CHANNELS, CLASSES, features=(*WIDTHS, WIDTHS[0]))
    return ReferenceUNet(IN_CHANNELS, CLASSES, WIDTHS)


NETWORKS = ("unet-lab UNet", "MONAI BasicUNet", "reference U-Net")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(network: str, mode: str, warmup: int, steps: int) -> dict:
    """In a child process: training and inference images/s and peak memory of one setting."""
    settings = MODES[mode]
    torch.manual_seed(0)
    net = build(network)
    memory_format = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    net = net.to(memory_format=memory_format)  # type: ignore[call-overload]
    if settings["compile"]:
        net.compile()
    images = torch.randn(BATCH, IN_CHANNELS, SIZE, SIZE).contiguous(memory_format=memory_format)
    target = torch.randint(0, CLASSES, (BATCH, SIZE, SIZE))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    baseline = _peak_rss_mib()

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings["bf16"]):
            loss = loss_fn(net(images), target)
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=settings["bf16"]):
            net(images)

    result = {}
    for name, step, mode_fn in (("train", train_step, net.train), ("infer", infer_step, net.eval)):
        mode_fn()
        result[f"{name}_images_per_s"] = BATCH / seconds_per_call(step, warmup, steps)
    result["peak_mib"] = _peak_rss_mib() - baseline
    return result


def _error_line(stderr: str, returncode: int) -> str:
    """The line of a failed child's output that names the error."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line)]
    return (named or lines or [f"exit code {returncode}"])[-1][:300]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat of 4 steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="add the torch.compile rows")
    parser.add_argument("--name", default="model_speed", help="output file stem")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps, args.warmup = 1, 4, 2
    if args.child:
        print(json.dumps(measure(*args.child, args.warmup, args.steps)))
        return

    modes = [m for m in MODES if args.compile or not MODES[m]["compile"]]
    runs: dict[str, dict[str, list[dict]]] = {n: {m: [] for m in modes} for n in NETWORKS}
    for repeat in range(args.repeats):
        for mode in modes:
            for network in NETWORKS:  # side by side within each repeat
                command = [
                    sys.executable, __file__, "--child", network, mode,
                    "--steps", str(args.steps), "--warmup", str(args.warmup),
                ]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True)
                runs[network][mode].append(
                    json.loads(done.stdout.strip().splitlines()[-1])
                    if done.returncode == 0
                    else {"error": _error_line(done.stderr, done.returncode)}
                )
                print(f"repeat {repeat} {network} {mode}: {runs[network][mode][-1]}", flush=True)

    def median(network: str, mode: str, key: str) -> float | None:
        values = [r[key] for r in runs[network][mode] if "error" not in r]
        return statistics.median(values) if values else None

    ours = median("unet-lab UNet", DEFAULT_MODE, "train_images_per_s")
    assert ours is not None, runs["unet-lab UNet"][DEFAULT_MODE]
    command = command_line(__file__)
    lines = [
        "# Model speed: unet-lab's UNet vs MONAI BasicUNet vs a reference U-Net",
        "",
        provenance(command),
        f"Batch {BATCH} x {IN_CHANNELS} x {SIZE} x {SIZE}, {CLASSES} classes, levels "
        f"{list(WIDTHS)}; median of {args.repeats} repeats of {args.steps} steps "
        f"after {args.warmup}.",
        "",
        "| network | mode | train images/s | inference images/s | peak memory MiB | "
        "unet-lab default train speed / this |",
        "|---|---|---|---|---|---|",
    ]
    rows = []
    failures = []
    for network in NETWORKS:
        for mode in modes:
            train, infer = (
                median(network, mode, k) for k in ("train_images_per_s", "infer_images_per_s")
            )
            peak = median(network, mode, "peak_mib")
            if train is None or infer is None or peak is None:
                error = runs[network][mode][0]["error"]
                rows.append({"network": network, "mode": mode, "error": error})
                lines.append(f"| {network} | {mode} | failed [{len(failures) + 1}] | | | |")
                failures.append(f"[{len(failures) + 1}] {network}, {mode}: `{error}`")
                continue
            rows.append({"network": network, "mode": mode, "train_images_per_s": train,
                         "infer_images_per_s": infer, "peak_mib": peak,
                         "default_speedup": ours / train})  # fmt: skip
            lines.append(
                f"| {network} | {mode} | {train:.1f} | {infer:.1f} | {peak:.0f} | "
                f"{ours / train:.2f}x |"
            )
    if failures:
        lines += ["", "Failed runs (the error's last line):", "", *failures]
    peers_fp32 = {n: median(n, "fp32", "train_images_per_s") or math.nan for n in NETWORKS[1:]}
    lines += [
        "",
        f"unet-lab's default ({DEFAULT_MODE}) trains "
        + " and ".join(f"{ours / v:.2f}x as fast as {n} in fp32" for n, v in peers_fp32.items())
        + " (target: at least 2.5x).",
    ]
    publish(
        HERE / f"{args.name}",
        lines,
        {"command": command, "args": vars(args), "rows": rows, "runs": runs},
    )


if __name__ == "__main__":
    main()
