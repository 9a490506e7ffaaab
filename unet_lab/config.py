"""Turning the composed Hydra config into objects, with errors that name the config key."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from unet_lab.errors import config_error

CONFIG_MODULE = "unet_lab.conf"


def _run_name() -> str | None:
    """The job's overrides (``model.depth=3,...``), or its folder name when it has none."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.job.override_dirname or Path(hydra_cfg.runtime.output_dir).name


def _sweep_group() -> str | None:
    """``<date>_<time>`` of the sweep folder for jobs of a ``-m`` sweep, None for single runs."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    return f"{sweep_dir.parent.name}_{sweep_dir.name}"


# Config groups whose choice becomes a W&B tag ("model:unet").
_TAGGED_GROUPS = ("experiment", "data", "model", "loss", "augmentation", "trainer")


def _run_tags() -> list[str]:
    """W&B tags of a run: its choice in each main config group, and ``sweep`` for sweep jobs,
    so the runs table filters by model, data or loss at a click."""
    if not HydraConfig.initialized():
        return []
    hydra_cfg = HydraConfig.get()
    choices = hydra_cfg.runtime.choices
    tags = [f"{g}:{choices[g]}" for g in _TAGGED_GROUPS if choices.get(g) not in (None, "None")]
    return [*tags, "sweep"] if hydra_cfg.mode == RunMode.MULTIRUN else tags


# Longest folder name written (file systems allow 255 bytes).
MAX_FOLDER_NAME = 160


def short_name(name: str) -> str:
    """``name`` if short enough, else its start and a hash of the whole (still unique and the
    same for the same overrides, so a re-run sweep finds its job folders)."""
    if len(name) <= MAX_FOLDER_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_FOLDER_NAME - 12]}..{digest}"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("unet_lab.short_name", short_name, replace=True)
    OmegaConf.register_new_resolver("unet_lab.run_name", _run_name, replace=True)
    OmegaConf.register_new_resolver("unet_lab.sweep_group", _sweep_group, replace=True)
    OmegaConf.register_new_resolver("unet_lab.run_tags", _run_tags, replace=True)


register_resolvers()


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """The config ``conf/<name>.yaml`` with command-line overrides, outside a Hydra run."""
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return compose(name, overrides=overrides)


def compose_train_config(overrides: list[str]) -> DictConfig:
    """The training config as ``train.py`` would compose it, outside a Hydra run."""
    return compose_config("train", overrides)


def instantiate(node: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node)``; a bad argument becomes a ConfigError naming ``key``."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except (InstantiationException, TypeError) as exc:
        error = config_error(exc, key)
        if error is None:
            raise
        raise error from exc


def instantiate_named(group: DictConfig | None, key: str) -> list[Any]:
    """Instantiates each entry of a ``{name: config}`` group (callbacks, loggers), skipping
    entries set to null."""
    if not group:
        return []
    return [instantiate(node, f"{key}.{name!s}") for name, node in group.items() if node]


def optional(node: DictConfig | None) -> DictConfig | None:
    """An optional group (``scheduler=none``) composes to an empty node: treat it as absent."""
    return node if node else None
