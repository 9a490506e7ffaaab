"""A trained network back from its checkpoint, and its class probabilities for new images,
optionally averaged over the eight flips and 90-degree rotations (test-time augmentation), at
each image's own size (a network trained at a working resolution, ``data.scale`` < 1, sees
the image resampled to it; its probabilities are resampled back)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from unet_lab.config.compose import instantiate
from unet_lab.data.dataset import as_unit_float, image_to_tensor
from unet_lab.data.normalization import Normalizer
from unet_lab.data.regions import Regions
from unet_lab.data.scaling import probabilities_at, resample_image
from unet_lab.errors import InputError
from unet_lab.inference.postprocessing import Postprocessing
from unet_lab.runs.checkpoints import CONFIG_KEY, DATA_KEY, read_checkpoint


def probabilities(net: nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Softmax class probabilities ``(N, C, *spatial)`` of ``net`` for ``images``
    ``(N, C_in, *spatial)``, images (2 spatial axes) or volumes (3); for a network of
    overlapping regions (:func:`is_multi_label`), one sigmoid probability per region.

    With ``tta``, the mean over symmetries of the input, each output mapped back before
    averaging. Images: the eight symmetries of the square (four rotations of the last two axes,
    each with and without a mirror), as the U-Net paper averaged its predictions. Volumes: the
    eight combinations of flips along the three spatial axes (nnU-Net's mirroring), with no
    rotation, so anisotropic volumes keep their axes (and non-cubic tiles their shape).
    """
    multi_label = is_multi_label(net)

    def run(batch: torch.Tensor) -> torch.Tensor:
        return output_probabilities(net(batch), multi_label)

    with torch.inference_mode():
        if not tta:
            return run(images)
        total = torch.zeros(())
        if images.ndim == 5:
            flips = [(), (-1,), (-2,), (-3,), (-2, -1), (-3, -1), (-3, -2), (-3, -2, -1)]
            for axes in flips:
                output = run(images.flip(axes) if axes else images)
                total = total + (output.flip(axes) if axes else output)
            return total / len(flips)
        for mirror in (False, True):
            mirrored = images.flip(-1) if mirror else images
            for turns in range(4):
                output = run(torch.rot90(mirrored, turns, dims=(-2, -1)))
                output = torch.rot90(output, -turns, dims=(-2, -1))
                total = total + (output.flip(-1) if mirror else output)
        return total / 8


class Predictor(Protocol):
    """Probabilities ``(C, H, W)`` of a network for one image ``(C_in, H, W)``, e.g.
    :class:`unet_lab.inference.sliding_window.SlidingWindowPredictor`."""

    def __call__(self, net: nn.Module, image: torch.Tensor) -> torch.Tensor: ...


def label_map(probs: np.ndarray) -> np.ndarray:
    """The argmax over the classes of ``probs`` ``(C, *spatial)`` (the first class on ties),
    as uint8 (uint16 beyond 256 classes): class by class, so that a large volume needs no
    int64 array of its size."""
    dtype = np.uint8 if len(probs) <= 256 else np.uint16
    labels = np.zeros(probs.shape[1:], dtype)
    best = np.array(probs[0], copy=True)
    for index in range(1, len(probs)):
        higher = probs[index] > best
        labels[higher] = index
        np.copyto(best, probs[index], where=higher)
    return labels


def is_multi_label(net: nn.Module) -> bool:
    """Whether ``net`` was trained on overlapping regions (``data.regions``): one sigmoid per
    output channel instead of a softmax over them. Such networks carry ``multi_label = True``
    (set where they are built or loaded)."""
    return bool(getattr(net, "multi_label", False))


def output_probabilities(logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """:func:`class_probabilities`, or with ``multi_label`` one sigmoid per channel."""
    if multi_label:
        return torch.sigmoid(logits if logits.dtype == torch.float64 else logits.float())
    return class_probabilities(logits)


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
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
    normalization (with dataset statistics, if any), the run's resolved config, the
    working resolution ``scale`` (``data.scale``: the factor its inputs were resampled by),
    for volumes the ``preprocessing`` that new cases need, the connected-component
    ``postprocessing`` chosen for it (by ``unet-lab cv``; None: none) and the files it was
    loaded from (``sources``: several for an ensemble)."""

    net: nn.Module
    class_names: list[str]
    in_channels: int
    normalizer: Normalizer
    config: dict[str, Any]
    scale: float = 1.0
    # Volumes: the preprocessing of the training cache (target spacing, normalization, ...).
    preprocessing: dict[str, Any] | None = None
    postprocessing: Postprocessing | None = None
    sources: list[str] = field(default_factory=list)
    # Overlapping regions (data.regions): one sigmoid per region; class_names stay the
    # label values' names.
    regions: Regions | None = None

    def labels(self, probs: np.ndarray, postprocess: bool = True) -> np.ndarray:
        """The label map of class probabilities ``(C, *spatial)``: their argmax (regions:
        painted from the region masks, :meth:`Regions.label_map`), cleaned up by the
        network's ``postprocessing`` (if any, and unless ``postprocess`` is false)."""
        if self.regions is not None:
            labels = self.regions.label_map(probs > 0.5)
        else:
            labels = label_map(probs)
        if postprocess and self.postprocessing is not None:
            labels = self.postprocessing(labels)
        return labels

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """A decoded image ``(H, W[, C])`` (integer or float) as a normalized ``(1, C, h, w)``
        tensor at the network's working resolution, exactly as training prepared its images
        (resampled by ``scale``, then scaled to [0, 1] and normalized)."""
        array = image[..., None] if image.ndim == 2 else image
        if array.shape[-1] != self.in_channels:
            raise InputError(
                f"image has {array.shape[-1]} channels, the network expects {self.in_channels}"
            )
        array = resample_image(array, self.scale)
        return image_to_tensor(self.normalizer(as_unit_float(array)))[None]

    def predict(
        self,
        image: np.ndarray,
        predictor: Predictor | None = None,
        device: torch.device | str = "cpu",
        tta: bool = False,
    ) -> torch.Tensor:
        """Class probabilities ``(C, H, W)`` (on the CPU) at the size of the decoded
        ``image``: the network sees it at the working resolution, through ``predictor`` (a
        sliding window, with its own ``tta``) or whole (with ``tta`` here); its probabilities
        are resampled back bilinearly before any argmax."""
        prepared = self.prepare(image).to(device)
        if predictor is None:
            probs = probabilities(self.net, prepared, tta)[0]
        else:
            probs = predictor(self.net, prepared[0])
        return probabilities_at(probs.cpu(), image.shape[:2])

    def probabilities(self, image: np.ndarray, tta: bool = False) -> np.ndarray:
        """Class probabilities ``(C, H, W)`` for one decoded image, at its own size."""
        return self.predict(image, tta=tta).numpy()


def load_trained(checkpoint: str | Path) -> TrainedNetwork:
    """The network of a unet-lab checkpoint (``best.ckpt`` or ``last.ckpt`` of a run), rebuilt
    from the config stored in it, in eval mode on the CPU. Loads tensors and plain values only
    (no pickled code); a missing, damaged or foreign file raises :class:`InputError` naming it."""
    state = read_checkpoint(checkpoint)
    config = state[CONFIG_KEY]
    data = state[DATA_KEY]
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
    regions = None
    if data.get("regions"):
        regions = Regions.from_state_dict(data["regions"], len(data["class_names"]))
        net.multi_label = True
    return TrainedNetwork(
        net,
        list(data["class_names"]),
        int(data["in_channels"]),
        Normalizer.from_state_dict(data["normalization"]),
        config,
        float(data.get("scale", 1.0)),  # checkpoints from before data.scale: 1
        data.get("preprocessing"),
        sources=[str(Path(checkpoint).resolve())],
        regions=regions,
    )


def pick_device(name: str) -> torch.device:
    """The device ``auto`` (CUDA when there is one, else the CPU), ``cpu``, ``cuda`` or
    ``cuda:N`` names; ``cuda`` without a CUDA device raises :class:`InputError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={name} but no CUDA device is available")
    return torch.device(name)
