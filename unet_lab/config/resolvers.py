"""Resolvers the configs use (``${unet_lab.run_name:}`` and the like): W&B run names, groups
and tags from the Hydra job, short folder names, and ``hydra/launcher=slurm_ddp``'s sizes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import ListConfig, OmegaConf

from unet_lab.errors import ConfigError


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
    """``name`` as one folder name: path separators (``data.root=/data/x``) become ``_``, and
    a long name becomes its start and a hash of the whole (still unique and the same for the
    same overrides, so a re-run sweep finds its job folders)."""
    safe = name.replace("/", "_").replace("\\", "_")
    if len(safe) <= MAX_FOLDER_NAME:
        return safe
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{safe[: MAX_FOLDER_NAME - 12]}..{digest}"


def device_count(devices: Any) -> int | None:
    """The number of devices a ``trainer.devices`` value names: a count (``4``, ``"4"``) or
    device indices (``[0, 1]``, ``"0,1"``); None for ``-1``, ``"auto"`` and anything else
    that leaves the count to the machine."""
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return len([part for part in text.split(",") if part.strip()]) or None
        devices = int(text) if text.isdigit() else None
    if isinstance(devices, ListConfig | list | tuple):
        return len(devices) or None
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return devices
    return None


def slurm_gpus_per_node(devices: Any) -> int:
    """``hydra/launcher=slurm_ddp``'s ``gpus_per_node`` unless set: ``trainer.devices``, which
    must then be a number (SLURM cannot allocate "all GPUs")."""
    count = device_count(devices)
    if count is None:
        raise ConfigError(
            f"hydra.launcher.gpus_per_node: hydra/launcher=slurm_ddp needs the number of GPUs "
            f"per node and trainer.devices={devices} does not give it; set "
            "hydra.launcher.gpus_per_node=N (tasks_per_node follows it) or trainer.devices=N"
        )
    return count


def slurm_tasks_per_node(gpus_per_node: Any, devices: Any) -> int:
    """``hydra/launcher=slurm_ddp``'s ``tasks_per_node``: one DDP task per GPU of the node.
    ``trainer.devices`` must agree (-1 or ``auto``: all the GPUs SLURM gives the task)."""
    count = gpus_per_node if isinstance(gpus_per_node, int) else None
    if count is None or isinstance(count, bool) or count < 1:
        raise ConfigError(
            f"hydra.launcher.gpus_per_node={gpus_per_node} is not valid: expected the number "
            "of GPUs per node (1 or more)"
        )
    wanted = device_count(devices)
    if wanted is not None and wanted != count:
        raise ConfigError(
            f"trainer.devices={devices} does not match hydra.launcher.gpus_per_node={count}: "
            "hydra/launcher=slurm_ddp starts one DDP task per GPU; set them equal, or "
            "trainer.devices=-1"
        )
    return count


def auxiliary_levels(depth: Any, most: Any) -> int:
    """``${unet_lab.auxiliary_levels:${model.depth},2}``: deep supervision from up to ``most``
    decoder levels, fewer in a shallow network (a network has ``depth - 1`` below the top)."""
    return max(0, min(int(most), int(depth) - 1))


def register_resolvers() -> None:
    """Registers the ``${unet_lab.*:}`` resolvers with OmegaConf (replacing earlier ones)."""
    OmegaConf.register_new_resolver("unet_lab.short_name", short_name, replace=True)
    OmegaConf.register_new_resolver("unet_lab.run_name", _run_name, replace=True)
    OmegaConf.register_new_resolver("unet_lab.sweep_group", _sweep_group, replace=True)
    OmegaConf.register_new_resolver("unet_lab.run_tags", _run_tags, replace=True)
    OmegaConf.register_new_resolver("unet_lab.auxiliary_levels", auxiliary_levels, replace=True)
    OmegaConf.register_new_resolver(
        "unet_lab.slurm_gpus_per_node", slurm_gpus_per_node, replace=True
    )
    OmegaConf.register_new_resolver(
        "unet_lab.slurm_tasks_per_node", slurm_tasks_per_node, replace=True
    )
