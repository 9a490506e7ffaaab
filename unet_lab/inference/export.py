"""A trained network as an ONNX model (or a TorchScript module) with dynamic batch, height and
width, checked against PyTorch (with onnxruntime for ONNX) on non-square, odd sizes, plus a JSON
sidecar with what using it needs (input channels, normalization with its statistics, class
names, tile size); and such a model back as a :class:`TrainedNetwork` that ``predict`` runs."""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unet_lab.arguments import per_axis
from unet_lab.data.normalization import Normalizer
from unet_lab.data.regions import Regions
from unet_lab.errors import InputError, first_line
from unet_lab.inference.postprocessing import Postprocessing
from unet_lab.inference.trained import TrainedNetwork

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
MAX_SIDE = 16384
# Verification inputs: non-square, odd sizes (multiplied by the pooling grid's minimum).
CHECK_SIZES = ((1, 37, 53), (2, 61, 30))
# The same for 3D networks: (batch, depth, height, width).
CHECK_SIZES_3D = ((1, 13, 37, 21), (2, 19, 17, 30))
AXIS_NAMES = ("depth", "height", "width")


def _onnx_runtime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise InputError(
            "format=onnx needs onnx and onnxruntime: pip install 'unet-lab[export]'"
        ) from exc
    return onnxruntime


def model_suffix(format: str) -> str:
    """The file suffix of an export ``format`` (``onnx`` or ``torchscript``); another format
    raises :class:`InputError` naming the key."""
    if format not in FORMATS:
        raise InputError(f"format={format!r} is not valid: expected one of {', '.join(FORMATS)}")
    return FORMATS[format]


def sidecar_path(model: Path) -> Path:
    return model.with_suffix(".json")


def _fit(net: nn.Module, sides: Sequence[int]) -> list[int]:
    """``sides``, each at least the pooling grid's minimum along its axis, and for a network
    that takes valid sizes only (``valid_sizes``: ``unet_paper`` with ``context=none``) the
    next valid side."""
    grid = per_axis(getattr(net, "size_multiple", 1), len(sides))
    fitted = [max(side, need) for side, need in zip(sides, grid, strict=True)]
    valid = getattr(net, "valid_sizes", None)
    if valid is None:
        return fitted
    first, step = valid
    return [first + max(0, -(-(side - first) // step)) * step for side in fitted]


def check_sizes(net: nn.Module) -> tuple[tuple[int, ...], ...]:
    """The (batch, *spatial) sizes an export is checked on: odd and non-square (non-cubic)."""
    return CHECK_SIZES_3D if _spatial_dims(net) == 3 else CHECK_SIZES


def _spatial_dims(net: nn.Module) -> int:
    return int(getattr(net, "spatial_dims", 2))


def _example(net: nn.Module, channels: int) -> torch.Tensor:
    """An input to trace or export with: 64 px per axis (32 for volumes), fitted to ``net``."""
    dims = _spatial_dims(net)
    return torch.randn(1, channels, *_fit(net, [32 if dims == 3 else 64] * dims))


def _largest_difference(trained: TrainedNetwork, run: Any) -> float:
    """The largest absolute difference of the logits between ``run(image)`` (the exported
    model) and PyTorch over :data:`CHECK_SIZES`."""
    worst = 0.0
    for batch, *spatial in check_sizes(trained.net):
        image = torch.randn(batch, trained.in_channels, *_fit(trained.net, spatial))
        logits = np.asarray(run(image))
        with torch.no_grad():
            expected = trained.net(image).numpy()
        if logits.shape != expected.shape:
            raise RuntimeError(
                f"exported output {logits.shape} differs from PyTorch {expected.shape}"
            )
        worst = max(worst, float(np.abs(logits - expected).max()))
    return worst


def export_torchscript(trained: TrainedNetwork, path: Path) -> float:
    """Traces the network (its padding and crops have no size branches while tracing, so the
    module takes any size) and writes ``path``; returns the check against PyTorch."""
    net = trained.net.eval()
    example = _example(net, trained.in_channels)
    with torch.no_grad():
        module = torch.jit.trace(net, example)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(module, str(path))
    loaded = torch.jit.load(str(path))
    return _largest_difference(trained, lambda image: loaded(image).detach().numpy())


def export_onnx(trained: TrainedNetwork, path: Path, opset: int) -> float:
    """Writes ``path``; returns the check of onnxruntime against PyTorch.

    ``torch.export`` (dynamo) with dynamic batch, height and width. A network that takes valid
    sizes only (``valid_sizes``) goes through the TorchScript-based exporter instead, which
    records the size arithmetic as traced: torch.export cannot prove its crops for symbolic
    ``first + k step`` sides and would fix the size."""
    ort = _onnx_runtime()
    net = trained.net.eval()
    example = _example(net, trained.in_channels)
    grid = per_axis(getattr(net, "size_multiple", 1), example.ndim - 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced = getattr(net, "valid_sizes", None) is not None
    names = AXIS_NAMES[-(example.ndim - 2) :]
    dims = {0: torch.export.Dim("batch", min=1, max=1024)}
    for axis, (name, multiple) in enumerate(zip(names, grid, strict=True), start=2):
        dims[axis] = torch.export.Dim(name, min=max(2, multiple), max=MAX_SIDE)
    axes = {0: "batch", **{axis: name for axis, name in enumerate(names, start=2)}}
    (argument,) = inspect.signature(net.forward).parameters
    torch.onnx.export(
        net,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        opset_version=opset,
        dynamo=not traced,
        dynamic_axes={"image": axes} if traced else None,
        dynamic_shapes=None if traced else {argument: dims},
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _largest_difference(
        trained, lambda image: session.run(None, {"image": image.numpy()})[0]
    )


class ExportedNetwork(nn.Module):
    """An exported network behind the interface of a PyTorch one (logits for a batch), with
    what its sidecar says about sizes: the pooling grid (``size_multiple``), the pixels its
    output lacks per border (``output_margin``; None in sidecars from before it was recorded:
    the sliding window then measures it) and, for a network that takes valid sizes only,
    ``valid_sizes`` (others are refused, as the checkpoint's network refuses them)."""

    multi_label = False  # a sigmoid per output (overlapping regions), from the sidecar

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        super().__init__()
        self.name = path.name
        self.spatial_dims = int(meta.get("spatial_dims", 2))
        # One int in sidecars before 0.2 (the same grid along every axis).
        self.size_multiple = per_axis(meta["size_multiple"], self.spatial_dims)
        self.num_classes = int(meta["out_channels"])
        self.output_margin = meta.get("output_margin")
        self.valid_sizes = meta.get("valid_sizes")

    def check_size(self, side: int) -> None:
        if self.valid_sizes is None:
            return
        first, step = self.valid_sizes
        if side < first or (side - first) % step:
            higher = first + max(0, -(-(side - first) // step)) * step
            raise InputError(
                f"{self.name} takes valid sizes only: {first} + {step}k px, not {side} "
                f"(nearest: {max(first, higher - step)}, {higher})"
            )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        for side in image.shape[2:]:
            self.check_size(int(side))
        return self.run(image)

    def run(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class OnnxNetwork(ExportedNetwork):
    """An exported ONNX network, run by onnxruntime on the CPU."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        super().__init__(path, meta)
        self.session = _onnx_runtime().InferenceSession(
            str(path), providers=["CPUExecutionProvider"]
        )

    def run(self, image: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {"image": image.float().cpu().numpy()})
        return torch.from_numpy(logits)


class TorchScriptNetwork(ExportedNetwork):
    """An exported TorchScript network (``torch.jit.load``), on the device it is moved to."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        super().__init__(path, meta)
        try:
            self.module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as exc:
            raise InputError(
                f"{path}: cannot read the TorchScript model ({first_line(exc)})"
            ) from exc

    def run(self, image: torch.Tensor) -> torch.Tensor:
        return self.module(image)


def load_exported(path: Path) -> TrainedNetwork:
    """An exported model (``.onnx`` or ``.pt``) with its sidecar, ready for
    :class:`SlidingWindowPredictor`."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise InputError(f"{path}: its sidecar {sidecar.name} is missing (written by export)")
    meta = json.loads(sidecar.read_text())
    network = TorchScriptNetwork if path.suffix == FORMATS["torchscript"] else OnnxNetwork
    net = network(path, meta)
    regions = None
    if meta.get("regions"):
        regions = Regions.from_state_dict(meta["regions"], len(meta["class_names"]))
        net.multi_label = True
    return TrainedNetwork(
        net,
        list(meta["class_names"]),
        int(meta["in_channels"]),
        Normalizer.from_state_dict(meta["normalization"]),
        {"model": meta["model"], "data": {"patch_size": meta.get("patch_size")}},
        float(meta.get("scale", 1.0)),  # sidecars from before data.scale: 1
        meta.get("preprocessing"),  # volumes: what new cases need
        Postprocessing.from_state_dict(meta["postprocessing"])
        if meta.get("postprocessing")
        else None,
        sources=[str(path)],
        regions=regions,
    )


def export(
    trained: TrainedNetwork,
    path: Path,
    format: str = "onnx",
    opset: int = 18,
    tile_size: int = 512,
    source: str | None = None,
) -> float:
    """Writes ``trained`` to ``path`` in ``format`` (``onnx`` or ``torchscript``) and its
    sidecar beside it (:func:`sidecar_path`).

    Args:
        trained: the network and what it was trained on (:func:`load_trained`).
        path: the model file to write (``.onnx`` or ``.pt``).
        format: ``onnx`` or ``torchscript``.
        opset: the ONNX opset.
        tile_size: the sliding-window tile size recorded for ``predict``.
        source: the checkpoint it came from, recorded in the sidecar.

    Returns:
        The largest absolute difference of the logits against PyTorch on :data:`CHECK_SIZES`.
    """
    model_suffix(format)
    if format == "onnx":
        difference = export_onnx(trained, path, opset)
    else:
        difference = export_torchscript(trained, path)
    meta = {
        "format": format,
        "input": "image (batch, channels, height, width), float32, normalized as below",
        "output": "logits (batch, classes, height, width); softmax over classes (an "
        "ensemble's logits are the log of its networks' mean probabilities)",
        "in_channels": trained.in_channels,
        "out_channels": int(getattr(trained.net, "num_classes", len(trained.class_names))),
        "class_names": trained.class_names,
        "normalization": trained.normalizer.state_dict(),
        "image_scaling": "integer images divided by their type's maximum (8 or 16 bit)",
        "scale": trained.scale,
        "scale_use": "images resampled by scale (area interpolation) before the network; its "
        "softmax probabilities resampled back to the image's size (bilinear) before the argmax",
        "size_multiple": list(
            per_axis(getattr(trained.net, "size_multiple", 1), _spatial_dims(trained.net))
        ),
        "output_margin": int(getattr(trained.net, "output_margin", 0)),
        "valid_sizes": getattr(trained.net, "valid_sizes", None),
        "tile_size": int(tile_size),
        "opset": int(opset),
        "checkpoint": source,
        "ensemble_of": trained.sources if len(trained.sources) > 1 else None,
        # Overlapping regions: one sigmoid per output channel, {name: label values}.
        "regions": trained.regions.state_dict() if trained.regions is not None else None,
        "postprocessing": (
            trained.postprocessing.state_dict() if trained.postprocessing is not None else None
        ),
        "model": trained.config.get("model"),
        "spatial_dims": _spatial_dims(trained.net),
        "patch_size": trained.config.get("data", {}).get("patch_size"),
        "preprocessing": trained.preprocessing,
        "max_abs_difference_vs_pytorch": difference,
    }
    sidecar_path(path).write_text(json.dumps(meta, indent=2) + "\n")
    return difference
