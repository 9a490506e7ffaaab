"""``unet-lab autoplan [--explain] [--output DIR] [--name NAME] [--left-right] data=folder
data.root=DIR [data.num_classes=N] [budget=30m]``: a recipe for your data, from its fingerprint
and this machine, as an ordinary experiment config with the reason for each value.

Reads every labelled training case once (one at a time), writes ``fingerprint.json``, plans
(:mod:`unet_lab.autoplan.rules`), measures the planned network's training steps per second
here to turn ``budget`` into epochs, and writes ``DIR/experiment/NAME.yaml`` and
``DIR/NAME/plan.md``; prints the command that trains it. ``--explain`` prints the fingerprint's
summary and the plan and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig

from unet_lab.autoplan.budget import apply_budget, validation_voxels, working_shape
from unet_lab.autoplan.files import (
    experiment_yaml,
    plan_markdown,
    plan_overrides,
    plan_values,
    train_command,
    write_plan,
)
from unet_lab.autoplan.measure import measure_rates, parse_budget, sample_bytes_for, this_device
from unet_lab.autoplan.rules import plan_from
from unet_lab.autoplan.sources import fingerprint_of
from unet_lab.config.compose import CONFIG_MODULE, compose_train_config
from unet_lab.errors import ConfigError, input_errors_exit

log = logging.getLogger(__name__)
DEFAULT_BUDGET = "30m"


def main(args: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="unet-lab autoplan", description=__doc__)
    parser.add_argument("--explain", action="store_true", help="print, write nothing")
    parser.add_argument("--output", default="plans", help="folder for the plan (created)")
    parser.add_argument("--name", default=None, help="experiment name (default: the data's)")
    parser.add_argument(
        "--left-right", action="store_true", help="left and right differ: no left-right flips"
    )
    options, given = parser.parse_known_args(list(args))
    budgets = [o.split("=", 1)[1] for o in given if o.startswith("budget=")]
    overrides = [o for o in given if not o.startswith("budget=")]
    with input_errors_exit():
        if options.name:
            _check_name(options.name)
        try:
            budget = parse_budget(budgets[-1] if budgets else DEFAULT_BUDGET)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        cfg = compose_train_config(overrides)
        fingerprint = fingerprint_of(cfg.data)
        device = this_device()
        sample_bytes = sample_bytes_for(fingerprint.channels, fingerprint.num_classes)
        plan = plan_from(fingerprint, device, sample_bytes, options.left_right)
        values = plan_values(plan, cfg.data, fingerprint)
        planned = compose_train_config([*overrides, *plan_overrides(plan, values)])
        shape = working_shape(plan, fingerprint)
        rates = measure_rates(planned, fingerprint.channels, fingerprint.num_classes, shape)
        cases = len(fingerprint.cases)
        voxels = validation_voxels(
            shape, _validation_cases(planned.data, cases), _tile(planned, len(shape)),
            float(planned.module.eval_overlap),
        )  # fmt: skip
        apply_budget(plan, budget, rates, cases, voxels)
        values = plan_values(plan, cfg.data, fingerprint)
    folder = Path(options.output).expanduser().resolve()
    name = options.name or _name(Path(fingerprint.root).name)
    command = "unet-lab autoplan " + " ".join(list(args))
    markdown = plan_markdown(plan, fingerprint, device, command, folder, name)
    if options.explain:
        summary = {k: v for k, v in json.loads(fingerprint.to_json()).items() if k != "cases"}
        print(json.dumps(summary, indent=1))
        print(markdown)
        return
    paths = write_plan(
        folder, name, experiment_yaml(plan, values, name, folder), markdown, fingerprint
    )
    print(markdown)
    print("wrote " + ", ".join(str(p) for p in paths))
    print(f"train it with: {train_command(folder, name)}")


def _validation_cases(data: DictConfig, cases: int) -> int:
    """How many of ``cases`` the planned split validates on: one fold, or ``val_fraction``."""
    if data.get("folds"):
        return math.ceil(cases / int(data.folds))
    return max(1, round(float(data.get("val_fraction", 0.2)) * cases))


def _tile(cfg: DictConfig, dims: int) -> list[int] | None:
    """The validation tile of the composed ``cfg`` (``module.eval_tile_size``), per axis; None
    for whole images."""
    tile = cfg.module.get("eval_tile_size")
    if tile is None:
        return None
    return [int(tile)] * dims if isinstance(tile, int) else [int(side) for side in tile]


def _check_name(name: str) -> None:
    """Refuses the name of a built-in experiment: ``experiment=NAME`` would load that one, not
    the plan, even with ``--config-dir``."""
    if (resources.files(CONFIG_MODULE) / "experiment" / f"{name}.yaml").is_file():
        raise ConfigError(
            f"--name {name}: a built-in experiment has that name (experiment={name} would load "
            "it instead of the plan); choose another name"
        )


def _name(root: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in root.lower())
    return f"autoplan_{cleaned or 'data'}"
