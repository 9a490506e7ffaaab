"""Resuming: the command-line arguments that continue a run (or a sweep) in its own folder
with its own overrides."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, open_dict

from unet_lab.errors import ConfigError
from unet_lab.runs.folders import (
    CHECKPOINT_DIR,
    HYDRA_DIR,
    MULTIRUN_FLAGS,
    override_key,
    overrides_only,
    quoted,
    run_dir_of_checkpoint,
    unquote,
)
from unet_lab.runs.summary import finished_summary

log = logging.getLogger("unet_lab")


def saved_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of the run's latest start (first start or last resume)."""
    starts = [run_dir / HYDRA_DIR, *sorted((run_dir / HYDRA_DIR).glob("resume-*"))]
    return list(yaml.safe_load((starts[-1] / "overrides.yaml").read_text()) or [])


def _is_ckpt_path(arg: str) -> bool:
    return arg.split("=", 1)[0].lstrip("+") == "ckpt_path"


def resume_arguments(args: list[str]) -> list[str]:
    """Rewrites command-line overrides so that ``ckpt_path=<run>/checkpoints/last.ckpt``
    resumes that run in its own folder, with its own overrides (the new ones win).

    The checkpoint path is quoted for Hydra, so paths of sweep jobs (``model.depth=3,...``)
    work as typed. Checkpoints outside a run folder start a new run; sweeps are left as they are.
    """
    if any(a in MULTIRUN_FLAGS for a in args):
        return args
    args = [
        f"{a.split('=', 1)[0]}={quoted(a.split('=', 1)[1])}" if _is_ckpt_path(a) else a
        for a in args
    ]
    ckpts = [unquote(a.split("=", 1)[1]) for a in args if _is_ckpt_path(a)]
    run_dir = run_dir_of_checkpoint(ckpts[-1]) if ckpts else None
    if run_dir is None or not (run_dir / HYDRA_DIR / "overrides.yaml").is_file():
        return args
    given = {override_key(a) for a in overrides_only(args)}
    earlier = [o for o in saved_overrides(run_dir) if override_key(o) not in given | {"ckpt_path"}]
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    placement = [f"hydra.output_subdir={HYDRA_DIR}/resume-{stamp}"]
    if not any(key.startswith("hydra.run.dir") for key in given):
        placement.append(f"hydra.run.dir={quoted(str(run_dir))}")
    return earlier + args + placement


def _is_resume_true(arg: str) -> bool:
    key, _, value = arg.partition("=")
    return key.lstrip("+") == "resume" and value.lower() == "true"


def sweep_resume_arguments(args: list[str], log_dir: Path) -> list[str]:
    """For ``-m ... resume=true``: points Hydra at the newest earlier sweep folder under
    ``log_dir/multirun`` started with the same overrides (``resume`` aside), so that its
    finished jobs are skipped and its unfinished ones continue (see ``train``). Without such
    a folder the sweep starts anew."""
    if not any(a in MULTIRUN_FLAGS for a in args) or not any(map(_is_resume_true, args)):
        return args
    if any(override_key(a) == "hydra.sweep.dir" for a in overrides_only(args)):
        return args
    wanted = sorted(a for a in overrides_only(args) if override_key(a) != "resume")
    records = sorted(
        (log_dir / "multirun").glob("*/*/multirun.yaml"), key=lambda p: p.stat().st_mtime
    )
    for record in reversed(records):
        task = yaml.safe_load(record.read_text())["hydra"]["overrides"]["task"]
        if sorted(t for t in task if override_key(t) != "resume") == wanted:
            return [*args, f"hydra.sweep.dir={quoted(str(record.parent))}"]
    print(
        f"resume=true: no earlier sweep with these overrides in {log_dir / 'multirun'}: a new one"
    )
    return args


def continue_in_place(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """A run folder that already holds a run (a fixed ``hydra.run.dir``, a requeued SLURM
    job, a re-run sweep): with ``resume`` true or auto, a completed run is skipped (its summary
    is returned) and an unfinished one continues from its ``last.ckpt``; with ``resume=false``
    the run is refused, so that nothing overwrites it."""
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    done = finished_summary(run_dir)
    if str(cfg.get("resume")).lower() == "false":
        if done is not None or last.is_file():
            raise ConfigError(
                f"{run_dir} already holds a run; resume=auto continues it (or skips it when "
                "it completed), or give another folder"
            )
        return None
    if done is not None:
        log.info("resume=%s: %s already completed, skipped", cfg.resume, run_dir)
        return done
    if last.is_file():
        log.info("resume=%s: continuing %s from %s", cfg.resume, run_dir, last.name)
        with open_dict(cfg):
            cfg.ckpt_path = str(last)
    return None
