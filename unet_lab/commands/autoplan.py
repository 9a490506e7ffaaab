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
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from unet_lab.autoplan.files import (
    experiment_yaml,
    plan_markdown,
    plan_overrides,
    plan_values,
    train_command,
    write_plan,
)
from unet_lab.autoplan.measure import parse_budget, sample_bytes_for, steps_per_second, this_device
from unet_lab.autoplan.rules import apply_budget, plan_from
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
        scale = planned.data.get("scale", 1.0)
        scale = float(scale) if isinstance(scale, int | float) else 1.0
        whole = [round(side * scale) for side in fingerprint.median_shape]
        rate = steps_per_second(planned, fingerprint.channels, fingerprint.num_classes, whole)
        apply_budget(plan, budget, rate, len(fingerprint.cases))
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
