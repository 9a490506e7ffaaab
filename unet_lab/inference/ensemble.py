"""Several trained networks of one task (the folds of a cross-validation) as one network: the
mean of their class probabilities, computed tile by tile, so the sliding window, TTA and export
treat an ensemble as they treat a single network, and memory does not grow with the number of
networks (only their weights do)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from unet_lab.arguments import per_axis
from unet_lab.errors import InputError
from unet_lab.inference.trained import (
    TrainedNetwork,
    is_multi_label,
    load_trained,
    output_probabilities,
)


class Ensemble(nn.Module):
    """The mean class probabilities of several networks, as one network.

    Its output is the logarithm of the mean probabilities, so the softmax that turns a
    network's logits into probabilities gives back exactly that mean (networks of overlapping
    regions: the logit of the mean sigmoid probabilities, for the sigmoid).

    Args:
        nets: networks with the same input channels, classes and spatial axes.
        input_scales: per network, one factor per input channel mapping the ensemble's input
            to what that network was trained on (``x * scale + shift``); networks whose data
            normalization used other statistics (one per fold) need it. None: the input as is.
        input_shifts: per network, one offset per input channel (see ``input_scales``).

    Shapes:
        input ``(N, C_in, *spatial)``; output ``(N, classes, *spatial)``.

    Attributes read by the sliding window and export (``spatial_dims``, ``num_classes``,
    ``size_multiple``: the least common multiple of the networks' grids per axis,
    ``output_margin``, ``valid_sizes``) are the networks' common values.
    """

    def __init__(
        self,
        nets: Sequence[nn.Module],
        input_scales: Sequence[Sequence[float]] | None = None,
        input_shifts: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        if not nets:
            raise ValueError("an ensemble needs at least one network")
        self.nets = nn.ModuleList(nets)
        first = nets[0]
        self.spatial_dims = int(getattr(first, "spatial_dims", 2))
        classes = getattr(first, "num_classes", None)
        # A single-logit (sigmoid) network's probabilities have two classes, as its ensemble's.
        self.num_classes = 2 if classes == 1 else classes
        grids = [per_axis(getattr(n, "size_multiple", 1), self.spatial_dims) for n in nets]
        self.size_multiple = tuple(math.lcm(*axis) for axis in zip(*grids, strict=True))
        self.output_margin = getattr(first, "output_margin", None)
        self.valid_sizes = getattr(first, "valid_sizes", None)
        self.multi_label = is_multi_label(first)
        self.adapted = input_scales is not None and input_shifts is not None
        # Per network and input channel (identity when not adapted).
        self.input_scales: torch.Tensor
        self.input_shifts: torch.Tensor
        channels = len(input_scales[0]) if input_scales else 1
        ones, zeros = [[1.0] * channels] * len(nets), [[0.0] * channels] * len(nets)
        scales = input_scales if input_scales is not None else ones
        shifts = input_shifts if input_shifts is not None else zeros
        self.register_buffer("input_scales", torch.tensor(scales, dtype=torch.float32))
        self.register_buffer("input_shifts", torch.tensor(shifts, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=image.device)
        view = (1, -1) + (1,) * (image.ndim - 2)
        for index, net in enumerate(self.nets):
            member_input = image
            if self.adapted:
                scale = self.input_scales[index].to(image.dtype).view(view)
                shift = self.input_shifts[index].to(image.dtype).view(view)
                member_input = image * scale + shift
            total = total + output_probabilities(net(member_input), self.multi_label)
        mean = total / len(self.nets)
        tiny = torch.finfo(mean.dtype).tiny
        if self.multi_label:
            return torch.logit(mean, eps=1e-7)
        return torch.log(mean.clamp_min(tiny))


def _differs(what: str, path: Path, value: object, first: Path, expected: object) -> InputError:
    return InputError(
        f"{path}: {what} {value} differ from {expected} of {first}; an ensemble averages "
        "networks of one task (the folds of one cross-validation)"
    )


def _input_maps(members: Sequence[TrainedNetwork], paths: Sequence[Path]) -> tuple | None:
    """Per member, the per-channel ``scale`` and ``shift`` taking the first member's normalized
    input to the member's own (data-set statistics differ between folds); None when every
    member normalizes alike."""
    first = members[0].normalizer
    for member, path in zip(members, paths, strict=True):
        if member.normalizer.mode != first.mode:
            raise _differs("normalization", path, member.normalizer.mode, paths[0], first.mode)
    if first.mode not in ("dataset", "fixed"):
        return None
    assert first.mean is not None and first.std is not None
    scales, shifts = [], []
    for member in members:
        mean, std = member.normalizer.mean, member.normalizer.std
        assert mean is not None and std is not None
        # x = (u - m0) / s0 and x_i = (u - m_i) / s_i, so x_i = x * s0 / s_i + (m0 - m_i) / s_i.
        own_std = np.maximum(std, 1e-6)
        scales.append((np.maximum(first.std, 1e-6) / own_std).tolist())
        shifts.append(((first.mean - mean) / own_std).tolist())
    return scales, shifts


def ensemble_of(members: Sequence[TrainedNetwork], paths: Sequence[Path]) -> TrainedNetwork:
    """One :class:`TrainedNetwork` averaging ``members`` (loaded from ``paths``, named in
    errors). The members must share classes, input channels, working resolution and, for
    volumes, preprocessing; data-set normalization statistics may differ (they are mapped)."""
    first, first_path = members[0], paths[0]
    for member, path in zip(members[1:], paths[1:], strict=True):
        for what, value, expected in (
            ("class names", member.class_names, first.class_names),
            ("input channels", member.in_channels, first.in_channels),
            ("working resolution (data.scale)", member.scale, first.scale),
            ("volume preprocessing", member.preprocessing, first.preprocessing),
            ("regions", member.regions and member.regions.state_dict(),
             first.regions and first.regions.state_dict()),
            ("output margin", getattr(member.net, "output_margin", None),
             getattr(first.net, "output_margin", None)),
        ):  # fmt: skip
            if value != expected:
                raise _differs(what, path, value, first_path, expected)
    maps = _input_maps(members, paths)
    net = Ensemble(
        [m.net for m in members],
        *(maps if maps is not None else (None, None)),
    )
    net.eval()
    return TrainedNetwork(
        net,
        first.class_names,
        first.in_channels,
        first.normalizer,
        first.config,
        first.scale,
        first.preprocessing,
        postprocessing=first.postprocessing,
        sources=[str(p) for p in paths],
        regions=first.regions,
    )


def load_ensemble(checkpoints: Sequence[str | Path]) -> TrainedNetwork:
    """The ensemble of unet-lab checkpoints (see :func:`ensemble_of`); one checkpoint gives
    that network alone."""
    paths = [Path(c) for c in checkpoints]
    if not paths:
        raise InputError("ckpt_path: an empty list; give one checkpoint or several")
    members = [load_trained(p) for p in paths]
    return members[0] if len(members) == 1 else ensemble_of(members, paths)
