"""Helpers the experiment scripts share."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from unet_lab.training.module import channels_last_format
from unet_lab.training.precision import cpu_has_fast_bf16

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    """CPU model, logical CPUs, torch version and GPU, for the header of result tables."""
    cpu = platform.processor() or platform.machine()
    try:
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {cpu_instructions()}, "
        f"torch {torch.__version__} ({gpu})"
    )


def cpu_instructions() -> str:
    """Whether the CPU has native bf16, and the vector instructions torch's kernels use
    (lowered with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` to stand in for a CPU
    without AVX-512)."""
    bf16 = "native bf16" if cpu_has_fast_bf16() else "no native bf16"
    kernels = torch.backends.cpu.get_cpu_capability()
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{bf16}, torch kernels {kernels}" + (f", oneDNN <= {onednn}" if onednn else "")


def command_line(script: str) -> str:
    """The command that is running ``script``, as typed from the repository root."""
    return " ".join(["python", str(Path(script).resolve().relative_to(REPO)), *sys.argv[1:]])


def composed_config(overrides: list[str], output_dir: str = "/tmp/unet_lab_benchmark") -> Any:
    """``python train.py``'s config with ``overrides``, logging to CSV only, into
    ``output_dir``."""
    from unet_lab.config.compose import compose_train_config

    return compose_train_config([f"paths.output_dir={output_dir}", "logger=csv", *overrides])


def plain_training_step(experiment: Any) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One optimizer step of an experiment's network, loss, optimizer, precision and memory
    format (``unet_lab.training.build``), in plain PyTorch: no Lightning, metrics or logging."""
    module = experiment.module
    net = module.net.train()
    optimizer = module.optimizer_factory(net.parameters())
    precision = str(experiment.trainer.precision)
    dtype = torch.float16 if precision.startswith("16") else torch.bfloat16
    device = next(net.parameters()).device.type  # where the network is: cpu or cuda

    def step(image: torch.Tensor, target: torch.Tensor) -> None:
        if module.channels_last:
            image = image.contiguous(memory_format=channels_last_format(image.ndim))
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype, enabled="mixed" in precision):
            loss = module.loss(net(image), target)
        loss.backward()
        optimizer.step()

    return step


def seconds_per_call(function: Callable[[], object], warmup: int, calls: int) -> float:
    """Mean wall time of ``function()`` over ``calls`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def provenance(command: str) -> str:
    """The line under a table's title: machine, command and date."""
    return f"Machine: {machine()}. Command: `{command}` on {time.strftime('%Y-%m-%d')}."


def publish(stem: Path, lines: list[str], results: dict[str, Any]) -> None:
    """Prints the table ``lines`` and writes it to ``<stem>.md``, and ``results`` with the
    machine to ``<stem>.json``."""
    table = "\n".join(lines) + "\n"
    print(table)
    stem.with_name(stem.name + ".md").write_text(table)
    results = {"machine": machine(), **results}
    stem.with_name(stem.name + ".json").write_text(json.dumps(results, indent=2) + "\n")


def measured_run(args: list[str], cwd: Path) -> tuple[str, float, float]:
    """Runs ``python args...`` in ``cwd``; returns its output, its peak resident memory in MiB
    (the process's own, with the children it waited for: ``wait4``) and its wall time in
    seconds. Exits with the output's tail when it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({process.returncode}):\n{output[-4000:]}")
    return output, usage.ru_maxrss / 1024, seconds


def max_time_argument(minutes: float) -> str:
    """``trainer.max_time`` for a budget in minutes, as Lightning's DD:HH:MM:SS (quoted)."""
    total_minutes, seconds = divmod(round(minutes * 60), 60)
    hours, minutes_left = divmod(total_minutes, 60)
    return f"'00:{hours:02d}:{minutes_left:02d}:{seconds:02d}'"


def mean_sd(values: list[float], digits: int = 4) -> str:
    """``mean ± sd`` of ``values`` (the value alone when there is one)."""
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
