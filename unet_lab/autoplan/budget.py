"""The time budget of a plan: epochs and validation cadence from the rates measured on this
machine (:mod:`unet_lab.autoplan.measure`), once the rules (:mod:`unet_lab.autoplan.rules`) have
chosen the network, patch and batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unet_lab.autoplan.fingerprint import Fingerprint
from unet_lab.autoplan.rules import Plan
from unet_lab.inference.sliding_window import tile_starts

VALIDATIONS = 20  # validations over a planned run, at most
# Of a budget, before steps run at the measured rate: loader workers, first batches. The budget
# is the run's time from its first step, as trainer.max_time counts it.
STARTUP_SECONDS = 5.0
VALIDATION_SHARE = 0.15  # of the budget, at most, for validation
VALIDATION_OVERHEAD_SECONDS = 2.0  # per validation, beyond its forward passes: scores, checkpoint
LOADING_MARGIN = 0.1  # of the training time, for data loading and logging beyond the measured rate
# Volumes: below this many steps the light preset (flips, 90-degree turns, brightness and
# contrast) beat nnU-Net-like augmentation: hippocampus fold 0 after 1,000 steps, val Dice
# 0.837 light vs 0.829 medium (docs/volumes.md); nnU-Net's heavy augmentation pays off over
# its 250,000 steps.
LIGHT_AUGMENTATION_STEPS = 5_000


@dataclass(frozen=True)
class Rates:
    """What a planned network runs at on the device (measured): training steps per second
    (forward, loss, backward and optimizer step on one batch) and voxels per second of
    inference (forward passes without gradients, as validation runs)."""

    steps_per_second: float
    inference_voxels_per_second: float


def working_shape(plan: Plan, fp: Fingerprint) -> list[int]:
    """The median case's spatial size at the planned resolution: images at ``data.scale``,
    volumes at ``data.target_spacing``."""
    if fp.kind == "volumes":
        target = np.asarray(plan.get("data.target_spacing"), float)
        shapes = [
            np.asarray(c.shape) * np.asarray(c.spacing) / target for c in fp.cases if c.spacing
        ]
        return [max(1, round(float(v))) for v in np.median(shapes, axis=0)]
    scale = float(plan.get("data.scale", 1.0))
    return [max(1, round(side * scale)) for side in fp.median_shape]


def validation_voxels(
    shape: Sequence[int], cases: int, tile: Sequence[int] | None, overlap: float
) -> int:
    """Voxels one validation passes through the network: ``cases`` cases of ``shape``, whole
    (``tile`` None) or tile by tile with ``overlap``, as the sliding window covers them."""
    if tile is None:
        return cases * math.prod(shape)
    covered = []
    for length, side in zip(shape, tile, strict=True):
        step = max(1, int(side * (1 - overlap)))
        covered.append(len(tile_starts(max(length, side), side, step)) * side)
    return cases * math.prod(covered)


def apply_budget(
    plan: Plan, budget_seconds: float, rates: Rates, train_cases: int, validation_voxels: int
) -> None:
    """Epochs and validation cadence from a time budget. One validation costs its forward
    passes (``validation_voxels`` at the measured inference rate) plus
    ``VALIDATION_OVERHEAD_SECONDS``; the run validates as often as ``VALIDATION_SHARE`` of the
    budget (less start-up) allows, between once and ``VALIDATIONS`` times, and trains for the
    rest (less ``LOADING_MARGIN``) at the measured step rate. Volumes get the light
    augmentation when that is under ``LIGHT_AUGMENTATION_STEPS`` steps."""
    available = max(0.0, budget_seconds - STARTUP_SECONDS)
    one_validation = VALIDATION_OVERHEAD_SECONDS + validation_voxels / max(
        rates.inference_voxels_per_second, 1e-9
    )
    affordable = int(VALIDATION_SHARE * available / one_validation)
    validations = min(VALIDATIONS, max(1, affordable))
    training = max(0.0, available - validations * one_validation) * (1 - LOADING_MARGIN)
    steps = max(validations, int(training * rates.steps_per_second))
    per_epoch = max(1, steps // validations)
    batch = int(plan.get("data.batch_size", 2))
    plan.set(
        "data.samples_per_epoch", per_epoch * batch,
        f"{per_epoch} steps of {batch} between validations ({train_cases} training cases)",
    )  # fmt: skip
    plan.set(
        "trainer.max_epochs", steps // per_epoch,
        f"{budget_seconds / 60:g} min at {rates.steps_per_second:.2f} steps/s measured here, "
        f"less {STARTUP_SECONDS:g} s start-up, validation ({validations} x "
        f"{one_validation:.1f} s) and {100 * LOADING_MARGIN:g} % for data loading: {steps} "
        f"steps in {steps // per_epoch} validated epochs",
    )  # fmt: skip
    if plan.defaults.get("augmentation") == "volume_medium" and steps < LIGHT_AUGMENTATION_STEPS:
        plan.choose(
            "augmentation", "volume_light",
            f"{steps} steps (< {LIGHT_AUGMENTATION_STEPS}): flips, 90-degree turns, brightness "
            "and contrast learn faster in a short run than nnU-Net-like augmentation",
        )  # fmt: skip
