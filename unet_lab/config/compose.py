"""Composing the configs outside a Hydra run, and turning config nodes into objects with
errors that name the config key."""

from __future__ import annotations

from typing import Any

import hydra
from hydra import compose, initialize_config_module
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from unet_lab.config.resolvers import register_resolvers
from unet_lab.errors import config_error

CONFIG_MODULE = "unet_lab.conf"

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
