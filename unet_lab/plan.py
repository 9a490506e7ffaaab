"""``unet-lab plan [overrides]``: what a model costs on the data it would train on, before
training: parameters, forward FLOPs per image, memory of weights and optimizer state, and the
activation memory of a training batch, measured with one forward pass of one image.

Uses the same config as training (``model=... data=... data.patch_size=...``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from unet_lab.check_data import load_datamodule
from unet_lab.config import compose_train_config, instantiate
from unet_lab.data.datamodule import InMemoryDataModule
from unet_lab.errors import input_errors_exit
from unet_lab.train import build_network

# The smallest side the deepest level should keep: below it, the bottom convolutions see
# mostly padding.
MIN_BOTTLENECK = 4


@dataclass
class Plan:
    model: str
    input_size: tuple[int, int]
    in_channels: int
    out_channels: int
    batch_size: int
    parameters: int
    gflops_per_image: float
    activation_bytes_per_image: dict[str, int]  # by precision
    output_size: tuple[int, ...]
    warnings: list[str]

    def table(self) -> str:
        mib = 2**20
        weights = self.parameters * 4
        lines = [
            f"model                 {self.model}",
            f"input                 {self.in_channels} x {self.input_size[0]} x "
            f"{self.input_size[1]} (batch {self.batch_size})",
            f"output                {self.out_channels} x {' x '.join(map(str, self.output_size))}",
            f"parameters            {self.parameters / 1e6:.2f} M",
            f"forward per image     {self.gflops_per_image:.2f} GFLOP",
            f"weights + grads + Adam state   {4 * weights / mib:.0f} MiB (float32)",
        ]
        for precision, per_image in self.activation_bytes_per_image.items():
            lines.append(
                f"activations, batch {self.batch_size:<3} {precision:<11} "
                f"{self.batch_size * per_image / mib:.0f} MiB"
            )
        lines += [f"warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


def training_input_size(datamodule: InMemoryDataModule) -> tuple[int, int]:
    """The spatial size of training samples: the patch size, else the images' size."""
    for name in ("patch_size", "image_size"):
        size = getattr(datamodule, name, None)
        if size:
            return int(size), int(size)
    image = datamodule.load_split("train")[0][0]
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


def warnings_for(net: nn.Module, size: tuple[int, int]) -> list[str]:
    depth = getattr(net, "depth", None)
    if depth is None:
        return []
    bottleneck = min(size) / 2**depth
    if bottleneck >= MIN_BOTTLENECK:
        return []
    advice = max(1, int(math.log2(min(size) / MIN_BOTTLENECK)))
    return [
        f"depth {depth} on {min(size)} px leaves a {bottleneck:g} px deepest level "
        f"(< {MIN_BOTTLENECK}): use depth <= {advice} or larger patches"
    ]


def make_plan(cfg: DictConfig) -> Plan:
    datamodule = load_datamodule(cfg)
    net = build_network(cfg.model, datamodule, instantiate(cfg.loss, "loss"))
    size = training_input_size(datamodule)
    image = torch.randn(1, datamodule.in_channels, *size)
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        output = net(image)
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
        gflops_per_image=flops.get_total_flops() / 1e9,
        activation_bytes_per_image=activations,
        output_size=tuple(output.shape[2:]),
        warnings=warnings_for(net, size),
    )


def main(args: Sequence[str]) -> None:
    with input_errors_exit():
        plan = make_plan(compose_train_config(list(args)))
    print(plan.table())
