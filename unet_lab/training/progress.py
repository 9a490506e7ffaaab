"""Training progress for people: Lightning's rich bar in a terminal, plain log lines elsewhere.

A redirected run (``python train.py > log``, nohup, SLURM) gets no progress from a bar, which
draws only on a terminal; :class:`PlainProgress` writes a line at a steady cadence instead, so a
log file shows how far the run is and when it will end.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from pytorch_lightning.utilities.imports import _RICH_AVAILABLE

from unet_lab.arguments import check_choice, check_float

log = logging.getLogger(__name__)

STYLES = ("auto", "bar", "lines")


def progress(style: str = "auto", interval_s: float = 30.0) -> ProgressBar:
    """The progress display of a run.

    Args:
        style: ``bar`` (Lightning's rich bar, or tqdm without rich), ``lines`` (plain log lines,
            :class:`PlainProgress`), or ``auto``: the bar when standard output is a terminal,
            lines otherwise.
        interval_s: seconds between two plain lines (they are also written at every epoch end).

    Returns:
        A Lightning progress-bar callback, which replaces the trainer's default bar.
    """
    check_choice("style", style, STYLES)
    check_float("interval_s", interval_s, 0.0)
    if style == "auto":
        style = "bar" if sys.stdout.isatty() else "lines"
    if style == "lines":
        return PlainProgress(interval_s)
    return RichBar() if _RICH_AVAILABLE else TqdmBar()


class _LossEverySecond:
    """Adds the training loss to a Lightning bar's metrics, read back from the device at most
    once a second (each step, the read would make a GPU wait for the step to finish)."""

    _loss: str | None = None
    _read_at = -math.inf

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        now = time.perf_counter()
        if trainer.training and now - self._read_at >= 1.0:
            loss = trainer.callback_metrics.get("train/loss_step")
            self._loss = None if loss is None else f"{float(loss):.4f}"
            self._read_at = now
        if self._loss is not None:
            metrics["train/loss"] = self._loss
        return metrics


class RichBar(_LossEverySecond, RichProgressBar):
    """Lightning's rich progress bar, with the training loss."""


class TqdmBar(_LossEverySecond, TQDMProgressBar):
    """Lightning's tqdm progress bar (without rich), with the training loss."""


def _clock(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class PlainProgress(ProgressBar):
    """Writes one log line (logger ``unet_lab.training.progress``, so it also lands in the run's
    ``train.log``) every ``interval_s`` seconds of training or validation and at every epoch end:
    epoch, optimizer step of the total, training loss, training images per second (validation
    time left out), elapsed time, the estimated time to the end of fitting and the latest
    validation scores. Only rank 0 writes."""

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        self.interval_s = check_float("interval_s", interval_s, 0.0)
        self._enabled = True
        self._fit_started = 0.0
        self._first_step = 0
        self._last_line = 0.0
        self._since_line = _Throughput()  # training images since the last line
        self._since_epoch = _Throughput()  # and since the epoch began
        self._validation_started: float | None = None

    # Lightning disables the bar on ranks other than 0 and with enable_progress_bar=False.
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_started = self._last_line = time.perf_counter()
        self._first_step = trainer.global_step  # a resumed run starts past 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._since_epoch.restart()
        self._since_line.restart()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        for window in (self._since_line, self._since_epoch):
            window.images += _batch_size(batch)
        if time.perf_counter() - self._last_line >= self.interval_s:
            self._write(trainer, self._training_line(trainer))

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validation_started = time.perf_counter()

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or time.perf_counter() - self._last_line < self.interval_s:
            return
        total = _total(trainer.num_val_batches, dataloader_idx)
        self._write(
            trainer,
            f"{_epoch(trainer)}  validating batch {batch_idx + 1}/{total}  "
            f"elapsed {_clock(self._elapsed())}",
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._validation_started is not None:
            seconds = time.perf_counter() - self._validation_started
            for window in (self._since_line, self._since_epoch):
                window.validation_s += seconds
            self._validation_started = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, self._training_line(trainer, epoch_end=True))

    def _elapsed(self) -> float:
        return time.perf_counter() - self._fit_started

    def _training_line(self, trainer: pl.Trainer, epoch_end: bool = False) -> str:
        step, total = trainer.global_step, trainer.estimated_stepping_batches
        done = step - self._first_step
        remaining = (total - step) * self._elapsed() / done if done > 0 else math.inf
        window = self._since_epoch if epoch_end else self._since_line
        metrics = trainer.callback_metrics
        parts = [
            _epoch(trainer) + (" done" if epoch_end else ""),
            f"step {step}/{total if math.isfinite(total) else '?'}",
        ]
        loss = metrics.get("train/loss_epoch" if epoch_end else "train/loss_step")
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        if window.images:
            parts.append(f"{window.images_per_s():.1f} img/s")
        parts += [f"elapsed {_clock(self._elapsed())}", f"ETA {_clock(remaining)}"]
        validation = [
            f"{name} {float(value):.4f}"
            for name, value in metrics.items()
            if name in ("val/loss", "val/dice", "val/iou")
        ]
        if validation:
            parts.append(" ".join(validation))
        self._since_line.restart()
        return "  ".join(parts)

    def _write(self, trainer: pl.Trainer, line: str) -> None:
        self._last_line = time.perf_counter()
        if self._enabled and trainer.is_global_zero:
            log.info(line)


class _Throughput:
    """Training images over training time (validation time left out) since a restart."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.started = time.perf_counter()
        self.images = 0
        self.validation_s = 0.0

    def images_per_s(self) -> float:
        seconds = time.perf_counter() - self.started - self.validation_s
        return self.images / max(seconds, 1e-9)


def _epoch(trainer: pl.Trainer) -> str:
    """``epoch 3/12`` (counting from 1), or ``epoch 3`` when training is limited by steps."""
    epochs = trainer.max_epochs
    return f"epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs and epochs > 0 else "")


def _batch_size(batch: Any) -> int:
    image = batch.get("image") if isinstance(batch, dict) else None
    return int(image.shape[0]) if image is not None else 0


def _total(batches: Any, index: int) -> Any:
    """The number of batches of one dataloader (Lightning keeps a list, one per loader)."""
    if isinstance(batches, list):
        return batches[index] if index < len(batches) else "?"
    return batches
