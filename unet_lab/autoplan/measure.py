"""What autoplan measures on this machine: the device and its memory, the activation memory of
one training sample of a planned network, and the rates it trains and infers at."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from omegaconf import DictConfig

from unet_lab.autoplan.budget import Rates
from unet_lab.autoplan.rules import Device
from unet_lab.config.compose import instantiate
from unet_lab.losses import DeepSupervisionLoss
from unet_lab.models import UNet
from unet_lab.training.plan import saved_activation_bytes
from unet_lab.training.precision import resolve_precision

GPU_MEMORY_SHARE = 0.7  # of the GPU's memory, for activations
CPU_MEMORY_SHARE = 0.25  # of the machine's memory (the data and the rest need room)
CPU_MEMORY_CAP = 8 * 2**30
MEASURE_SECONDS = 10.0
INFERENCE_SECONDS = 3.0


def this_device() -> Device:
    """The GPU when there is one, else the CPU, with the memory activations may take."""
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        return Device("cuda", int(GPU_MEMORY_SHARE * properties.total_memory), properties.name)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Device("cpu", int(min(CPU_MEMORY_SHARE * total, CPU_MEMORY_CAP)), "CPU")


def sample_bytes_for(in_channels: int, num_classes: int) -> Any:
    """``sample_bytes(model values, patch)``: the float32 activations a training forward pass
    of that U-Net keeps for one sample (measured on two, as ``unet-lab plan`` does)."""

    def sample_bytes(model: dict[str, Any], patch: list[int]) -> int:
        net = UNet(in_channels, num_classes, **model)
        image = torch.randn(1, in_channels, *patch)
        return saved_activation_bytes(net, image, nullcontext())

    return sample_bytes


def measure_rates(
    cfg: DictConfig, in_channels: int, num_classes: int, whole_size: Sequence[int] = ()
) -> Rates:
    """The :class:`Rates` of the network, loss, optimizer and precision of the composed
    ``cfg`` on random batches of its batch and patch size (data loading apart): training over
    about ``MEASURE_SECONDS`` after two warm-up steps, then inference over about
    ``INFERENCE_SECONDS``. ``whole_size``: the images' size at the working resolution, for a
    plan without patches (whole images)."""
    data = cfg.data
    dims = int(cfg.model.get("spatial_dims", 2))
    patch = data.patch_size
    if patch is None:
        if not whole_size:
            raise ValueError("a plan without data.patch_size needs the images' whole_size")
        patch = list(whole_size)
    sides = [int(patch)] * 2 if isinstance(patch, int) else [int(s) for s in patch]
    loss = instantiate(cfg.loss, "loss")
    extra = {}
    if cfg.model.get("spacing") == "auto":  # the data's: the planned target spacing
        extra["spacing"] = list(data.get("target_spacing") or data.get("spacing") or [1.0] * dims)
    net = instantiate(cfg.model, "model", in_channels=in_channels, num_classes=num_classes, **extra)
    optimizer = instantiate(cfg.optimizer, "optimizer")(net.parameters())
    if getattr(net, "deep_supervision", 0):  # a list of outputs in training, as the module has
        loss = DeepSupervisionLoss(loss)
    accelerator = cfg.trainer.get("accelerator", "auto")
    precision = str(resolve_precision(cfg.trainer.precision, accelerator, dims))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = net.to(device).train()
    image = torch.randn(int(data.batch_size), in_channels, *sides, device=device)
    target = torch.randint(0, num_classes, (int(data.batch_size), *sides), device=device)
    if cfg.module.get("channels_last", False) and dims == 2:
        image = image.contiguous(memory_format=torch.channels_last)
    dtype = torch.float16 if precision.startswith("16") else torch.bfloat16
    mixed = "mixed" in precision

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=mixed):
            output = net(image)
            value = loss(output, target)
        value.backward()
        optimizer.step()

    @torch.no_grad()
    def forward() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=mixed):
            net(image)

    training = _per_second(step, MEASURE_SECONDS, device)
    net.eval()
    voxels = image.shape[0] * math.prod(sides)
    return Rates(training, voxels * _per_second(forward, INFERENCE_SECONDS, device))


def _per_second(call: Callable[[], None], seconds: float, device: torch.device) -> float:
    """Calls of ``call`` per second over about ``seconds`` (at least 3), after two warm-up
    calls."""
    for _ in range(2):
        call()
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        call()
        calls += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return calls / (time.perf_counter() - started)


def parse_budget(text: str) -> float:
    """Seconds of a budget such as ``30m``, ``2h``, ``90s`` or ``45`` (minutes)."""
    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip().lower()
    factor = units.get(value[-1:], 60)
    number = value[:-1] if value[-1:] in units else value
    try:
        seconds = float(number) * factor
    except ValueError:
        seconds = math.nan
    if not seconds > 0:
        raise ValueError(f"budget={text!r} is not valid: expected a duration such as 30m or 2h")
    return seconds
