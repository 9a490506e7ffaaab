"""``predictions.png`` of a run: the first validation images (or, for volumes, the slice of
each validation case with the most foreground), their truth and the best checkpoint's
prediction, made from the checkpoint alone as ``predict`` would."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from unet_lab.data.datamodule import InMemoryDataModule
from unet_lab.data.volumes.patches import busiest_slice
from unet_lab.inference.sliding_window import SlidingWindowPredictor
from unet_lab.inference.trained import TrainedNetwork, load_trained
from unet_lab.inference.volumes import default_tile_size
from unet_lab.pictures import write_prediction_picture

log = logging.getLogger("unet_lab")
# Validation images shown in predictions.png.
PICTURE_IMAGES = 4


def write_run_picture(
    run_dir: Path, checkpoint: Path, datamodule: InMemoryDataModule
) -> Path | None:
    """``predictions.png`` of the first validation images, predicted by ``checkpoint`` as
    ``predict.py`` would (the checkpoint alone, at each image's own size). A picture that
    cannot be made is reported and the run stays completed."""
    try:
        images, truths = datamodule.load_split("val")
        images, truths = list(images[:PICTURE_IMAGES]), list(truths[:PICTURE_IMAGES])
        trained = load_trained(checkpoint)
        if datamodule.spatial_dims == 3:
            images, truths, predictions = _volume_slices(trained, images, truths)
        else:
            predictions = [trained.labels(trained.probabilities(image)) for image in images]
        return write_prediction_picture(
            run_dir / "predictions.png", images, truths, predictions, trained.class_names
        )
    except Exception as exc:
        log.warning("could not write %s: %s", run_dir / "predictions.png", exc)
        return None


def _volume_slices(
    trained: TrainedNetwork, volumes: list[np.ndarray], truths: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """For each preprocessed volume ``(C, D, H, W)``: the slice ``(H, W, 1)`` (first channel)
    where its labels hold the most foreground, with its true and predicted labels."""
    window = SlidingWindowPredictor(tile_size=default_tile_size(trained))
    images, labels, predictions = [], [], []
    for volume, truth in zip(volumes, truths, strict=True):
        probs = window(trained.net, torch.from_numpy(np.array(volume, dtype=np.float32)))
        depth = busiest_slice(truth)
        images.append(np.asarray(volume[0, depth])[..., None])
        labels.append(np.asarray(truth[depth]))
        predictions.append(trained.labels(probs[:, depth].numpy()))
    return images, labels, predictions
