"""``trainer.precision=auto``: the fastest precision the hardware runs well."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def cpu_has_fast_bf16() -> bool:
    """True where the CPU has native bf16 instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(
    precision: str | int, accelerator: str = "auto", spatial_dims: int = 2
) -> str | int:
    """Return ``precision`` unchanged unless it is ``auto``, which becomes ``bf16-mixed`` on
    GPUs and CPUs with native bf16 (2D networks), ``16-mixed`` on older GPUs and ``32-true``
    elsewhere. 3D networks on a CPU train in ``32-true``: with bf16-mixed, small 3D U-Nets
    reached a NaN loss within a few steps in about one run of four (torch 2.13's CPU bf16
    3D convolutions), which 32-true never did."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        chosen = (
            "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "16-mixed"
        )
        why = f"GPU {torch.cuda.get_device_name()}"
    elif cpu_has_fast_bf16() and spatial_dims == 3:
        chosen, why = "32-true", "3D network on a CPU: bf16 3D convolutions gave NaN losses"
    elif cpu_has_fast_bf16():
        chosen, why = "bf16-mixed", "CPU with native bf16"
    else:
        chosen, why = "32-true", "no fast low-precision path found"
    log.info("precision: auto -> %s (%s)", chosen, why)
    return chosen
