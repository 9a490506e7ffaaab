"""A plan as files: a Hydra experiment (``<folder>/experiment/<name>.yaml``, loadable with
``--config-dir <folder> experiment=<name>``), ``plan.md`` with one line of reasons per choice
and ``fingerprint.json``; and as the overrides that compose the same config."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from unet_lab.autoplan.fingerprint import Fingerprint
from unet_lab.autoplan.rules import Device, Plan

# The keys of the user's data config that say what the data is (not how to train on it):
# carried into the experiment as given.
IDENTITY_KEYS = (
    "num_classes", "class_names", "mask_values", "palette", "ignore_index", "pairs",
    "mask_name", "image_pattern", "channel_suffix", "spacing", "folds", "fold",
    "val_fraction", "test_fraction", "crop_nonzero",
)  # fmt: skip


def plan_values(plan: Plan, data: DictConfig, fingerprint: Fingerprint) -> dict[str, Any]:
    """The config values of the experiment: the data's identity (as given), the plan's
    choices and the fingerprint's hash (for the check at training time)."""
    given = OmegaConf.to_container(data, resolve=True)
    assert isinstance(given, dict)
    identity = {k: given[k] for k in IDENTITY_KEYS if given.get(k) is not None}
    values: dict[str, Any] = {"data": {"root": fingerprint.root, **identity}}
    for group, node in plan.values.items():
        values.setdefault(group, {}).update(node)
    values["autoplan"] = {"files_hash": fingerprint.files_hash, "root": fingerprint.root}
    return values


def _flatten(node: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        return [item for k, v in node.items() for item in _flatten(v, f"{prefix}.{k}")]
    return [(prefix, node)]


def plan_overrides(plan: Plan, values: dict[str, Any]) -> list[str]:
    """Command-line overrides that compose what the experiment file composes."""
    overrides = [f"{group}={option}" for group, option in plan.defaults.items()]
    for group, node in values.items():
        for key, value in _flatten(node, group):
            shown = OmegaConf.to_yaml({"v": value}).strip().removeprefix("v:").strip()
            shown = shown.replace("\n", " ") if not isinstance(value, list) else _inline(value)
            overrides.append(f"{'+' if group == 'autoplan' else ''}{key}={shown}")
    return overrides


def _inline(values: list[Any]) -> str:
    return "[" + ",".join(_inline(v) if isinstance(v, list) else str(v) for v in values) + "]"


def experiment_yaml(plan: Plan, values: dict[str, Any], name: str, folder: Path) -> str:
    """The experiment file's text."""
    defaults = [{f"override /{group}": option} for group, option in plan.defaults.items()]
    body = OmegaConf.to_yaml({"defaults": defaults, **values}, sort_keys=False)
    header = [
        "# @package _global_",
        f"# Planned by unet-lab autoplan on {time.strftime('%Y-%m-%d')} for "
        f"{values['data']['root']}.",
        f"# Why each value: {folder / name / 'plan.md'}. Edit freely: it is an ordinary config.",
        f"#   {train_command(folder, name)}",
    ]
    return "\n".join(header) + "\n" + body


def train_command(folder: Path, name: str) -> str:
    return f"python train.py --config-dir {folder} experiment={name}"


def plan_markdown(
    plan: Plan,
    fingerprint: Fingerprint,
    device: Device,
    command: str,
    folder: Path,
    name: str,
) -> str:
    """``plan.md``: the data in a few lines, each choice with its reason, the command."""
    classes = ", ".join(
        f"{c.name} {100 * c.share:.2f} % (in {100 * c.presence:.0f} % of cases)"
        for c in fingerprint.classes
    )
    shape = " x ".join(f"{v:g}" for v in fingerprint.median_shape)
    lines = [
        f"# Plan `{name}` for {fingerprint.root}",
        "",
        f"Planned with `{command}` on {time.strftime('%Y-%m-%d')}, for {device.kind} "
        f"({device.name}).",
        "",
        f"- {len(fingerprint.cases)} labelled {fingerprint.kind}, {fingerprint.channels} "
        f"channel(s) ({', '.join(fingerprint.dtypes)}), median size {shape}"
        + (
            f", median spacing {' x '.join(f'{v:g}' for v in fingerprint.median_spacing)} mm"
            if fingerprint.median_spacing
            else ""
        ),
        f"- classes: {classes}",
        f"- fingerprint: `{folder / name / 'fingerprint.json'}` (files hash "
        f"`{fingerprint.files_hash}`: training warns when the data's files differ)",
        "",
        "| choice | why |",
        "|---|---|",
        *[f"| `{choice}` | {why} |" for choice, why in plan.reasons],
        "",
        "Train it:",
        "",
        "```bash",
        train_command(folder, name),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_plan(
    folder: Path, name: str, experiment: str, markdown: str, fingerprint: Fingerprint
) -> list[Path]:
    """Writes the three files; returns their paths. Never replaces another plan's files with
    a different name; re-planning the same name replaces its own."""
    paths = [
        folder / "experiment" / f"{name}.yaml",
        folder / name / "plan.md",
        folder / name / "fingerprint.json",
    ]
    for path, text in zip(paths, (experiment, markdown, fingerprint.to_json()), strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return paths
