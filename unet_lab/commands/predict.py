"""``unet-lab predict ckpt_path=CKPT input=PATH output=DIR [key=value ...]``
(``python predict.py``): label masks for new images of any size (``conf/predict.yaml`` lists
the keys).

Writes ``<name>.png`` per input image: class indices (0..C-1) at the input's size, 8-bit (16-bit
beyond 256 classes); optionally an overlay and the class probabilities. A network of
overlapping regions (``data.regions``) also writes one mask per region, ``<name>_<region>.png``
(0 or 255; volumes: ``<name>_<region>.nii.gz``, 0 or 1), and its label map paints the regions in
order.
"""

from __future__ import annotations

import glob
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import DictConfig

from unet_lab.config.compose import compose_config, instantiate
from unet_lab.data.files import IMAGE_SUFFIXES, read_image
from unet_lab.data.pairing import list_files, split_suffix
from unet_lab.data.volumes.io import VOLUME_SUFFIXES, volume_suffix, write_volume
from unet_lab.errors import InputError, input_errors_exit
from unet_lab.inference.models import describe, load_model
from unet_lab.inference.sliding_window import SlidingWindowPredictor
from unet_lab.inference.trained import TrainedNetwork, pick_device
from unet_lab.inference.volumes import (
    default_tile_size,
    is_volume_network,
    predict_volume,
    read_case,
)
from unet_lab.pictures import overlay, write_rgb


def input_files(pattern: str, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The files an ``input`` names: a file, a folder's files, or a glob's files, of the
    given suffixes (images, or volumes for a volume network)."""
    path = Path(pattern).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = list(list_files(path, suffixes).values())
    else:
        files = sorted(
            Path(p) for p in glob.glob(str(path)) if split_suffix(Path(p).name, suffixes)
        )
    if not files:
        kind = "images" if tuple(suffixes) == tuple(IMAGE_SUFFIXES) else "volumes"
        shown = ", ".join(s.lstrip(".") for s in suffixes)
        raise InputError(f"input={pattern}: no {kind} ({shown}) found")
    return files


def predict_file(
    trained: TrainedNetwork,
    predictor: SlidingWindowPredictor,
    path: Path,
    device: torch.device,
    postprocess: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, class probabilities (C, H, W), labels (H, W)) for one file."""
    image = read_image(path)
    probs = trained.predict(image, predictor, device).numpy()  # at the image's own size
    return image, probs, trained.labels(probs, postprocess)


def run(cfg: DictConfig) -> list[Path]:
    """Predicts every input ``cfg`` names and writes the masks; returns the files written."""
    trained = load_model(cfg.ckpt_path)
    device = pick_device(cfg.device)
    trained.net.to(device)
    tile_size = cfg.window.tile_size or default_tile_size(trained)
    predictor = instantiate(cfg.window, "window", tta=cfg.tta, tile_size=tile_size)
    volumes = is_volume_network(trained)
    files = input_files(str(cfg.input), VOLUME_SUFFIXES if volumes else IMAGE_SUFFIXES)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    dtype = np.uint8 if len(trained.class_names) <= 256 else np.uint16
    written = []
    if len(trained.sources) > 1 or trained.postprocessing is not None:
        rules = trained.postprocessing if cfg.postprocess else None
        shown = rules.describe(trained.class_names) if rules is not None else "none"
        print(f"model: {describe(trained)}; postprocessing: {shown}", flush=True)
    for number, path in enumerate(files, start=1):
        if volumes:
            target, labels = _predict_volume(
                trained, predictor, path, device, output, dtype, cfg.postprocess
            )
        else:
            image, probs, labels = predict_file(trained, predictor, path, device, cfg.postprocess)
            target = output / f"{path.stem}.png"
            cv2.imwrite(str(target), labels.astype(dtype))
            for index, region in enumerate(trained.regions.names if trained.regions else []):
                mask = (probs[index] > 0.5).astype(np.uint8) * 255
                cv2.imwrite(str(output / f"{path.stem}_{region}.png"), mask)
            if cfg.overlay:
                write_rgb(output / f"{path.stem}_overlay.png", overlay(image, labels))
            if cfg.probabilities:
                np.save(output / f"{path.stem}_probs.npy", probs.astype(np.float16))
        shares = np.bincount(labels.ravel(), minlength=len(trained.class_names)) / labels.size
        summary = ", ".join(
            f"{name} {100 * share:.1f}%"
            for name, share in zip(trained.class_names, shares, strict=True)
        )
        print(f"[{number}/{len(files)}] {path} -> {target} ({summary})", flush=True)
        written.append(target)
    return written


def _predict_volume(
    trained: TrainedNetwork,
    predictor: SlidingWindowPredictor,
    path: Path,
    device: torch.device,
    output: Path,
    dtype: type,
    postprocess: bool = True,
) -> tuple[Path, np.ndarray]:
    """A label volume for one volume file, in its own geometry and format."""
    image, volume = read_case(trained, [path])
    probs = predict_volume(trained, image, volume.affine, predictor, device)
    labels = trained.labels(probs, postprocess)
    suffix = volume_suffix(path) or ".nii.gz"
    stem = path.name[: -len(suffix)]
    target = output / f"{stem}{suffix}"
    write_volume(target, labels.astype(dtype), volume.affine, like=volume)
    for index, region in enumerate(trained.regions.names if trained.regions else []):
        mask = (probs[index] > 0.5).astype(np.uint8)
        write_volume(output / f"{stem}_{region}{suffix}", mask, volume.affine, like=volume)
    return target, labels


def main(args: Sequence[str] | None = None) -> None:
    overrides = list(sys.argv[1:] if args is None else args)
    with input_errors_exit():
        run(compose_config("predict", overrides))
