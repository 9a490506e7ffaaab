"""The ``train`` command's Hydra application: resume and run-folder arguments, then Hydra, then
:func:`~unet_lab.training.run.train` for each job; and :func:`fit`, the same from Python."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import hydra
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from unet_lab.config.compose import CONFIG_MODULE
from unet_lab.errors import FULL_ERROR_ENV, InputError, full_traceback_asked, input_errors_exit
from unet_lab.runs.folders import (
    claimed_folder_arguments,
    quoted,
    release_if_unused,
    run_folder_argument,
)
from unet_lab.runs.resume import continue_in_place, resume_arguments, sweep_resume_arguments
from unet_lab.runs.summary import SUMMARY_FILE
from unet_lab.training.launcher import shared_run_folder_arguments
from unet_lab.training.run import quiet_third_party, train

log = logging.getLogger("unet_lab")


def _divide_threads() -> None:
    """Under a launcher that runs jobs in parallel (``hydra/launcher=joblib``), each job gets
    its share of the CPU threads instead of all of them (no oversubscription)."""
    n_jobs = int(HydraConfig.get().launcher.get("n_jobs") or 1)
    if n_jobs == 1:
        return
    parallel = (os.cpu_count() or 1) if n_jobs < 0 else n_jobs
    threads = max(1, (os.cpu_count() or 1) // parallel)
    torch.set_num_threads(threads)
    log.info("%d jobs in parallel: %d CPU threads for this one", parallel, threads)


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    # The SystemExit of a bad config passes through Hydra's job runner: a sweep stops at once.
    _divide_threads()
    run_dir = Path(cfg.paths.output_dir)
    if cfg.get("ckpt_path") is None:
        done = continue_in_place(cfg, run_dir)
        if done is not None:
            return done["optimized_metric"]["value"]
    with input_errors_exit():
        try:
            summary = train(cfg)
        except Exception as exc:
            if isinstance(exc, InputError) or HydraConfig.get().mode != RunMode.MULTIRUN:
                raise
            # One job of a sweep failed (diverged, crashed): it is recorded as failed in its
            # metrics.json; the other jobs run, and the sweep summary lists the failure.
            log.error("sweep job failed, the sweep goes on: %s: %s", type(exc).__name__, exc)
            return math.nan  # Optuna records a NaN trial as failed and goes on
    return summary["optimized_metric"]["value"]


def run_command(args: Sequence[str] | None = None) -> None:
    """The train command on ``args`` (default: ``sys.argv[1:]``): resume handling, then Hydra;
    config mistakes print one line and exit with code 2."""
    _run(list(sys.argv[1:] if args is None else args), full_traceback_asked())


def run_sweep(args: Sequence[str]) -> Path:
    """Runs ``unet-lab train -m *args`` as the command does (resume, run folders, launchers);
    config mistakes print one line and exit with code 2. Returns the sweep folder."""
    ran = _run(["-m", *[a for a in args if a not in ("-m", "--multirun")]], full_traceback_asked())
    folder = run_folder_argument(ran, "hydra.sweep.dir")
    if folder is None:
        raise RuntimeError("the sweep ran without a hydra.sweep.dir")
    return folder


def fit(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> dict[str, Any]:
    """Trains exactly as ``python train.py *overrides`` does, from Python (a notebook, a script).

    The same config composition, checks, run folder (with ``train.log``, ``.hydra/``,
    ``metrics.json``, ``predictions.png``) and checkpoints as the command, so ``eval``,
    ``predict`` and ``export`` accept them.

    Args:
        overrides: command-line overrides, e.g. ``["model.depth=3", "trainer.max_epochs=4"]``.
        output_dir: the run folder; by default a new ``runs/<date>/<time>`` under
            ``paths.log_dir`` (the working directory), as the command makes. A folder that
            already holds a completed run is not trained again: its summary is returned
            (``resume=auto``; ``resume=false`` refuses such a folder).

    Returns:
        The run's summary, the content of its ``metrics.json``.

    Raises:
        InputError: a config key or data file is wrong (the message names it), before training.
        RunFault: the storage stopped the run (a full disk); the message says what is kept.
        ValueError: ``overrides`` ask for a sweep (``-m``); run sweeps with ``unet-lab train -m``.
    """
    args = [str(o) for o in overrides]
    if any(a in ("-m", "--multirun") for a in args):
        raise ValueError("fit() trains one run; run sweeps with `unet-lab train -m ...`")
    if output_dir is not None:
        args.append(f"hydra.run.dir={quoted(str(Path(output_dir).expanduser().resolve()))}")
    run_dir = run_folder_argument(_run(args, full_traceback=True))  # mistakes are raised
    if run_dir is None or not (run_dir / SUMMARY_FILE).is_file():
        raise RuntimeError(f"the run left no {SUMMARY_FILE} in {run_dir}")
    return cast(dict[str, Any], json.loads((run_dir / SUMMARY_FILE).read_text()))


def _run(args: list[str], full_traceback: bool) -> list[str]:
    """Runs Hydra's training entry on ``args`` (resume and run-folder arguments added first).
    Returns the arguments Hydra ran with. Config and data mistakes exit with one line, or are
    raised with ``full_traceback``."""
    log_dir = Path(os.environ.get("UNET_LAB_LOG_DIR", "."))
    for arg in args:
        if arg.split("=", 1)[0] == "paths.log_dir":
            log_dir = Path(arg.split("=", 1)[1])
    torch.set_float32_matmul_precision("high")
    quiet_third_party()  # before Hydra starts: its own imports warn too
    if GlobalHydra.instance().is_initialized():  # a notebook that composed a config before
        GlobalHydra.instance().clear()
    saved_argv = sys.argv
    saved_env = {name: os.environ.get(name) for name in ("HYDRA_FULL_ERROR", FULL_ERROR_ENV)}
    os.environ[FULL_ERROR_ENV] = "1" if full_traceback else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's printer
    claimed = None
    try:
        with input_errors_exit(full_traceback=full_traceback):
            args = resume_arguments(args)
            args = shared_run_folder_arguments(sweep_resume_arguments(args, log_dir))
            args, claimed = claimed_folder_arguments(args, log_dir)
            sys.argv = [sys.argv[0], *args]
            _hydra_main()
    finally:
        release_if_unused(claimed)
        sys.argv = saved_argv
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return args
