"""The LightningModule that trains, validates and tests any segmentation network."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric

from unet_lab.arguments import check_float, check_int
from unet_lab.data.regions import Regions
from unet_lab.data.scaling import probabilities_at
from unet_lab.errors import ConfigError
from unet_lab.inference.sliding_window import MAX_OVERLAP, MIN_TILE_SIZE, SlidingWindowPredictor
from unet_lab.inference.trained import output_probabilities
from unet_lab.losses import DeepSupervisionLoss
from unet_lab.metrics.multilabel import MultiLabelScores
from unet_lab.metrics.regions import boundary_rand_error
from unet_lab.metrics.scores import SegmentationScores, scores_from_confusion
from unet_lab.metrics.surface import SurfaceDistances
from unet_lab.models.blocks import center_crop

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[..., LRScheduler]
STAGES = ("train", "val", "test")
_UNPADDED_AT_NATIVE_SIZE = (
    "data.scale < 1 with a network whose output is smaller than its input "
    "(model.context=none) needs module.eval_tile_size, to score at the images' own size"
)


class SegmentationModule(pl.LightningModule):
    """Trains ``net`` with ``loss``; logs loss and :class:`SegmentationScores` per stage.

    Args:
        net: maps images ``(N, C_in, *spatial)`` to logits ``(N, num_classes, *spatial')``.
            Outputs smaller than the input (unpadded networks) are scored against the centre
            of the target. A net with ``deep_supervision`` > 0 returns a list in training; its
            loss is then wrapped in :class:`DeepSupervisionLoss`.
        loss: ``loss(logits, target) -> scalar``.
        optimizer: called with the parameters (a Hydra ``_partial_``).
        scheduler: called with the optimizer, plus ``total_steps`` if it accepts that argument;
            stepped every optimizer step. ``None`` keeps the learning rate constant.
        class_names: one per output channel; names the per-class scores (``val/dice_<name>``).
        ignore_index: target value left out of the scores (the loss has its own setting).
        include_background: count class 0 in the mean Dice/IoU (and surface distances).
        surface_distances: log HD95 and average surface distance at test time
            (:class:`SurfaceDistances`; CPU, image by image).
        eval_tile_size: validate and test through :class:`SlidingWindowPredictor` with tiles of
            this size (one side, or one per axis: ``[D, H, W]`` for volumes; ``eval_overlap``
            apart, Gaussian blending), as ``eval.py`` and
            ``predict.py`` predict: for large images, or unpadded networks on whole images.
            ``None``: the whole batch in one forward pass.
        boundary_class: for boundary maps (EM membranes): the class whose pixels separate
            regions; logs the Rand error of those regions (``val/rand_error``,
            ``test/rand_error``, mean over images; ``unet_lab.metrics.regions``).
        channels_last: keep weights and images in channels-last memory format (faster
            convolutions on CPUs and tensor-core GPUs, above all with bf16).
        compile: ``torch.compile`` the network (faster steps after a compilation of tens of
            seconds per new input shape; pays off in long runs with fixed patch sizes).
        ema_decay: keep an exponential moving average of the weights (``ema = decay * ema +
            (1 - decay) * weights`` after every training batch; buffers too) and validate and
            test with it; checkpoints store it as the network (``net.*``: what eval, predict
            and export use) and the trained weights apart (``ema_net.*``), so a resumed run
            continues both. None: no average.
        regions: overlapping regions (``data.regions``): the net has one output per region,
            trained with a sigmoid each against the regions of the label maps (the loss
            receives region targets ``(N, R, *spatial)``, see :class:`RegionLoss`); scores
            are per region (:class:`MultiLabelScores`), named by the region names.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = None,
        include_background: bool = False,
        surface_distances: bool = True,
        boundary_class: int | None = None,
        eval_tile_size: int | Sequence[int] | None = None,
        eval_overlap: float = 0.25,
        channels_last: bool = False,
        compile: bool = False,
        ema_decay: float | None = None,
        regions: Regions | None = None,
    ) -> None:
        super().__init__()
        self.regions = regions
        if regions is not None:
            if boundary_class is not None:
                raise ConfigError("module.boundary_class does not apply to data.regions")
            class_names = regions.names
        self.net = net
        self.ema_net: nn.Module | None = None
        if ema_decay is not None:
            self.ema_decay = check_float("ema_decay", ema_decay, 0.0, 1.0)
            self.ema_net = copy.deepcopy(net).requires_grad_(False)
        self.loss = DeepSupervisionLoss(loss) if getattr(net, "deep_supervision", 0) else loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.channels_last = channels_last
        # A single-output net (binary cross-entropy) still has two classes.
        num_classes = len(class_names or []) or max(2, int(getattr(net, "num_classes", 2)))
        self.class_names = list(class_names or [f"class{i}" for i in range(num_classes)])
        self.train_scores, self.val_scores, self.test_scores = (
            SegmentationScores(num_classes, self.class_names, ignore_index, include_background)
            if regions is None
            else MultiLabelScores(self.class_names)
            for _ in STAGES
        )
        self.test_surface = (
            SurfaceDistances(num_classes, self.class_names, ignore_index, include_background)
            if surface_distances and regions is None  # regions: eval.py scores their surfaces
            else None
        )
        # No NaN check (torchmetrics' reads a flag back each batch, making a GPU wait): a NaN
        # loss makes the epoch's mean NaN, as it should.
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.test_loss = MeanMetric(nan_strategy="disable")
        # The training loss of the epoch so far: its sum over images (on the device) and their
        # count, in a dict: updating it each step skips nn.Module's attribute bookkeeping.
        self._epoch_loss: dict[str, Any] = {"sum": None, "images": 0}
        self.ignore_index = ignore_index
        if boundary_class is not None:
            check_int("boundary_class", boundary_class, 0, num_classes - 1)
        self.boundary_class = boundary_class
        # Rand error per stage ("val", "test"), only for boundary maps.
        self.rand_errors = (
            None
            if boundary_class is None
            else nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})
        )
        # Checked here under the module's own names, also when no window is made.
        if eval_tile_size is not None:
            sides = [eval_tile_size] if isinstance(eval_tile_size, int) else eval_tile_size
            for side in sides:
                check_int("eval_tile_size", side, MIN_TILE_SIZE)
        check_float("eval_overlap", eval_overlap, 0.0, MAX_OVERLAP)
        self.window = (
            SlidingWindowPredictor(eval_tile_size, eval_overlap)
            if eval_tile_size is not None
            else None
        )
        if channels_last:
            spatial_dims = int(getattr(net, "spatial_dims", 2))
            memory_format = channels_last_format(spatial_dims + 2)
            self.net.to(memory_format=memory_format)  # type: ignore[call-overload]
            if self.ema_net is not None:
                self.ema_net.to(memory_format=memory_format)  # type: ignore[call-overload]
        if compile:
            self.net.compile()  # in place: weights and checkpoints keep their names

    def setup(self, stage: str) -> None:
        scale = float(getattr(getattr(self.trainer, "datamodule", None), "scale", 1.0))
        if scale != 1 and self.window is None and int(getattr(self.net, "output_margin", 0)):
            raise ConfigError(_UNPADDED_AT_NATIVE_SIZE)

    def epoch_metric_names(self) -> list[str]:
        """The scores logged at the end of each training and validation epoch (what
        ``optimized_metric`` and checkpoint monitors can name)."""
        classes = len(self.class_names)
        if self.regions is not None:
            scores = ["loss", *MultiLabelScores.score_names(self.class_names)]
        else:
            zeros = torch.zeros(classes, classes)
            scores = ["loss", *scores_from_confusion(zeros, self.class_names)]
        boundary = ["rand_error"] if self.rand_errors is not None else []
        return [f"train/{s}" for s in scores] + [f"val/{s}" for s in [*scores, *boundary]]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            image = image.contiguous(memory_format=channels_last_format(image.ndim))
        net = self.net if self.training or self.ema_net is None else self.ema_net
        return net(image)

    def _windowed_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities from the sliding window, image by image."""
        net = self.net if self.ema_net is None else self.ema_net
        probs = torch.stack([self.window(net, image) for image in images])  # type: ignore[misc]
        return probs.to(images.device)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema_net is None:
            return
        with torch.no_grad():
            averaged = self.ema_net.state_dict()
            for name, value in self.net.state_dict().items():
                if value.dtype.is_floating_point:
                    averaged[name].lerp_(value, 1 - self.ema_decay)
                else:  # counters (batch norm's batches seen)
                    averaged[name].copy_(value)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema_net is not None:  # the average is the network eval and predict load
            checkpoint["state_dict"] = _swap_prefixes(checkpoint["state_dict"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        if self.ema_net is not None and any(k.startswith("ema_net.") for k in state):
            checkpoint["state_dict"] = _swap_prefixes(state)  # back as trained

    def _as_logits(self, probs: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (logits of the same softmax); for a single-output net, the
        foreground logit."""
        if self.regions is not None:  # sigmoid probabilities: their logits
            return torch.logit(probs, eps=1e-7)
        log_probs = probs.clamp_min(1e-8).log()
        if int(getattr(self.net, "num_classes", 2)) == 1:
            return (log_probs[:, 1] - log_probs[:, 0])[:, None]
        return log_probs

    def _native_logits(self, images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """For images at the working resolution whose masks are at their own ``size``
        (``data.scale`` < 1, final validation and test): the network's class probabilities
        at the working resolution, resampled bilinearly to ``size``, as log-probabilities."""
        if self.window is not None:
            probs = self._windowed_probabilities(images)
        else:
            probs = output_probabilities(self(images), self.regions is not None)
            if probs.shape[2:] != images.shape[2:]:
                raise ConfigError(_UNPADDED_AT_NATIVE_SIZE)
        return self._as_logits(probabilities_at(probs, size))

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        native_size = batch["mask"].shape[1:]
        if stage != "train" and batch["image"].shape[2:] != native_size:
            # Images at the working resolution, masks at their own size: score there.
            outputs: torch.Tensor | list[torch.Tensor] = self._native_logits(
                batch["image"], native_size
            )
        elif stage != "train" and self.window is not None:
            outputs = self._as_logits(self._windowed_probabilities(batch["image"]))
        else:
            outputs = self(batch["image"])
        logits = outputs[0] if isinstance(outputs, list | tuple) else outputs
        target = center_crop(batch["mask"], logits.shape[2:])
        if self.regions is not None:
            target = self.regions.targets(target, self.ignore_index)
            preds = logits > 0
        else:
            preds = predicted_labels(logits)
        loss = self.loss(outputs, target)
        getattr(self, f"{stage}_scores").update(preds, target)
        if stage == "test" and self.test_surface is not None:
            spacing = batch.get("spacing")  # volumes: distances in mm
            if spacing is None:
                self.test_surface.update(preds, target)
            else:
                self.test_surface.update(preds, target, spacing=tuple(spacing[0].tolist()))
        if stage != "train" and self.rand_errors is not None and self.boundary_class is not None:
            rand_error = cast(MeanMetric, self.rand_errors[stage])
            for predicted, truth in zip(preds.cpu().numpy(), target.cpu().numpy(), strict=True):
                rand_error.update(
                    boundary_rand_error(predicted, truth, self.boundary_class, self.ignore_index)
                )
        batch_size = batch["image"].shape[0]
        if stage == "train":
            self._add_training_loss(loss, batch_size)
        else:
            # The epoch's mean over every image of all ranks (exact also when ranks hold
            # different numbers of images), logged at the epoch's end (_log_scores). The loss
            # counts once per image: with nan_strategy="disable" torchmetrics drops weights.
            mean_loss: MeanMetric = getattr(self, f"{stage}_loss")
            mean_loss.update(loss.detach().expand(batch_size))
        return {"loss": loss, "preds": preds, "target": target}

    def _add_training_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Adds a step's loss to the epoch's sum, kept on the device (its mean is logged at the
        epoch's end as ``train/loss_epoch``), and logs it as ``train/loss_step`` on the steps
        the loggers write (``trainer.log_every_n_steps``) only: Lightning's ``log`` costs about
        half a millisecond of Python per call (2-core AMD EPYC, Zen 5), and reading a value for
        the progress bar each step would make a GPU wait (the bars show ``train/loss_step``,
        read once a second)."""
        running = self._epoch_loss
        if running["sum"] is None:
            running["sum"] = loss.detach().float() * batch_size  # a new tensor, added to in place
        else:
            running["sum"].add_(loss.detach(), alpha=batch_size)
        running["images"] += batch_size
        trainer = self._trainer
        every = max(1, int(getattr(trainer, "log_every_n_steps", 1) or 1))
        if (self.global_step + 1) % every == 0:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False,
                     batch_size=batch_size)  # fmt: skip
        if trainer is not None and trainer.is_last_batch:  # before the epoch-end callbacks
            self._log_training_loss()

    def _log_training_loss(self) -> None:
        """Logs the mean training loss of the epoch so far as ``train/loss_epoch`` (under DDP
        the mean of the ranks' means) and starts a new sum."""
        running = self._epoch_loss
        if running["sum"] is not None:
            mean = running["sum"] / running["images"]
            self.log("train/loss_epoch", mean, on_step=False, on_epoch=True, sync_dist=True)
        running.update(sum=None, images=0)

    def on_train_epoch_start(self) -> None:
        self._epoch_loss.update(sum=None, images=0)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        return self._step(batch, "test")

    def _log_scores(self, stage: str) -> None:
        scores: SegmentationScores = getattr(self, f"{stage}_scores")
        values = {f"{stage}/{k}": v for k, v in scores.compute().items()}  # over all ranks
        if stage == "test" and self.test_surface is not None:
            values.update({f"test/{k}": v for k, v in self.test_surface.compute().items()})
            self.test_surface.reset()
        if stage != "train":
            mean_loss: MeanMetric = getattr(self, f"{stage}_loss")
            self.log(f"{stage}/loss", mean_loss.compute(), prog_bar=True)
            mean_loss.reset()
        if stage != "train" and self.rand_errors is not None:
            rand_error = cast(MeanMetric, self.rand_errors[stage])
            values[f"{stage}/rand_error"] = rand_error.compute()
            rand_error.reset()
        # Already over all ranks (metric states): no sync_dist (train.py silences Lightning's
        # advice to add it).
        self.log(f"{stage}/dice", values.pop(f"{stage}/dice"), prog_bar=True)
        self.log_dict(values)
        scores.reset()

    def on_train_epoch_end(self) -> None:
        self._log_training_loss()  # an epoch stopped before its last batch (max_steps)
        self._log_scores("train")

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.net.parameters())
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        if "total_steps" in inspect.signature(self.scheduler_factory).parameters:
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, **kwargs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def _swap_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    """``net.*`` as ``ema_net.*`` and the other way round."""
    swapped = {}
    for key, value in state.items():
        if key.startswith("net."):
            key = "ema_net." + key.removeprefix("net.")
        elif key.startswith("ema_net."):
            key = "net." + key.removeprefix("ema_net.")
        swapped[key] = value
    return swapped


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """Class per pixel: the argmax, or for one output channel (a foreground logit) logit > 0."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    if logits.is_contiguous(memory_format=channels_last_format(logits.ndim)):
        return logits.argmax(dim=1)
    # max(...).indices, the same first-on-ties labels: on a CPU, argmax over the channels of a
    # channels-first tensor takes 10x longer (22 ms against 1.8 ms for 16 x 4 x 128 x 128 on a
    # 2-core AMD EPYC, Zen 5; channels-last, argmax is the faster).
    return logits.max(dim=1).indices


def channels_last_format(ndim: int) -> torch.memory_format:
    """The channels-last format for tensors of ``ndim`` dimensions (4: images, 5: volumes)."""
    return torch.channels_last_3d if ndim == 5 else torch.channels_last
