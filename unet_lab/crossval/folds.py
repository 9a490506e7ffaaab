"""The training side of ``unet-lab cv``: the sweep arguments that train every fold of every
configuration, and the finished sweep read back as configurations with their fold runs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from unet_lab.config.compose import compose_train_config
from unet_lab.config.resolvers import short_name
from unet_lab.errors import ConfigError
from unet_lab.runs.folders import HYDRA_DIR, MULTIRUN_FLAGS, override_key, overrides_only
from unet_lab.runs.resume import saved_overrides
from unet_lab.runs.summary import SUMMARY_FILE

DEFAULT_FOLDS = 5
# Keys cv sets itself (per job), so they do not tell configurations apart.
FOLD_KEYS = ("data.fold", "data.folds", "resume", "hydra.sweep.dir")


def _is_sweep(override: str) -> bool:
    return OverridesParser.create().parse_override(override).is_sweep_override()


def fold_count(overrides: list[str]) -> int:
    """The number of folds: ``data.folds`` as composed from ``overrides`` (sweep lists left
    out), else :data:`DEFAULT_FOLDS`. A data module without folds, or ``data.fold`` given,
    raises :class:`ConfigError` naming the key."""
    own = overrides_only(overrides)
    if any(override_key(o) == "data.fold" for o in own):
        raise ConfigError(
            "data.fold: unet-lab cv trains every fold; set their number with data.folds=K"
        )
    cfg = compose_train_config([o for o in own if not _is_sweep(o)])
    if "folds" not in cfg.data:
        raise ConfigError(
            f"data: {cfg.data.get('_target_', 'this data module')} has no folds; unet-lab cv "
            "needs a data module with data.folds (data=folder, data=volumes)"
        )
    folds = cfg.data.folds if cfg.data.folds is not None else DEFAULT_FOLDS
    if not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"data.folds={folds!r} is not valid: expected an integer >= 2")
    return folds


def sweep_arguments(args: list[str], folds: int) -> list[str]:
    """``train -m`` arguments for every fold of every configuration that ``args`` sweep;
    ``resume=true`` makes re-running the same command continue its sweep."""
    own = [a for a in args if a not in MULTIRUN_FLAGS]
    with_resume = any(override_key(a) == "resume" for a in overrides_only(own))
    return [
        "-m",
        *own,
        f"data.folds={folds}",
        "data.fold=" + ",".join(str(k) for k in range(folds)),
        *([] if with_resume else ["resume=true"]),
    ]


@dataclass
class FoldRun:
    """One fold's training run: its folder, fold index and summary (``metrics.json``)."""

    run_dir: Path
    fold: int
    summary: dict[str, Any]

    @property
    def completed(self) -> bool:
        return self.summary.get("status") == "completed"

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / str(self.summary.get("best_checkpoint") or "checkpoints/best.ckpt")

    @property
    def regions(self) -> bool:
        """Whether the run trained overlapping regions (``data.regions``)."""
        config = yaml.safe_load((self.run_dir / HYDRA_DIR / "config.yaml").read_text())
        return bool((config.get("data") or {}).get("regions"))

    def validation(self) -> dict[str, float]:
        """The best checkpoint's validation scores (NaN where a class was absent)."""
        return {
            k: (math.nan if v is None else float(v))
            for k, v in (self.summary.get("val") or {}).items()
        }


@dataclass
class Configuration:
    """The runs of one configuration: the overrides that set it apart from the others (its
    ``name``; ``all`` when the sweep holds one), and its fold runs by fold."""

    name: str
    overrides: list[str]
    runs: dict[int, FoldRun] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """Its folder name under ``cv/``."""
        return short_name(self.name.replace("/", "_").replace(" ", "_"))

    def missing(self, folds: int) -> list[int]:
        """The folds without a completed run."""
        return [k for k in range(folds) if k not in self.runs or not self.runs[k].completed]


def read_sweep(sweep_dir: Path) -> list[Configuration]:
    """The configurations of a finished cv sweep, in the order of their first job."""
    jobs = sorted(
        (p for p in sweep_dir.iterdir() if (p / HYDRA_DIR / "overrides.yaml").is_file()),
        key=lambda p: int(p.name.split("_", 1)[0]) if p.name.split("_")[0].isdigit() else 0,
    )
    groups: dict[tuple[str, ...], list[tuple[Path, int]]] = {}
    for job in jobs:
        overrides = [o for o in saved_overrides(job) if override_key(o) not in FOLD_KEYS]
        config = OmegaConf.create(yaml.safe_load((job / HYDRA_DIR / "config.yaml").read_text()))
        groups.setdefault(tuple(overrides), []).append((job, int(config.data.fold)))
    varying = _varying_keys([list(key) for key in groups])
    configurations = []
    for key, jobs_of in groups.items():
        shown = [o for o in key if override_key(o) in varying]
        configuration = Configuration(" ".join(shown) or "all", list(key))
        for job, fold in jobs_of:
            path = job / SUMMARY_FILE
            summary = json.loads(path.read_text()) if path.is_file() else {"status": "missing"}
            configuration.runs[fold] = FoldRun(job, fold, summary)
        configurations.append(configuration)
    return configurations


def _varying_keys(override_lists: list[list[str]]) -> set[str]:
    """The keys whose values differ between the lists (or that some lists lack)."""
    values: dict[str, set[str]] = {}
    lists_with: dict[str, int] = {}
    for overrides in override_lists:
        for override in overrides:
            values.setdefault(override_key(override), set()).add(override)
        for key in {override_key(o) for o in overrides}:
            lists_with[key] = lists_with.get(key, 0) + 1
    return {
        key
        for key, seen in values.items()
        if len(seen) > 1 or lists_with[key] < len(override_lists)
    }
