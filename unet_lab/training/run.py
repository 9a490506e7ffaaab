"""One training run as a list of steps: build -> fit -> validate at native size -> test ->
predictions.png -> summary (``metrics.json``), with one place that turns the outcome
(completed, interrupted, failed) into the summary.

:func:`train` takes a composed config; ``unet-lab train`` composes it (see
:mod:`unet_lab.training.app`).
"""

from __future__ import annotations

import json
import logging
import signal
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from unet_lab.data.datamodule import InMemoryDataModule
from unet_lab.errors import InputError, RunFault, first_line, storage_fault
from unet_lab.runs.folders import CHECKPOINT_DIR, SPLIT_FILE, discard_unstarted
from unet_lab.runs.summary import SUMMARY_FILE, report, write_run_summary
from unet_lab.training.build import Experiment, build
from unet_lab.training.launcher import is_rank_zero, local_ranks
from unet_lab.training.module import SegmentationModule
from unet_lab.training.run_picture import write_run_picture
from unet_lab.training.wandb_logger import finish_wandb

log = logging.getLogger("unet_lab")
# Third-party warnings that say nothing about the user's run (Lightning 2.6 with torch 2.13).
_KNOWN_HARMLESS_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Precision .* is not supported by the model summary",
    # Our epoch scores are computed from metric states summed over all ranks already.
    r"It is recommended to use `self.log\(.*sync_dist=True\)` when logging on epoch level",
)


@dataclass
class Results:
    """What the steps of a run produced (empty where a step was not reached)."""

    best_checkpoint: str = ""
    native_val: dict[str, float] = field(default_factory=dict)  # data.scale < 1 only
    test: dict[str, float] = field(default_factory=dict)
    picture: Path | None = None


@dataclass
class Outcome:
    """How a run ended: ``completed``, ``interrupted`` (Ctrl-C, SIGTERM) or ``failed``."""

    status: str
    error: str | None = None
    signum: int | None = None  # the signal that stopped an interrupted run

    @classmethod
    def of(cls, trainer: pl.Trainer, exc: BaseException | None) -> Outcome:
        if exc is None:
            return cls("interrupted" if trainer.interrupted else "completed")
        if isinstance(exc, KeyboardInterrupt | SystemExit) and trainer.interrupted:
            # Ctrl-C or SIGTERM: Lightning stopped, CheckpointOnInterrupt saved last.ckpt.
            by_sigterm = isinstance(exc, SIGTERMException)
            return cls(
                "interrupted",
                f"stopped by {'SIGTERM' if by_sigterm else 'Ctrl-C'}",
                signal.SIGTERM if by_sigterm else signal.SIGINT,
            )
        return cls("failed", f"{type(exc).__name__}: {exc}")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Trains as ``cfg`` (a composed training config) says, in ``cfg.paths.output_dir``.

    Returns:
        The run summary, also written to ``metrics.json`` (rank 0).

    Raises:
        InputError: a config key or data file is wrong (named, before anything is trained), or
            the checkpoint to resume from is damaged (named).
        RunFault: the storage stopped the run (full disk); the message says what is kept.
        SystemExit: 130 or 143 after Ctrl-C or SIGTERM (``last.ckpt`` holds the state reached).
    """
    started = time.perf_counter()
    quiet_third_party()
    run_dir = Path(cfg.paths.output_dir).resolve()
    if not is_rank_zero():
        log.setLevel(logging.WARNING)  # one process (rank 0) tells what happens
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    experiment = _build(cfg, run_dir)
    _announce(experiment, cfg, run_dir)
    trainer = experiment.trainer
    results, failure = Results(), None
    try:
        if is_rank_zero():  # every rank has the same split (same seed)
            _write_split(run_dir, experiment.datamodule)
        with local_ranks(trainer, experiment.config, run_rank):
            results = _fit_and_test(experiment, cfg)
        if trainer.is_global_zero and results.best_checkpoint and not trainer.interrupted:
            results.picture = write_run_picture(
                run_dir, Path(results.best_checkpoint), experiment.datamodule
            )
        if trainer.is_global_zero:
            _update_wandb_summary(experiment)
    except BaseException as exc:
        failure = exc
        if isinstance(exc, Exception) and storage_fault(exc) is None:
            log.exception("run failed: %s", run_dir)  # into train.log too, also for sweep jobs
    outcome = Outcome.of(trainer, failure)
    summary = run_summary(experiment, cfg, run_dir, results, outcome)
    summary["duration_s"] = round(time.perf_counter() - started, 1)
    if trainer.is_global_zero:
        _record(run_dir, summary)
    if failure is not None:
        _raise_for(failure, outcome, trainer, run_dir)
    return summary


def run_rank(config_file: str) -> None:
    """A local DDP rank > 0: trains the resolved config it was given (rank 0 logs and writes).
    :func:`~unet_lab.training.launcher.local_ranks` starts it in a new process."""
    logging.basicConfig(level=logging.WARNING)
    train(OmegaConf.load(config_file))  # type: ignore[arg-type]


def _build(cfg: DictConfig, run_dir: Path) -> Experiment:
    """:func:`build`; a config or data mistake also removes the new run's folder (nothing
    was trained in it)."""
    try:
        return build(cfg)
    except InputError:
        if cfg.get("ckpt_path") is None and is_rank_zero():
            discard_unstarted(run_dir)
        raise


def _announce(experiment: Experiment, cfg: DictConfig, run_dir: Path) -> None:
    """The run's first lines, and its hyperparameters to every logger."""
    trainer, net = experiment.trainer, experiment.module.net
    log.info("run folder: %s", run_dir)
    if cfg.get("ckpt_path") is not None:
        log.info("continuing from the checkpoint %s", cfg.ckpt_path)
    log.info(
        "model: %s, %.2f M parameters, channels per level %s",
        type(net).__name__,
        sum(p.numel() for p in net.parameters()) / 1e6,
        getattr(net, "channels", "?"),
    )
    _log_batch_size(trainer, experiment.datamodule.batch_size)
    overrides = _job_overrides()
    for logger in trainer.loggers:
        # The job's own overrides also as top-level keys ("model.depth": 4), so a W&B table of
        # a sweep shows the swept keys as columns.
        logger.log_hyperparams({**experiment.config, **overrides})


def _fit_and_test(experiment: Experiment, cfg: DictConfig) -> Results:
    """Fits (from ``cfg.ckpt_path`` when resuming), validates the best checkpoint at native
    size where training used a working resolution, and tests it when asked and possible."""
    trainer, module, datamodule = experiment.trainer, experiment.module, experiment.datamodule
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    checkpoint = _checkpoint_callback(trainer)
    results = Results(best_checkpoint=checkpoint.best_model_path if checkpoint else "")
    results.native_val = _native_validation(trainer, module, datamodule, results.best_checkpoint)
    if cfg.get("test") and not datamodule.has_split("test"):
        log.info("the data has no test split: skipping the test")
    elif cfg.get("test") and not trainer.interrupted:
        scores = trainer.test(
            module,
            datamodule=datamodule,
            ckpt_path=results.best_checkpoint or None,
            verbose=False,  # report() says what matters, in the run's own lines
        )
        results.test = _scores(scores[0] if scores else {}, "test")
    return results


def run_summary(
    experiment: Experiment, cfg: DictConfig, run_dir: Path, results: Results, outcome: Outcome
) -> dict[str, Any]:
    """The content of ``metrics.json`` for a run that ended with ``outcome``."""
    trainer, best = experiment.trainer, experiment.best_metrics
    summary: dict[str, Any] = {"status": outcome.status, "run_dir": str(run_dir)}
    if outcome.error is not None:
        summary["error"] = outcome.error
    summary.update(epochs_completed=trainer.current_epoch, global_step=trainer.global_step)
    if outcome.status == "failed" or outcome.signum is not None:
        return summary
    if results.native_val:  # data.scale < 1: the best checkpoint's scores at the images' size
        summary.update(
            data_scale=experiment.datamodule.scale,
            val_working_resolution=_scores(best.best, "val"),
        )
    best_path = results.best_checkpoint
    summary.update(
        optimized_metric={
            "name": cfg.optimized_metric,
            "mode": cfg.optimized_mode,
            "value": results.native_val.get(
                cfg.optimized_metric, best.best.get(cfg.optimized_metric)
            ),
        },
        best_epoch=best.best_epoch,
        best_checkpoint=_within(run_dir, best_path) if best_path else None,
        val=_scores(results.native_val or best.best, "val"),
        test=results.test,
        model={
            "class": type(experiment.module.net).__name__,
            "parameters": sum(p.numel() for p in experiment.module.net.parameters()),
        },
        precision=str(trainer.precision),
        processes=trainer.world_size,
        predictions=_within(run_dir, results.picture) if results.picture else None,
    )
    return summary


def _within(run_dir: Path, path: str | Path) -> str:
    """``path`` relative to the run folder when it lies inside it, else as it is."""
    path = Path(path)
    return str(path.relative_to(run_dir) if path.is_relative_to(run_dir) else path)


def _record(run_dir: Path, summary: dict[str, Any]) -> None:
    """Writes ``metrics.json``, closes W&B and reports the run's final lines."""
    try:
        write_run_summary(run_dir, summary)
    except OSError as exc:  # the disk that stopped the run may refuse this too
        log.error("could not write %s: %s", run_dir / SUMMARY_FILE, exc)
    report(summary, finish_wandb(run_dir))


def _raise_for(
    failure: BaseException, outcome: Outcome, trainer: pl.Trainer, run_dir: Path
) -> NoReturn:
    """Raises what a run that did not complete ends with: an exit code for a stop by signal,
    a :class:`RunFault` naming the file for a storage fault, else the original error."""
    if outcome.signum is not None:
        raise SystemExit(128 + outcome.signum) from failure
    fault = storage_fault(failure)
    if fault is not None:
        raise RunFault(_storage_message(failure, fault, run_dir, trainer)) from failure
    raise failure


def _update_wandb_summary(experiment: Experiment) -> None:
    """The best epoch and its scores into the W&B run's summary (rank 0's run); a W&B that
    refuses is reported, and the run stays completed."""
    best = experiment.best_metrics
    for logger in experiment.trainer.loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment.summary.update(
                    {
                        "best_epoch": best.best_epoch,
                        **{f"best/{k}": v for k, v in best.best.items()},
                    }
                )
            except Exception as exc:
                log.warning("W&B: could not write the run's summary: %s", first_line(exc))


def _write_split(run_dir: Path, datamodule: InMemoryDataModule) -> None:
    """``split.json``: which files the data module put in which split (folder data)."""
    record = datamodule.split_record()
    if record is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / SPLIT_FILE).write_text(json.dumps(record, indent=2) + "\n")


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
        "start the same run again to continue it."
    )


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
