"""Predicting whole volumes: each case preprocessed exactly as training's cache did, run through
the sliding window, and its class probabilities put back into the input's own geometry (same
shape, voxel order and affine) before the argmax."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from unet_lab.data.volumes.folder import preprocess_arrays
from unet_lab.data.volumes.io import Volume, read_volume
from unet_lab.data.volumes.preprocessing import Intensity, uncanonical
from unet_lab.errors import InputError
from unet_lab.inference.trained import Predictor, TrainedNetwork, probabilities

# Tiles of the sliding window for images, when the config gives none.
IMAGE_TILE = 512


def is_volume_network(trained: TrainedNetwork) -> bool:
    """Whether ``trained`` was trained on volumes (its checkpoint holds their preprocessing)."""
    return trained.preprocessing is not None


def default_tile_size(trained: TrainedNetwork) -> int | list[int]:
    """The sliding window's tiles when ``window.tile_size`` is null: a volume network's
    training patch (it has seen nothing larger), else :data:`IMAGE_TILE` pixels."""
    if int(getattr(trained.net, "spatial_dims", 2)) == 3:
        return [int(side) for side in trained.config["data"]["patch_size"]]
    return IMAGE_TILE


def read_case(trained: TrainedNetwork, paths: Sequence[Path]) -> tuple[np.ndarray, Volume]:
    """The channels ``(I, J, K, C)`` of a case (one file per channel, or one multi-channel
    file) and its first file's volume (for the geometry)."""
    assert trained.preprocessing is not None
    spacing = trained.preprocessing.get("file_spacing")
    volumes = [read_volume(path, spacing) for path in paths]
    arrays = [v.array if v.array.ndim == 4 else v.array[..., None] for v in volumes]
    image = np.concatenate(arrays, axis=-1)
    if image.shape[-1] != trained.in_channels:
        raise InputError(
            f"{paths[0]}: {image.shape[-1]} channels, the network expects {trained.in_channels}"
        )
    return image, volumes[0]


def predict_volume(
    trained: TrainedNetwork,
    image: np.ndarray,
    affine: np.ndarray,
    predictor: Predictor | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Class probabilities ``(C, I, J, K)`` of a case ``image`` ``(I, J, K, C)`` in its file's
    voxel order: preprocessed as in training, predicted (through ``predictor``, else whole),
    resampled back (linear) to the cropped region at the file's spacing, and placed into the
    full volume (background outside the crop)."""
    settings = trained.preprocessing
    assert settings is not None
    intensity = Intensity(**settings["intensity"]) if settings.get("intensity") else None
    prepared, _, geometry = preprocess_arrays(image, None, affine, settings, intensity)
    tensor = torch.from_numpy(prepared).to(device)
    with torch.inference_mode():
        if predictor is None:
            probs = probabilities(trained.net, tensor[None])[0]
        else:
            probs = predictor(trained.net, tensor)
    return restore_geometry(probs.float().cpu().numpy(), geometry)


def restore_geometry(probs: np.ndarray, geometry: dict[str, Any]) -> np.ndarray:
    """Probabilities ``(C, d, h, w)`` at the target spacing back into the file's voxel grid
    ``(C, I, J, K)`` (see :func:`~unet_lab.data.volumes.folder.preprocess_arrays`), channel by
    channel into one output array, so that a large volume needs one more copy of a channel,
    not of all of them."""
    box = geometry["crop"]
    cropped = [b - a for a, b in box]
    region = tuple(slice(a, b) for a, b in box)
    orientation = np.asarray(geometry["orientation"])
    factors = [n / s for n, s in zip(cropped, probs.shape[1:], strict=True)]
    restored: np.ndarray | None = None
    for c, channel in enumerate(probs):
        if any(f != 1 for f in factors):
            channel = ndimage.zoom(channel, factors, order=1, mode="nearest", grid_mode=True)
        # Background outside the cropped region (and where rounding left the zoom short).
        canonical = np.full(geometry["canonical_shape"], 1.0 if c == 0 else 0.0, np.float32)
        fitted = channel[tuple(slice(0, n) for n in cropped)]
        canonical[region][tuple(slice(0, n) for n in fitted.shape)] = fitted
        in_file = uncanonical(canonical, orientation)
        if restored is None:
            restored = np.empty((len(probs), *in_file.shape), np.float32)
        restored[c] = in_file
    assert restored is not None
    return restored
