"""Learning-rate schedules stepped once per optimizer step.

The training module passes ``total_steps`` (from the trainer) to any schedule that takes it, so
configs never repeat the epoch count. Schedules here are closures over ``total_steps``: when a
run is resumed with a larger ``trainer.max_epochs`` they stretch to the new length instead of
failing past their old end.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from unet_lab.arguments import check_float, check_int


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.03,
    min_lr_ratio: float = 0.01,
) -> LambdaLR:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to
    ``min_lr_ratio`` times the base learning rate (held there past ``total_steps``)."""
    check_int("total_steps", total_steps, 1)
    check_float("warmup_fraction", warmup_fraction, 0.0, 1.0)
    check_float("min_lr_ratio", min_lr_ratio, 0.0, 1.0)
    warmup = int(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def poly(optimizer: Optimizer, total_steps: int, exponent: float = 0.9) -> LambdaLR:
    """nnU-Net's schedule: the base learning rate times ``(1 - step / total_steps) **
    exponent``, down to 0 at ``total_steps`` (held there past it)."""
    check_int("total_steps", total_steps, 1)
    check_float("exponent", exponent, 0.0)

    def factor(step: int) -> float:
        return max(0.0, 1 - step / total_steps) ** exponent

    return LambdaLR(optimizer, factor)
