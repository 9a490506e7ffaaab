"""What a model costs on the data it would train on, before training (``unet-lab plan``):
parameters, forward FLOPs per image, memory of weights and optimizer state, the activation
memory of a training batch (measured with one forward pass of one image), and the compute of
the whole training run."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from unet_lab.arguments import per_axis
from unet_lab.config.compose import instantiate
from unet_lab.data.datamodule import InMemoryDataModule
from unet_lab.training.build import build_datamodule, build_network

# The smallest side the deepest level should keep: below it, the bottom convolutions see
# mostly padding.
MIN_BOTTLENECK = 4


@dataclass
class TrainingCompute:
    """Forward FLOPs of a whole training run: each training sample costs about three forward
    passes (forward, and a backward pass of about twice the forward), each validation one
    forward pass over the validation images. FLOPs of a convolutional network grow with the
    pixels, so images of other sizes than the measured input are counted per pixel."""

    epochs: int
    train_samples: int  # per epoch
    gflops_per_sample: float
    validations: int
    validation_gflops: float  # one pass over the validation split

    @property
    def tflops(self) -> float:
        training = self.epochs * self.train_samples * 3 * self.gflops_per_sample
        return (training + self.validations * self.validation_gflops) / 1e3

    def __str__(self) -> str:
        return (
            f"{self.tflops:.1f} TFLOP ({self.epochs} epochs x {self.train_samples} samples x 3 x "
            f"{self.gflops_per_sample:.2f} GFLOP + {self.validations} validations x "
            f"{self.validation_gflops / 1e3:.2f} TFLOP)"
        )


def training_compute(
    cfg: DictConfig, datamodule: InMemoryDataModule, gflops: float, size: tuple[int, ...]
) -> TrainingCompute | None:
    """The :class:`TrainingCompute` of ``cfg`` (None when it trains by steps, not epochs)."""
    epochs = cfg.trainer.get("max_epochs")
    if not epochs or epochs < 0:
        return None
    per_pixel = gflops / math.prod(size)
    samples = datamodule.samples_per_epoch or len(datamodule.working_sizes("train"))
    has_val = datamodule.has_split("val")
    validation = sum(math.prod(s) for s in datamodule.working_sizes("val")) if has_val else 0
    every = int(cfg.trainer.get("check_val_every_n_epoch") or 1)
    return TrainingCompute(
        epochs=int(epochs),
        train_samples=int(samples),
        gflops_per_sample=gflops,
        validations=int(epochs) // every if has_val else 0,
        validation_gflops=validation * per_pixel,
    )


@dataclass
class Plan:
    """What :func:`make_plan` found; :meth:`table` is what ``unet-lab plan`` prints."""

    model: str
    input_size: tuple[int, ...]  # (H, W), or (D, H, W) for volumes
    in_channels: int
    out_channels: int
    batch_size: int
    parameters: int
    gflops_per_image: float
    activation_bytes_per_image: dict[str, int]  # by precision
    output_size: tuple[int, ...]
    warnings: list[str]
    compute: TrainingCompute | None = None
    pooling: str | None = None  # per-axis pooling, when it is not 2 along every axis

    def table(self) -> str:
        mib = 2**20
        weights = self.parameters * 4
        lines = [
            f"model                 {self.model}",
            f"input                 {self.in_channels} x "
            f"{' x '.join(map(str, self.input_size))} (batch {self.batch_size})",
            f"output                {self.out_channels} x {' x '.join(map(str, self.output_size))}",
            *([f"pooling per level     {self.pooling}"] if self.pooling else []),
            f"parameters            {self.parameters / 1e6:.2f} M",
            f"forward per image     {self.gflops_per_image:.2f} GFLOP",
            f"weights + grads + Adam state   {4 * weights / mib:.0f} MiB (float32)",
        ]
        for precision, per_image in self.activation_bytes_per_image.items():
            lines.append(
                f"activations, batch {self.batch_size:<3} {precision:<11} "
                f"{self.batch_size * per_image / mib:.0f} MiB"
            )
        if self.compute is not None:
            lines.append(f"training compute      {self.compute}")
        lines += [f"warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


def training_input_size(datamodule: InMemoryDataModule) -> tuple[int, ...]:
    """The spatial size of training samples: the patch size (one side per axis for volumes),
    else the images' size."""
    for name in ("patch_size", "image_size"):
        size = getattr(datamodule, name, None)
        if isinstance(size, tuple | list):
            return tuple(int(side) for side in size)
        if size:
            return int(size), int(size)
    image = datamodule.working_split("train")[0][0]  # at the working resolution (data.scale)
    return int(image.shape[0]), int(image.shape[1])


def saved_activation_bytes(
    net: nn.Module, image: torch.Tensor, autocast: AbstractContextManager
) -> int:
    """Bytes per image of the tensors a training forward pass keeps for the backward pass
    (measured on two images: batch norm needs more than one value per channel)."""
    image = torch.cat([image, image])
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    net.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast:
        outputs = net(image)
    del outputs
    parameters = {p.untyped_storage().data_ptr() for p in net.parameters()}
    return sum(size for pointer, size in storages.items() if pointer not in parameters) // 2


def warnings_for(net: nn.Module, size: tuple[int, ...]) -> list[str]:
    """Advice when the deepest level of ``net`` on ``size`` inputs is under MIN_BOTTLENECK
    along some axis (its pooling grid may differ per axis: ``model.spacing``)."""
    depth = getattr(net, "depth", None)
    if depth is None:
        return []
    grid = per_axis(getattr(net, "size_multiple", 2**depth), len(size))
    bottleneck, side, pooled = min(
        (side / need, side, need) for side, need in zip(size, grid, strict=True)
    )
    if bottleneck >= MIN_BOTTLENECK:
        return []
    advice = max(1, depth - math.ceil(math.log2(MIN_BOTTLENECK / bottleneck)))
    return [
        f"depth {depth} on {side} px (pooled {pooled}x along that axis) leaves a "
        f"{bottleneck:g} px deepest level (< {MIN_BOTTLENECK}): use depth <= {advice} or "
        "larger patches"
    ]


def pooling_text(net: nn.Module) -> str | None:
    """The per-axis pooling factors and kernels of a network with a pooling plan (None for
    one pooled by 2 along every axis at every level, or without a plan)."""
    plan = getattr(net, "plan", None)
    if plan is None or all(set(pool) == {2} for pool in plan.pools):
        return None
    shown = " ".join("x".join(map(str, pool)) for pool in plan.pools)
    kernels = " ".join("x".join(map(str, kernel)) for kernel in plan.kernels)
    return f"{shown} (kernels per level: {kernels})"


def make_plan(cfg: DictConfig) -> Plan:
    """The :class:`Plan` of a composed training config: its data read, its network built and
    run once on one training-sized input."""
    datamodule = build_datamodule(cfg)
    net = build_network(cfg.model, datamodule, instantiate(cfg.loss, "loss"))
    size = training_input_size(datamodule)
    image = torch.randn(1, datamodule.in_channels, *size)
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        output = net(image)
    gflops = flops.get_total_flops() / 1e9
    activations = {"float32": saved_activation_bytes(net, image, nullcontext())}
    activations["bf16-mixed"] = saved_activation_bytes(
        net, image, torch.autocast("cpu", dtype=torch.bfloat16)
    )
    return Plan(
        model=str(cfg.model._target_).rsplit(".", 1)[-1],
        input_size=size,
        in_channels=datamodule.in_channels,
        out_channels=int(output.shape[1]),
        batch_size=datamodule.batch_size,
        parameters=sum(p.numel() for p in net.parameters()),
        gflops_per_image=gflops,
        activation_bytes_per_image=activations,
        output_size=tuple(output.shape[2:]),
        warnings=warnings_for(net, size),
        compute=training_compute(cfg, datamodule, gflops, size),
        pooling=pooling_text(net),
    )
