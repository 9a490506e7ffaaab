"""``unet-lab plan [overrides]``: parameters, FLOPs, memory and training compute of a model on
the data it would train on, with the same overrides as ``train``."""

from __future__ import annotations

from collections.abc import Sequence

from unet_lab.config.compose import compose_train_config
from unet_lab.errors import input_errors_exit
from unet_lab.training.plan import make_plan


def main(args: Sequence[str]) -> None:
    with input_errors_exit():
        plan = make_plan(compose_train_config(list(args)))
    print(plan.table())
