"""``unet-lab train [overrides]`` (``python train.py``): train a model, or with ``-m`` a sweep;
``--help`` lists the config groups and keys."""

from __future__ import annotations

from collections.abc import Sequence

from unet_lab.training.app import run_command


def main(args: Sequence[str] | None = None) -> None:
    run_command(args)
