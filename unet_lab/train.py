"""Training: compose the config, build every part, fit, test the best checkpoint, summarize.

``python train.py [overrides]`` and ``unet-lab train [overrides]`` run :func:`main`; the Python
API is :func:`train` with a composed config.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn

from unet_lab.callbacks import (
    BestMetrics,
    CheckpointOnInterrupt,
    ConfigInCheckpoint,
    LogsFromCheckpoint,
    RandomStateInCheckpoint,
)
from unet_lab.checkpoint_io import AtomicCheckpointIO
from unet_lab.config import CONFIG_MODULE, instantiate, instantiate_named, optional
from unet_lab.data.datamodule import InMemoryDataModule
from unet_lab.distributed import is_rank_zero, local_ranks, shared_run_folder_arguments
from unet_lab.errors import ConfigError, InputError, RunFault, input_errors_exit, storage_fault
from unet_lab.inference import load_trained
from unet_lab.module import SegmentationModule
from unet_lab.precision import resolve_precision
from unet_lab.prediction_picture import write_prediction_picture
from unet_lab.runs import (
    CHECKPOINT_DIR,
    SUMMARY_FILE,
    claimed_folder_arguments,
    discard_unstarted,
    finished_summary,
    quoted,
    release_if_unused,
    resume_arguments,
    run_folder_argument,
    sweep_resume_arguments,
    write_summary,
)
from unet_lab.schema import check_config, check_fit, check_optimizer
from unet_lab.wandb_logging import finish_wandb

log = logging.getLogger("unet_lab")
# Validation images shown in predictions.png.
PICTURE_IMAGES = 4
# Set when the user asked for full tracebacks (HYDRA_FULL_ERROR=1 before we start).
_DEBUG_ENV = "UNET_LAB_FULL_ERROR"
# Third-party warnings that say nothing about the user's run (Lightning 2.6 with torch 2.13).
_KNOWN_HARMLESS_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Precision .* is not supported by the model summary",
    # Our epoch scores are computed from metric states summed over all ranks already.
    r"It is recommended to use `self.log\(.*sync_dist=True\)` when logging on epoch level",
)


@dataclass
class Experiment:
    """Everything a run is built from."""

    datamodule: InMemoryDataModule
    module: SegmentationModule
    trainer: pl.Trainer
    best_metrics: BestMetrics
    config: dict[str, Any]  # the resolved config, as logged and stored in checkpoints


def build(cfg: DictConfig) -> Experiment:
    """Instantiates data, model, module, callbacks, loggers and trainer from ``cfg``.

    Raises :class:`InputError` naming the key or file for bad values or data, before anything
    is trained.
    """
    check_config(cfg)
    transforms = {
        f"{split}_transform": instantiate(
            cfg.augmentation[split], f"augmentation.{split}", seed=cfg.get("seed")
        )
        for split in ("train", "eval")
    }
    datamodule = instantiate(cfg.data, "data", **transforms)
    if "seed" in cfg.data and cfg.data.seed is None:
        # Unseeded: the data module drew its seed. The resolved config carries it to the other
        # DDP ranks (built from it) and into checkpoints, so that they make the same data.
        cfg.data.seed = datamodule.seed
    loss = instantiate(cfg.loss, "loss")
    net = build_network(cfg.model, datamodule, loss)
    scheduler_cfg = optional(cfg.get("scheduler"))
    optimizer = instantiate(cfg.optimizer, "optimizer")
    scheduler = instantiate(scheduler_cfg, "scheduler") if scheduler_cfg else None
    check_optimizer(cfg, optimizer, scheduler)
    module = instantiate(
        cfg.module,
        "module",
        net=net,
        loss=loss,
        optimizer=optimizer,
        scheduler=scheduler,
        class_names=datamodule.class_names,
    )
    check_fit(
        cfg,
        datamodule.train_input_size,
        datamodule.train_input_size_key,
        net,
        module.epoch_metric_names(),
        datamodule.spatial_dims,
    )
    best_metrics = BestMetrics(cfg.optimized_metric, cfg.optimized_mode)
    resolved = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    named = instantiate_named(cfg.get("callbacks"), "callbacks")
    if not cfg.trainer.get("enable_progress_bar", True):  # no progress display at all
        named = [c for c in named if not isinstance(c, ProgressBar)]
    callbacks = [
        *named,
        best_metrics,
        ConfigInCheckpoint(resolved),
        CheckpointOnInterrupt(),
        RandomStateInCheckpoint(),
        LogsFromCheckpoint(),
    ]
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.get("accelerator", "auto"))
    trainer = instantiate(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=instantiate_named(cfg.get("logger"), "logger") or False,
        precision=precision,
        plugins=[AtomicCheckpointIO()],  # no half-written checkpoint after a kill
    )
    return Experiment(datamodule, module, trainer, best_metrics, resolved)


def build_network(model_cfg: DictConfig, datamodule: InMemoryDataModule, loss: Any) -> nn.Module:
    """The network of ``model_cfg`` for this data: the data decides the input channels and the
    classes (the model config does not repeat them); a single-output loss (binary
    cross-entropy) makes a single-output network."""
    num_classes = len(datamodule.class_names)
    out_channels = getattr(loss, "out_channels", num_classes)
    if out_channels == 1 and num_classes != 2:
        raise ConfigError(f"loss=bce is for binary data, but the data has {num_classes} classes")
    return instantiate(
        model_cfg, "model", in_channels=datamodule.in_channels, num_classes=out_channels
    )


def _job_overrides() -> dict[str, str]:
    """``{key: value}`` of the command-line overrides of this Hydra job (none outside Hydra)."""
    if not HydraConfig.initialized():
        return {}
    pairs = (o.split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o)
    return {key.lstrip("+~"): value for key, value in pairs if not key.startswith("hydra")}


def _checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    return (
        trainer.checkpoint_callback
        if isinstance(trainer.checkpoint_callback, ModelCheckpoint)
        else None
    )


def _scores(metrics: Mapping[str, Any], stage: str) -> dict[str, float]:
    prefix = f"{stage}/"
    return {k[len(prefix) :]: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def _native_validation(
    trainer: pl.Trainer, module: SegmentationModule, datamodule: InMemoryDataModule, best: str
) -> dict[str, float]:
    """With a working resolution (``data.scale`` < 1), validation while fitting scored the
    resampled masks; this validates the best checkpoint at the images' own size (its
    probabilities resampled back before the argmax): the ``val/*`` scores metrics.json
    reports. Empty otherwise (the best epoch's scores are those already)."""
    if datamodule.scale == 1 or trainer.interrupted or not best:
        return {}
    results = trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    return dict(results[0]) if results else {}


def quiet_third_party() -> None:
    """Keeps the console to the run's own lines: Lightning's information lines (hardware
    listing, tips and advertisements, "Seed set to") and the known harmless warnings are
    dropped; Lightning's warnings and errors still show."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Trains as ``cfg`` says and returns the run summary (also written to ``metrics.json``)."""
    started = time.perf_counter()
    quiet_third_party()
    run_dir = Path(cfg.paths.output_dir).resolve()
    if not is_rank_zero():
        log.setLevel(logging.WARNING)  # one process (rank 0) tells what happens
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    try:
        experiment = build(cfg)
    except InputError:
        if cfg.get("ckpt_path") is None and is_rank_zero():
            discard_unstarted(run_dir)
        raise
    trainer, module = experiment.trainer, experiment.module
    parameters = sum(p.numel() for p in module.net.parameters())
    log.info("run folder: %s", run_dir)
    if cfg.get("ckpt_path") is not None:
        log.info("continuing from the checkpoint %s", cfg.ckpt_path)
    log.info(
        "model: %s, %.2f M parameters, channels per level %s",
        type(module.net).__name__,
        parameters / 1e6,
        getattr(module.net, "channels", "?"),
    )
    _log_batch_size(trainer, experiment.datamodule.batch_size)
    overrides = _job_overrides()
    for logger in trainer.loggers:
        # The job's own overrides also as top-level keys ("model.depth": 4), so a W&B table of
        # a sweep shows the swept keys as columns.
        logger.log_hyperparams({**experiment.config, **overrides})

    summary: dict[str, Any] = {"status": "running", "run_dir": str(run_dir)}
    try:
        with local_ranks(trainer, experiment.config):
            trainer.fit(module, datamodule=experiment.datamodule, ckpt_path=cfg.get("ckpt_path"))
            checkpoint = _checkpoint_callback(trainer)
            best_path = checkpoint.best_model_path if checkpoint else ""
            native_val = _native_validation(trainer, module, experiment.datamodule, best_path)
            test: dict[str, float] = {}
            if cfg.get("test") and not experiment.datamodule.has_split("test"):
                log.info("the data has no test split: skipping the test")
            elif cfg.get("test") and not trainer.interrupted:
                results = trainer.test(
                    module,
                    datamodule=experiment.datamodule,
                    ckpt_path=best_path or None,
                    verbose=False,  # _report says what matters, in the run's own lines
                )
                test = _scores(results[0] if results else {}, "test")
        picture = None
        if trainer.is_global_zero and best_path and not trainer.interrupted:
            picture = _write_predictions(run_dir, Path(best_path), experiment.datamodule)
        best = experiment.best_metrics
        if native_val:  # data.scale < 1: the best checkpoint's scores at the images' own size
            summary.update(
                data_scale=experiment.datamodule.scale,
                val_working_resolution=_scores(best.best, "val"),
            )
        summary.update(
            status="interrupted" if trainer.interrupted else "completed",
            optimized_metric={
                "name": cfg.optimized_metric,
                "mode": cfg.optimized_mode,
                "value": native_val.get(cfg.optimized_metric, best.best.get(cfg.optimized_metric)),
            },
            best_epoch=best.best_epoch,
            epochs_completed=trainer.current_epoch,
            global_step=trainer.global_step,
            best_checkpoint=str(Path(best_path).relative_to(run_dir)) if best_path else None,
            val=_scores(native_val or best.best, "val"),
            test=test,
            model={"class": type(module.net).__name__, "parameters": parameters},
            precision=str(trainer.precision),
            processes=trainer.world_size,
            predictions=str(picture.relative_to(run_dir)) if picture else None,
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:  # W&B run: rank 0
                logger.experiment.summary.update(
                    {
                        "best_epoch": best.best_epoch,
                        **{f"best/{k}": v for k, v in best.best.items()},
                    }
                )
    except (KeyboardInterrupt, SystemExit) as exc:
        if not trainer.interrupted:
            summary.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        # Ctrl-C or SIGTERM: Lightning stopped, CheckpointOnInterrupt saved last.ckpt.
        by_sigterm = isinstance(exc, SIGTERMException)
        summary.update(
            status="interrupted",
            error=f"stopped by {'SIGTERM' if by_sigterm else 'Ctrl-C'}",
            epochs_completed=trainer.current_epoch,
            global_step=trainer.global_step,
        )
        raise SystemExit(128 + (signal.SIGTERM if by_sigterm else signal.SIGINT)) from exc
    except BaseException as exc:
        summary.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        fault = storage_fault(exc)
        if fault is not None:
            raise RunFault(_storage_message(exc, fault, run_dir, trainer)) from exc
        log.exception("run failed: %s", run_dir)  # into train.log too, also for sweep jobs
        raise
    finally:
        summary["duration_s"] = round(time.perf_counter() - started, 1)
        if trainer.is_global_zero:
            try:
                write_summary(run_dir, summary)
            except OSError as exc:  # the disk that stopped the run may refuse this too
                log.error("could not write %s: %s", run_dir / "metrics.json", exc)
            _report(summary, finish_wandb(run_dir))
    return summary


def _storage_message(exc: BaseException, fault: OSError, run_dir: Path, trainer: pl.Trainer) -> str:
    """What a storage fault stopped, what is kept, and how to go on."""
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    kept = (
        f"the last complete checkpoint {last} is kept"
        if last.is_file()
        else "no checkpoint had been written yet"
    )
    reason = fault.strerror or str(fault)
    what = str(exc) if isinstance(exc, RunFault) else f"{fault.filename or run_dir}: {reason}"
    return (
        f"{what}; training stopped in epoch {trainer.current_epoch}; {kept}. Free space and "
        "run the same command to continue."
    )


def _write_predictions(
    run_dir: Path, checkpoint: Path, datamodule: InMemoryDataModule
) -> Path | None:
    """``predictions.png`` of the first validation images, predicted by ``checkpoint`` as
    ``predict.py`` would (the checkpoint alone, at each image's own size). A picture that
    cannot be made is reported and the run stays completed."""
    try:
        images, truths = datamodule.load_split("val")
        images, truths = list(images[:PICTURE_IMAGES]), list(truths[:PICTURE_IMAGES])
        trained = load_trained(checkpoint)
        predictions = [trained.probabilities(image).argmax(axis=0) for image in images]
        return write_prediction_picture(
            run_dir / "predictions.png", images, truths, predictions, trained.class_names
        )
    except Exception as exc:
        log.warning("could not write %s: %s", run_dir / "predictions.png", exc)
        return None


def _log_batch_size(trainer: pl.Trainer, batch_size: int) -> None:
    """``data.batch_size`` is per device; says what one optimizer step sees in all."""
    processes = trainer.num_devices * trainer.num_nodes
    accumulate = trainer.accumulate_grad_batches
    if processes * accumulate > 1:
        log.info(
            "batch size: %d per device x %d devices x %d accumulated = %d per optimizer step",
            batch_size,
            processes,
            accumulate,
            batch_size * processes * accumulate,
        )


def _report(summary: dict[str, Any], offline_runs: list[Path]) -> None:
    log.info("run %s: %s", summary["status"], summary["run_dir"])
    metric = summary.get("optimized_metric") or {}
    if metric.get("value") is not None:
        log.info(
            "best %s = %.4f (epoch %s)", metric["name"], metric["value"], summary["best_epoch"]
        )
    for stage in ("val", "test"):
        scores = summary.get(stage) or {}
        if scores:
            shown = ", ".join(
                f"{k}={v:.4f}"
                for k, v in scores.items()
                if k in ("loss", "dice", "iou", "acc", "hd95", "asd", "rand_error")
            )
            log.info("%s (best checkpoint): %s", stage, shown)
            per_class = ", ".join(
                f"{k.removeprefix('dice_')} {v:.4f}"
                for k, v in scores.items()
                if k.startswith("dice_") and math.isfinite(v)
            )
            if per_class:
                log.info("%s Dice per class: %s", stage, per_class)
    if summary.get("predictions"):
        log.info(
            "validation images, truth and prediction of the best checkpoint: %s",
            Path(summary["run_dir"]) / summary["predictions"],
        )
    for folder in offline_runs:
        log.info("W&B run saved offline; upload it with: wandb sync %s", folder)


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
        done = _continue_in_place(cfg, run_dir)
        if done is not None:
            return done["optimized_metric"]["value"]
    with input_errors_exit(full_traceback=os.environ.get(_DEBUG_ENV) == "1"):
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


def _continue_in_place(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
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


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: resume handling, then Hydra; config mistakes print one line."""
    os.environ.setdefault(_DEBUG_ENV, "1" if os.environ.get("HYDRA_FULL_ERROR") == "1" else "0")
    _run(sys.argv[1:] if argv is None else argv, os.environ[_DEBUG_ENV] == "1")


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
        ValueError: ``overrides`` ask for a sweep (``-m``); run sweeps with ``unet-lab train -m``.
    """
    args = [str(o) for o in overrides]
    if any(a in ("-m", "--multirun") for a in args):
        raise ValueError("fit() trains one run; run sweeps with `unet-lab train -m ...`")
    if output_dir is not None:
        args.append(f"hydra.run.dir={quoted(str(Path(output_dir).expanduser().resolve()))}")
    saved_argv = sys.argv
    saved_env = {name: os.environ.get(name) for name in ("HYDRA_FULL_ERROR", _DEBUG_ENV)}
    os.environ[_DEBUG_ENV] = "1"  # mistakes are raised to the caller, not exits
    try:
        run_dir = run_folder_argument(_run(args, full_traceback=True))
    finally:
        sys.argv = saved_argv
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
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
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's printer
    torch.set_float32_matmul_precision("high")
    quiet_third_party()  # before Hydra starts: its own imports warn too
    if GlobalHydra.instance().is_initialized():  # a notebook that composed a config before
        GlobalHydra.instance().clear()
    claimed = None
    with input_errors_exit(full_traceback=full_traceback):
        args = shared_run_folder_arguments(sweep_resume_arguments(resume_arguments(args), log_dir))
        args, claimed = claimed_folder_arguments(args, log_dir)
        sys.argv = [sys.argv[0], *args]
        try:
            _hydra_main()
        finally:
            release_if_unused(claimed)
    return args
