"""A trained network back from its checkpoint, and its class probabilities for new images,
optionally averaged over the eight flips and 90-degree rotations (test-time augmentation)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from unet_lab.callbacks import ConfigInCheckpoint
from unet_lab.config import instantiate
from unet_lab.data.dataset import as_unit_float, image_to_tensor
from unet_lab.data.normalization import Normalizer
from unet_lab.errors import InputError


def probabilities(net: nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Softmax class probabilities ``(N, C, H, W)`` of ``net`` for ``images`` ``(N, C_in, H, W)``.

    With ``tta``, the mean over the eight symmetries of the square (four rotations, each with
    and without a mirror), each mapped back before averaging, as the U-Net paper averaged its
    predictions. Rotations act on the last two axes, so volumes work too.
    """
    with torch.inference_mode():
        if not tta:
            return _softmax(net(images))
        total = torch.zeros(())
        for mirror in (False, True):
            mirrored = images.flip(-1) if mirror else images
            for turns in range(4):
                output = _softmax(net(torch.rot90(mirrored, turns, dims=(-2, -1))))
                output = torch.rot90(output, -turns, dims=(-2, -1))
                total = total + (output.flip(-1) if mirror else output)
        return total / 8


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (float32, or float64 for float64 logits); a single foreground logit
    gives (background, foreground)."""
    logits = logits if logits.dtype == torch.float64 else logits.float()
    if logits.shape[1] == 1:
        foreground = torch.sigmoid(logits)
        return torch.cat([1 - foreground, foreground], dim=1)
    return logits.softmax(dim=1)


@dataclass
class TrainedNetwork:
    """A network in eval mode with what it was trained on: class names, input channels, the
    normalization (with dataset statistics, if any) and the run's resolved config."""

    net: nn.Module
    class_names: list[str]
    in_channels: int
    normalizer: Normalizer
    config: dict[str, Any]

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """A decoded image ``(H, W[, C])`` (integer or float) as a normalized ``(1, C, H, W)``
        tensor, exactly as training prepared its images."""
        array = image[..., None] if image.ndim == 2 else image
        if array.shape[-1] != self.in_channels:
            raise InputError(
                f"image has {array.shape[-1]} channels, the network expects {self.in_channels}"
            )
        return image_to_tensor(self.normalizer(as_unit_float(array)))[None]

    def probabilities(self, image: np.ndarray, tta: bool = False) -> np.ndarray:
        """Class probabilities ``(C, H, W)`` for one decoded image."""
        return probabilities(self.net, self.prepare(image), tta)[0].numpy()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_trained(checkpoint: str | Path) -> TrainedNetwork:
    """The network of a unet-lab checkpoint (``best.ckpt`` or ``last.ckpt`` of a run), rebuilt
    from the config stored in it. Loads tensors and plain values only (no pickled code)."""
    path = Path(checkpoint)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):  # a class or function to call: code
            raise InputError(
                f"{path}: refused: the checkpoint holds objects other than tensors and plain "
                "values, and loading them could run code"
            ) from exc
        raise InputError(f"{path}: cannot read the checkpoint ({_first_line(exc)})") from exc
    except (OSError, RuntimeError, EOFError) as exc:
        raise InputError(f"{path}: cannot read the checkpoint ({_first_line(exc)})") from exc
    if ConfigInCheckpoint.DATA_KEY not in state:
        raise InputError(f"{path}: not a unet-lab checkpoint (no {ConfigInCheckpoint.DATA_KEY})")
    config = state[ConfigInCheckpoint.KEY]
    data = state[ConfigInCheckpoint.DATA_KEY]
    net = instantiate(
        OmegaConf.create(config["model"]),
        "model",
        in_channels=data["in_channels"],
        num_classes=data.get("out_channels", len(data["class_names"])),
    )
    weights = {
        key.removeprefix("net."): value
        for key, value in state["state_dict"].items()
        if key.startswith("net.")
    }
    net.load_state_dict(weights)
    net.eval()
    return TrainedNetwork(
        net,
        list(data["class_names"]),
        int(data["in_channels"]),
        Normalizer.from_state_dict(data["normalization"]),
        config,
    )
