"""Callbacks: the run's record (best validation scores, config in checkpoints) and W&B images."""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from unet_lab.arguments import check_choice, check_int
from unet_lab.data.augmentation import as_tuples
from unet_lab.data.augmentation import random_state as augmentation_random_state
from unet_lab.data.augmentation import set_random_state as set_augmentation_random_state
from unet_lab.data.volumes.patches import busiest_slice
from unet_lab.models.blocks import center_crop
from unet_lab.runs.checkpoints import CONFIG_KEY, DATA_KEY
from unet_lab.training.csv_logger import ResumableCSVLogger

log = logging.getLogger(__name__)


class BestMetrics(pl.Callback):
    """Keeps every ``val/*`` score of the epoch where ``monitor`` was best (as ModelCheckpoint
    judges it), so the run summary reports the scores of the best checkpoint without another
    validation pass. Its state travels in checkpoints, so a resumed run remembers it."""

    def __init__(self, monitor: str, mode: str = "max") -> None:
        self.monitor = monitor
        self.mode = check_choice("mode", mode, ("max", "min"))
        self.best: dict[str, float] = {}
        self.best_epoch: int | None = None

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_epoch is None:
            return True
        best = self.best[self.monitor]
        return value > best if self.mode == "max" else value < best

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        if trainer.state.fn != "fit":  # a validation after fitting (at native size) picks none
            return
        if self._improves(float(trainer.callback_metrics[self.monitor])):
            self.best = {
                key: float(value)
                for key, value in trainer.callback_metrics.items()
                if key.startswith("val/")
            }
            self.best_epoch = trainer.current_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = dict(state_dict["best"])
        self.best_epoch = state_dict["best_epoch"]


class ElapsedTime(pl.Callback):
    """Logs ``time/elapsed_s``, the wall time since this process started fitting, with every
    validation, so scores can be plotted against time (time to a given quality)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            pl_module.log("time/elapsed_s", time.perf_counter() - self.started)


class CheckpointOnInterrupt(pl.Callback):
    """On Ctrl-C (SIGINT) or SIGTERM (what SLURM sends before preempting or at the time
    limit) during fitting: writes ``last.ckpt`` with the state reached, so the run resumes
    from there, not from the last epoch end. Lightning stops at the end of the current step
    on SIGTERM."""

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return
        checkpoint = trainer.checkpoint_callback
        if trainer.state.fn != "fit" or not isinstance(checkpoint, ModelCheckpoint):
            return
        if checkpoint.dirpath is None:
            return
        path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}.ckpt"
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            log.warning(
                "stopped by %s at epoch %d, step %d: saved %s, from which the run continues "
                "(ckpt_path=%s, or resume=auto in the same run folder)",
                "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C",
                trainer.current_epoch,
                trainer.global_step,
                path,
                path,
            )


class RandomStateInCheckpoint(pl.Callback):
    """Stores the random generators (torch, CUDA, numpy, Python, and the training
    augmentation's) in checkpoints and restores them on resume, so a run resumed from an epoch
    boundary draws the same shuffles and augmentations as one that was never stopped."""

    KEY = "unet_lab_random_state"

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        name, keys, position, has_gauss, gauss = cast(tuple, np.random.get_state())
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        transform = _train_transform(trainer)
        if hasattr(transform, "state_dict"):  # a volume pipeline keeps its own generator
            state["augmentation"] = transform.state_dict()
        elif transform is not None:
            state["augmentation"] = augmentation_random_state(transform)
        checkpoint[self.KEY] = state

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.pending = checkpoint.get(self.KEY)  # None: an older checkpoint, left as seeded
        self._restore(trainer)

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The sanity-check validation drew from the generators (each DataLoader iterator takes
        # a seed): restore again before the training loop makes its first iterator.
        self._restore(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.pending = None

    def _restore(self, trainer: pl.Trainer) -> None:
        state = self.pending
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        name, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(as_tuples(state["python"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        transform = _train_transform(trainer)
        # Rank 0's draws: the data module gives the other DDP ranks streams of their own.
        if transform is None or "augmentation" not in state or trainer.global_rank:
            return
        if hasattr(transform, "load_state_dict"):
            transform.load_state_dict(state["augmentation"])
        else:
            set_augmentation_random_state(transform, state["augmentation"])


def _train_transform(trainer: pl.Trainer) -> Any:
    """The training augmentation pipeline of the trainer's data module, if it has one."""
    return getattr(getattr(trainer, "datamodule", None), "train_transform", None)


class LogsFromCheckpoint(pl.Callback):
    """Keeps the CSV log in step with the checkpoint a run resumes from, so that a kill loses no
    row and doubles none:

    - at the end of a training epoch Lightning writes the checkpoint before it logs the epoch's
      training scores; those scores are kept in the checkpoint, and a resumed run whose CSV
      lacks them (killed in between) logs them first;
    - rows logged after the checkpoint (part of an epoch the resumed run does again) are
      dropped, so every step has its rows once.
    """

    KEY = "unet_lab_epoch_row"

    def __init__(self) -> None:
        self.saved_row: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not trainer.fit_loop.epoch_loop.done:  # mid-epoch (an interrupt): no epoch row yet
            return
        metrics = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith("train/") and not key.endswith("_step")
        }
        if "train/loss_epoch" in metrics:
            metrics.pop("train/loss", None)  # the same value, logged as train/loss_epoch
        checkpoint[self.KEY] = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step - 1,  # Lightning logs epoch rows at the last step
            "metrics": metrics,
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.saved_row = checkpoint.get(self.KEY)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is None or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if not isinstance(logger, ResumableCSVLogger):
                continue
            dropped = logger.forget_from_step(trainer.global_step)
            if dropped:
                log.info("resume: dropped %d CSV rows logged after the checkpoint", dropped)
            row = self.saved_row
            if row and row["metrics"] and not logger.has_epoch_row(row["epoch"]):
                logger.log_metrics({**row["metrics"], "epoch": row["epoch"]}, row["step"])
                logger.save()
                log.info("resume: epoch %d's training row logged from the checkpoint", row["epoch"])


class StopOnNonFiniteLoss(pl.Callback):
    """Stops a run whose training loss became NaN or infinite (it diverged), with an error that
    says when, instead of training on garbage; the run is then recorded as failed.

    The losses are summed on their device (a sum is finite only if every loss was: one
    operation per step) and the sum is read back every ``check_every_n_steps`` steps, before
    each validation and at each epoch's end (so no checkpoint holds diverged weights): reading
    a value every step would make a GPU wait for each step to finish before the next is queued.

    Args:
        check_every_n_steps: steps between reads of the sum (a diverged run trains at most
            this many steps more).
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_int("check_every_n_steps", check_every_n_steps, 1)
        self._sum: torch.Tensor | None = None  # of the losses since the last check
        self._unchecked = 0  # steps since the last check
        self._checked_step = 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        if self._sum is None:
            self._sum = loss.detach().float().clone()  # its own tensor, added to in place
        else:
            self._sum.add_(loss.detach())
        self._unchecked += 1
        if self._unchecked >= self.check_every_n_steps:
            self._check(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        total, self._sum, self._unchecked = self._sum, None, 0
        since, self._checked_step = self._checked_step, trainer.global_step
        if total is not None and not bool(torch.isfinite(total).all()):
            raise FloatingPointError(
                f"training loss became NaN or infinite between steps {since} and "
                f"{trainer.global_step} (epoch {trainer.current_epoch}): the run diverged "
                "(lower optimizer.lr?)"
            )


class ConfigInCheckpoint(pl.Callback):
    """Stores the run's resolved config (:data:`~unet_lab.runs.checkpoints.CONFIG_KEY`) and what
    the data decided (:data:`~unet_lab.runs.checkpoints.DATA_KEY`: input and output channels,
    class names, normalization with its statistics, working resolution) in every checkpoint, so
    evaluation and prediction need only the checkpoint path."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None:
            checkpoint[DATA_KEY] = {
                "in_channels": int(datamodule.in_channels),
                "out_channels": int(getattr(pl_module.net, "num_classes", 0))
                or len(datamodule.class_names),
                "class_names": list(datamodule.class_names),
                "normalization": datamodule.normalizer.state_dict(),
                "scale": float(getattr(datamodule, "scale", 1.0)),  # the working resolution
                "regions": (
                    datamodule.regions.state_dict()
                    if getattr(datamodule, "regions", None) is not None
                    else None
                ),
                # Volumes: the preprocessing that new cases need (spacing, normalization, ...).
                **getattr(datamodule, "inference_facts", dict)(),
            }


class ValidationImages(pl.Callback):
    """Logs a few validation images with predicted and true masks to W&B (when it is a logger),
    every ``every_n_epochs`` epochs, from the first validation batch."""

    def __init__(self, num_images: int = 4, every_n_epochs: int = 1) -> None:
        self.num_images = check_int("num_images", num_images, 0)
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs, 1)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if (
            not wandb_loggers
            or batch_idx != 0
            or dataloader_idx != 0
            or trainer.sanity_checking
            or batch["image"].shape[-2:] != batch["mask"].shape[-2:]  # masks at native size
            or self.num_images == 0
            or trainer.current_epoch % self.every_n_epochs != 0
            or not trainer.is_global_zero
        ):
            return
        count = min(self.num_images, batch["image"].shape[0])
        labels = dict(enumerate(getattr(pl_module, "class_names", [])))
        target, predicted = outputs["target"], outputs["preds"]
        regions = getattr(pl_module, "regions", None)
        if regions is not None:  # region masks (N, R, ...): painted into label maps
            paint = [regions.label_map(m) for m in (predicted > 0.5).cpu().numpy()]
            truth_paint = [regions.label_map(m) for m in (target > 0.5).cpu().numpy()]
            predicted, target = (
                torch.from_numpy(np.stack(paint)),
                torch.from_numpy(np.stack(truth_paint)),
            )
            labels = regions.legend()
        images, truths, preds = [], [], []
        for i in range(count):
            image = center_crop(batch["image"][i], target.shape[1:])
            truth, pred = target[i], predicted[i]
            if truth.ndim == 3:  # a volume: its slice with the most foreground
                depth = busiest_slice(truth.cpu().numpy())
                image, truth, pred = image[:, depth], truth[depth], pred[depth]
            images.append(_display_image(image))
            truths.append(truth)
            preds.append(pred)
        masks = [
            {
                "prediction": {"mask_data": _numpy(pred), "class_labels": labels},
                "ground_truth": {"mask_data": _numpy(truth), "class_labels": labels},
            }
            for pred, truth in zip(preds, truths, strict=True)
        ]
        for logger in wandb_loggers:
            logger.log_image("val/examples", images, step=trainer.global_step, masks=masks)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.uint8)


def _display_image(image: torch.Tensor) -> np.ndarray:
    """A normalized CHW image as HWC uint8, stretched to its own range."""
    array = image.detach().float().cpu().numpy()
    if array.shape[0] not in (1, 3):  # show the first channel of other channel counts
        array = array[:1]
    low, high = array.min(), array.max()
    array = (array - low) / max(high - low, 1e-6)
    return (array.transpose(1, 2, 0) * 255).round().astype(np.uint8)
