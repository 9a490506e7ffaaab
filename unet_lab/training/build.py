"""Building a run from its composed config: data module, network, LightningModule,
callbacks, loggers and trainer, each from its config group, with errors that name the key."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import albumentations as A
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ProgressBar
from torch import nn

from unet_lab.config.compose import instantiate, instantiate_named, optional
from unet_lab.config.schema import check_config, check_fit, check_optimizer
from unet_lab.data.batch_augmentation import BatchAugmentation
from unet_lab.data.datamodule import InMemoryDataModule
from unet_lab.data.files import files_hash
from unet_lab.errors import ConfigError
from unet_lab.runs.checkpoints import AtomicCheckpointIO
from unet_lab.training.callback_group import grouped
from unet_lab.training.callbacks import (
    BestMetrics,
    CheckpointOnInterrupt,
    ConfigInCheckpoint,
    LogsFromCheckpoint,
    RandomStateInCheckpoint,
)
from unet_lab.training.module import SegmentationModule
from unet_lab.training.precision import resolve_precision

log = logging.getLogger(__name__)


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
    datamodule = build_datamodule(cfg, augment=True)
    warn_if_data_changed(cfg, datamodule)
    if "seed" in cfg.data and cfg.data.seed is None:
        # Unseeded: the data module drew its seed. The resolved config carries it to the other
        # DDP ranks (built from it) and into checkpoints, so that they make the same data.
        cfg.data.seed = datamodule.seed
    loss = instantiate(cfg.loss, "loss")
    regions = getattr(datamodule, "regions", None)
    if (regions is not None) != bool(getattr(loss, "multi_label", False)):
        given = "data.mask_classes" if getattr(datamodule, "mask_classes", None) else "data.regions"
        raise ConfigError(
            f"{given} needs loss=regions (a sigmoid per region)"
            if regions is not None
            else "loss=regions is for overlapping classes: set data.regions or data.mask_classes"
        )
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
        regions=regions,
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
    loggers = instantiate_named(cfg.get("logger"), "logger")
    if not loggers:  # logger=[]: Lightning refuses a learning-rate monitor without one
        named = [c for c in named if not isinstance(c, LearningRateMonitor)]
    callbacks = grouped(  # fewer callbacks for Lightning to call on every step
        [
            *named,
            best_metrics,
            ConfigInCheckpoint(resolved),
            CheckpointOnInterrupt(),
            RandomStateInCheckpoint(),
            LogsFromCheckpoint(),
        ]
    )
    precision = resolve_precision(
        cfg.trainer.precision,
        cfg.trainer.get("accelerator", "auto"),
        int(getattr(net, "spatial_dims", 2)),
    )
    trainer = instantiate(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        precision=precision,
        plugins=[AtomicCheckpointIO()],  # no half-written checkpoint after a kill
    )
    return Experiment(datamodule, module, trainer, best_metrics, resolved)


def build_network(model_cfg: DictConfig, datamodule: InMemoryDataModule, loss: Any) -> nn.Module:
    """The network of ``model_cfg`` for this data: the data decides the input channels and the
    classes (the model config does not repeat them); a single-output loss (binary
    cross-entropy) makes a single-output network, and overlapping regions (``data.regions``)
    one output per region.

    ``model.spacing=auto`` becomes the data's voxel spacing (volumes: the target spacing;
    images: None), written into ``model_cfg`` so that the run's config, and the checkpoints
    that store it, rebuild the same network without the data."""
    num_classes = len(datamodule.class_names)
    regions = getattr(datamodule, "regions", None)
    out_channels = (
        len(regions) if regions is not None else getattr(loss, "out_channels", num_classes)
    )
    if out_channels == 1 and num_classes != 2:
        raise ConfigError(f"loss=bce is for binary data, but the data has {num_classes} classes")
    if model_cfg.get("spacing") == "auto":
        spacing = getattr(datamodule, "voxel_spacing", None)
        model_cfg.spacing = None if spacing is None else [float(s) for s in spacing]
    net = instantiate(
        model_cfg, "model", in_channels=datamodule.in_channels, num_classes=out_channels
    )
    if regions is not None:
        net.multi_label = True  # a sigmoid per region (see inference.trained.is_multi_label)
    return net


def warn_if_data_changed(cfg: DictConfig, datamodule: Any) -> None:
    """Warns when a recipe of ``unet-lab autoplan`` (``cfg.autoplan``) trains on files other
    than those it was planned for: files added, removed, renamed or resized since."""
    planned = cfg.get("autoplan")
    source_files = getattr(datamodule, "source_files", None)
    if not planned or source_files is None:
        return
    now = files_hash(source_files(), Path(str(planned.root)))
    if now != planned.files_hash:
        log.warning(
            "the data changed since unet-lab autoplan planned this recipe (files hash %s, "
            "now %s): its choices may no longer fit; plan again with unet-lab autoplan",
            planned.files_hash,
            now,
        )


def build_datamodule(cfg: DictConfig, augment: bool = False) -> InMemoryDataModule:
    """The data module of a composed training config, its data read and checked. With
    ``augment``, with the config's train and eval pipelines (seeded with ``cfg.seed``), as
    training uses it (``augmentation.on_device``: the train transforms run on each batch on the
    training device); without, as commands that only look at the data use it."""
    if not augment:
        return instantiate(cfg.data, "data")
    on_device = bool(cfg.augmentation.get("on_device", False))
    transforms = {
        f"{split}_transform": instantiate(
            cfg.augmentation[split], f"augmentation.{split}", seed=cfg.get("seed")
        )
        for split in ("train", "eval")
        if not (on_device and split == "train")
    }
    datamodule = instantiate(cfg.data, "data", **transforms)
    _check_train_pipeline(datamodule)
    if on_device:
        if datamodule.spatial_dims != 2:
            raise ConfigError("augmentation.on_device=true is for 2D images; volumes augment "
                              "per patch in the loader (augmentation.on_device=false)")  # fmt: skip
        prefix = "augmentation.train.transforms"
        named = {
            name: None if spec is None else instantiate(spec, f"{prefix}.{name}")
            for name, spec in (cfg.augmentation.train.get("transforms") or {}).items()
        }
        datamodule.augment_on_device(
            BatchAugmentation.from_albumentations(named, prefix, cfg.get("seed"))
        )
    return datamodule


def _check_train_pipeline(datamodule: InMemoryDataModule) -> None:
    """Refuses, naming the key, a train augmentation made for the other kind of data (an
    albumentations pipeline for volumes, a volume pipeline for images), which would otherwise
    fail in the loader with a traceback. ``augmentation=none`` suits both: for volumes its
    empty albumentations pipeline is dropped."""
    pipeline = datamodule.train_transform
    if pipeline is None:
        return
    volumes, for_images = datamodule.spatial_dims == 3, isinstance(pipeline, A.BaseCompose)
    if volumes and for_images and not pipeline.transforms:  # augmentation=none
        datamodule.train_transform = None
    elif volumes and for_images:
        raise ConfigError("augmentation.train is a pipeline for 2D images (albumentations) but "
                          "the data are volumes: choose augmentation=volume_light, "
                          "volume_medium or none")  # fmt: skip
    elif not volumes and not for_images:
        raise ConfigError("augmentation.train is a pipeline for volumes but the data are 2D "
                          "images: choose augmentation=none, light, medium, heavy, paper or "
                          "nnunet")  # fmt: skip
