"""A training step queues its work without waiting for it: nothing in the stack reads a value
back to the host each step (on a GPU that would stall the queue, one step at a time).

On a CUDA machine, ``torch.cuda.set_sync_debug_mode("error")`` makes every synchronisation
fail; on the CPU, the same steps are watched for the operations that synchronise on a GPU
(reading a scalar, ``nonzero`` behind boolean indexing, ``bincount``, ``unique``...)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchmetrics.classification import MulticlassConfusionMatrix

from tests.conftest import SMALL_UNET, TINY_DATA, compose_config
from unet_lab.metrics.scores import SegmentationScores
from unet_lab.training import build
from unet_lab.training.callbacks import StopOnNonFiniteLoss

# Operations that copy a value to the host (or need a count from the device to size their
# output) and therefore wait for the GPU.
SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "bincount", "unique", "_unique2",
           "unique_dim", "unique_consecutive", "repeat_interleave", "is_nonzero", "equal",
           "item", "masked_scatter", "histc"}  # fmt: skip
STEPS = 6  # the watched steps, after two free ones: none logs (log_every_n_steps is larger)


class SyncingOps(TorchDispatchMode):
    """Records the syncing operations dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name in SYNCING and not _in_optimizer():
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def _in_optimizer() -> bool:
    """Whether torch.optim is on the stack: its step counters are CPU tensors, also for
    parameters on a GPU (unless ``capturable``), so reading them does not synchronise."""
    frame = sys._getframe(1)
    while frame is not None:
        if f"torch{os.sep}optim{os.sep}" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


class WatchSteps(pl.Callback):
    """Watches from the start of step 2 to the start of step 2 + ``STEPS``: the batches'
    arrival on the device, the steps, every callback and the logging between them."""

    def __init__(self, on_cuda: bool) -> None:
        self.on_cuda = on_cuda
        self.mode = SyncingOps()
        self.active = False
        self.watched = 0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == 2:
            self._switch(True)
        elif trainer.global_step == 2 + STEPS and self.active:
            self._switch(False)
            self.watched = STEPS

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.active:
            self._switch(False)

    def _switch(self, on: bool) -> None:
        if self.on_cuda:
            torch.cuda.set_sync_debug_mode("error" if on else "default")
        elif on:
            self.mode.__enter__()
        else:
            self.mode.__exit__(None, None, None)
        self.active = on


def _watched_fit(tmp_path: Path, accelerator: str, extra: list[str]) -> WatchSteps:
    overrides = [*SMALL_UNET, *TINY_DATA, "logger=csv", "callbacks.validation_images=null",
                 "trainer.max_epochs=1", "test=false", f"trainer.accelerator={accelerator}",
                 "trainer.log_every_n_steps=50", "data.train_size=96", "data.num_workers=0",
                 "++trainer.limit_val_batches=1", "callbacks.progress.interval_s=3600",
                 *extra]  # fmt: skip
    experiment = build(compose_config(tmp_path, overrides))
    watch = WatchSteps(accelerator == "gpu")
    experiment.trainer.callbacks.append(watch)
    experiment.trainer.fit(experiment.module, datamodule=experiment.datamodule)
    assert watch.watched == STEPS
    return watch


class WatchValidation(pl.Callback):
    """Watches validation from the start of its second batch to the end of its last: the
    batches' arrival, the steps (scores, loss) and the callbacks between them."""

    def __init__(self) -> None:
        self.mode = SyncingOps()
        self.watched = 0

    def on_validation_batch_start(
        self, trainer: pl.Trainer, module: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if batch_idx == 1:
            self.mode.__enter__()

    def on_validation_batch_end(
        self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int,
        *args: Any,
    ) -> None:  # fmt: skip
        if batch_idx >= 1:
            self.watched += 1
        if batch_idx == trainer.num_val_batches[0] - 1:
            self.mode.__exit__(None, None, None)


def test_validation_batches_dispatch_no_syncing_operation(tmp_path: Path) -> None:
    overrides = [*SMALL_UNET, *TINY_DATA, "logger=csv", "callbacks.validation_images=null",
                 "data.val_size=8", "data.batch_size=2", "data.num_workers=0",
                 "callbacks.progress.interval_s=3600"]  # fmt: skip
    experiment = build(compose_config(tmp_path, overrides))
    watch = WatchValidation()
    experiment.trainer.callbacks.append(watch)
    experiment.trainer.validate(experiment.module, datamodule=experiment.datamodule)
    assert watch.watched == 3
    assert watch.mode.seen == []


@pytest.mark.parametrize("augmentation", ["loader", "on_device"])
def test_training_steps_dispatch_no_syncing_operation(tmp_path: Path, augmentation: str) -> None:
    extra = ["augmentation=medium"]
    if augmentation == "on_device":
        extra.append("augmentation.on_device=true")
    watch = _watched_fit(tmp_path, "cpu", extra)
    assert watch.mode.seen == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_a_training_step_on_cuda_does_not_synchronise(tmp_path: Path, precision: str) -> None:
    # set_sync_debug_mode("error") raises inside the step if anything synchronises.
    _watched_fit(tmp_path, "gpu", [f"trainer.precision={precision}",
                                   "augmentation.on_device=true"])  # fmt: skip


@pytest.mark.parametrize("ignore_index", [None, 255, 0])
@pytest.mark.parametrize("shape", [(3, 17, 19), (2, 5, 6, 7)])
def test_the_confusion_matrix_matches_torchmetrics(
    ignore_index: int | None, shape: tuple[int, ...]
) -> None:
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, shape, generator=generator)
    if ignore_index == 255:
        target[torch.rand(shape, generator=generator) < 0.2] = 255
    preds = torch.randint(0, 4, shape, generator=generator)
    ours = SegmentationScores(4, ignore_index=ignore_index)
    reference = MulticlassConfusionMatrix(4, ignore_index=ignore_index)
    for _ in range(2):  # accumulates
        ours.update(preds, target)
        reference.update(preds, target)
    assert torch.equal(ours.confmat, reference.confmat)


class _Trainer:
    current_epoch = 0

    def __init__(self) -> None:
        self.global_step = 0


def test_a_non_finite_loss_stops_the_run_at_the_next_check() -> None:
    callback, trainer = StopOnNonFiniteLoss(check_every_n_steps=3), _Trainer()
    losses = [0.5, float("nan"), 0.4, 0.3]
    with pytest.raises(FloatingPointError, match="between steps 0 and 3"):
        for loss in losses:
            trainer.global_step += 1
            callback.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, 0)  # type: ignore[arg-type]
    assert trainer.global_step == 3  # found at the check of step 3, not before


def test_finite_losses_and_the_epoch_end_check() -> None:
    callback, trainer = StopOnNonFiniteLoss(check_every_n_steps=100), _Trainer()
    for loss in (0.5, 0.4):
        trainer.global_step += 1
        callback.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, 0)  # type: ignore[arg-type]
    callback.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    trainer.global_step += 1
    callback.on_train_batch_end(trainer, None, {"loss": torch.tensor(float("inf"))}, None, 0)  # type: ignore[arg-type]
    with pytest.raises(FloatingPointError, match="between steps 2 and 3"):
        callback.on_validation_start(trainer, None)  # type: ignore[arg-type]
