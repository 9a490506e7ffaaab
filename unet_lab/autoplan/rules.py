"""The planning rules: a fingerprint and a device in, a recipe out, each choice with the one
line that explains it.

Learnt from nnU-Net's rules (target spacing, patch shape, pooling while feature maps keep 4
voxels, batch from memory, normalization per modality) and extended where nnU-Net is silent:
the working resolution of 2D images from object sizes, foreground oversampling and class
weights from class shares and object sizes, the augmentation from the data (colour or grey,
orientation), whether class 0 is background; the epochs from a time budget come later, from
measured rates (:mod:`unet_lab.autoplan.budget`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unet_lab.autoplan.fingerprint import Fingerprint, diameter
from unet_lab.data.volumes.preprocessing import target_spacing
from unet_lab.models.anisotropy import pooling_plan

MIN_FEATURE_MAP = 4  # voxels along a pooled axis at the deepest level (nnU-Net's)
# Levels of a 3D network planned for a CPU: in the few hundred steps a CPU budget affords, depth
# 3 learnt faster than 4 (experiments/autoplan, anisotropic set, fold 0, 3 min on a 2-core AMD
# EPYC: val Dice 0.17 with 4 levels, 0.42 with 3; the volumes recipe's 3 came from hippocampus).
MAX_DEPTH_3D_CPU = 3
MIN_STRUCTURE_DEPTH = 4.0  # px a labelled structure keeps at the working resolution
PATCHES_PER_SIDE = 2  # the median shorter side of 2D images spans this many patches
OBJECT_SHARE_OF_PATCH = 0.75  # large objects fit in this share of a patch side
OBJECT_CONTEXT = 16  # a 2D patch spans at least this many diameters of the largest objects
MIN_PATCH = 64  # px: the smallest 2D patch planned for small objects
# conf/augmentation/medium.yaml's intensity ranges (tests/test_autoplan.py checks them)
MEDIUM_BRIGHTNESS, MEDIUM_CONTRAST, MEDIUM_GAMMA = 0.2, 0.2, 0.2
RARE_SHARE = 0.001  # a lone foreground class rarer than this gets a cross-entropy weight
BACKGROUND_NAMES = {"background", "bg", "void", "none", "other", "unlabelled", "unlabeled"}


@dataclass(frozen=True)
class Device:
    """Where the plan will train: ``cpu`` or ``cuda``, and the memory its activations may
    take (bytes)."""

    kind: str
    memory: int
    name: str = ""

    @property
    def gpu(self) -> bool:
        return self.kind == "cuda"


@dataclass
class Plan:
    """The choices of a plan: config groups (``defaults``), values (``values``, nested as in
    the config) and one reason per choice, in the order they were made."""

    defaults: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (key=value, why)

    def set(self, key: str, value: Any, why: str) -> None:
        """Sets ``group.name`` to ``value`` (``group.a.b`` nests), with its reason."""
        group, name = key.split(".", 1)
        node = self.values.setdefault(group, {})
        *parents, leaf = name.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
        self.reasons.append((f"{key}={_shown(value)}", why))

    def choose(self, group: str, option: str, why: str) -> None:
        """Picks a config group's option, replacing an earlier choice and its reason."""
        self.defaults[group] = option
        self.reasons = [r for r in self.reasons if not r[0].startswith(f"{group}=")]
        self.reasons.append((f"{group}={option}", why))

    def get(self, key: str, default: Any = None) -> Any:
        node: Any = self.values
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return "null" if value is None else str(value)


# bytes per training sample of a network config on a patch: (model values, patch) -> bytes
SampleBytes = Callable[[dict[str, Any], list[int]], int]


def plan_from(
    fingerprint: Fingerprint,
    device: Device,
    sample_bytes: SampleBytes,
    orientation_matters: bool = False,
) -> Plan:
    """The plan for ``fingerprint`` on ``device``; ``sample_bytes`` estimates the activation
    memory of one training sample (``unet-lab plan``'s measure), ``orientation_matters``
    keeps left and right apart (no left-right flips)."""
    plan = Plan()
    if fingerprint.kind == "volumes":
        _plan_volumes(plan, fingerprint, device, sample_bytes, orientation_matters)
    else:
        _plan_images(plan, fingerprint, device, sample_bytes, orientation_matters)
    _plan_classes(plan, fingerprint)
    return plan


def _foreground(fingerprint: Fingerprint) -> list[Any]:
    return [c for c in fingerprint.classes[1:] if c.share > 0]


def _two_digits(factor: float) -> float:
    """``factor`` rounded down to two significant digits (1 and above: 1)."""
    if factor >= 1:
        return 1.0
    digits = 1 - math.floor(math.log10(factor))
    return math.floor(factor * 10**digits) / 10**digits


def _plan_images(
    plan: Plan, fp: Fingerprint, device: Device, sample_bytes: SampleBytes, fixed_lr: bool
) -> None:
    plan.choose("data", "folder", "2D images and masks from a folder")
    cap = 512 if device.gpu else 256
    short = float(np.median([min(c.shape) for c in fp.cases]))
    foreground = _foreground(fp)
    largest = max((diameter(c.object_size.get("p90", 0.0), 2) for c in foreground), default=0.0)
    depths = [c.depth for c in foreground if c.depth]
    scale = min(1.0, PATCHES_PER_SIDE * cap / short)
    why = f"the median shorter side ({short:g} px) spans about {PATCHES_PER_SIDE} patches"
    if largest and OBJECT_SHARE_OF_PATCH * cap / largest < scale:
        scale = OBJECT_SHARE_OF_PATCH * cap / largest
        why = f"large objects ({largest:.0f} px across, 90th percentile) fit in a {cap} px patch"
    if depths and scale * min(depths) < MIN_STRUCTURE_DEPTH:
        scale = min(1.0, MIN_STRUCTURE_DEPTH / min(depths))
        why = (f"the thinnest structures ({min(depths):.1f} px deep) keep "
               f"{MIN_STRUCTURE_DEPTH:g} px")  # fmt: skip
    scale = _two_digits(scale)
    plan.set("data.scale", scale, "native resolution: " + why if scale == 1 else why)
    sizes = {tuple(round(n * scale) for n in c.shape) for c in fp.cases}
    smallest = min(min(s) for s in sizes)
    whole = len(sizes) == 1 and len(set(next(iter(sizes)))) == 1 and smallest <= cap
    patch = None if whole else max(32, min(cap, smallest // 16 * 16))
    why = (f"whole {smallest} px images (all square, one size)" if whole
           else f"square patches of the smallest working side, at most {cap} px")  # fmt: skip
    context = math.ceil(OBJECT_CONTEXT * largest * scale / 16) * 16
    if patch is not None and largest and max(MIN_PATCH, context) < patch:
        # Small objects need little context: smaller patches make cheaper steps (more of them
        # in the budget), and a patch centred on foreground holds a larger share of it.
        patch = max(MIN_PATCH, context)
        why = (f"objects at most {largest * scale:.0f} px across (90th percentile): "
               f"{OBJECT_CONTEXT} diameters of context, at least {MIN_PATCH} px")  # fmt: skip
    plan.set("data.patch_size", patch, why)
    side = patch or smallest
    depth = max(1, min(5, int(math.log2(side / MIN_FEATURE_MAP))))
    width = 32 if device.gpu else 16
    plan.set("model.depth", depth, f"{side} px pooled to >= {MIN_FEATURE_MAP} px, at most 5")
    plan.set("model.width", width, "GPU: 32 channels at the top" if device.gpu
             else "CPU: 16 channels at the top (speed)")  # fmt: skip
    per_sample = sample_bytes({"depth": depth, "width": width, "spatial_dims": 2}, [side, side])
    by_memory = max(1, device.memory // max(1, per_sample))
    total = sum(round(c.shape[0] * scale) * round(c.shape[1] * scale) for c in fp.cases)
    by_data = max(2, int(0.05 * total / side**2))  # nnU-Net: a batch is <= 5 % of the data
    batch = max(2, min(by_memory, by_data, 32 if device.gpu else 8))
    plan.set(
        "data.batch_size", batch,
        f"{per_sample / 2**20:.0f} MiB of activations per sample in "
        f"{device.memory / 2**30:.1f} GiB allows {by_memory}; 5 % of the data {by_data}; "
        f"cap {32 if device.gpu else 8}",
    )  # fmt: skip
    means = np.asarray([c.mean for c in fp.cases])
    spread = float(np.mean(means.std(0) / np.maximum(np.abs(means.mean(0)), 1e-6)))
    colour = fp.channels == 3 and float(np.abs(np.diff(means, axis=1)).mean()) > 1e-3 * max(
        1.0, float(np.abs(means).mean())
    )
    normalization = "image" if spread > 0.25 else "dataset"
    plan.set(
        "data.normalization", normalization,
        f"image brightness varies between images (spread {spread:.2f} > 0.25): per image"
        if normalization == "image"
        else f"one intensity scale across images (spread {spread:.2f}): data set statistics",
    )  # fmt: skip
    rarest = min((c.share for c in foreground), default=1.0)
    small = [c for c in foreground if c.diameter * scale < side / 8]
    oversample, why = 0.0, "objects common and large enough to be hit by random patches"
    if patch is not None and rarest < 0.01:
        oversample, why = 0.5, f"the rarest class covers {100 * rarest:.2f} % of the pixels"
    elif patch is not None and (rarest < 0.05 or small):
        oversample, why = 0.33, (
            f"the rarest class covers {100 * rarest:.1f} %" if rarest < 0.05
            else f"{small[0].name} objects span < 1/8 of a patch"
        )  # fmt: skip
    if patch is None:
        why = "whole images: every object is in every sample"
    plan.set("data.foreground_oversample", oversample, why)
    plan.choose("augmentation", "medium", "flips, rotations, affine, brightness/contrast, gamma")
    _size_intensity_augmentation(plan, fp)
    if colour:
        plan.set("augmentation.train.transforms.vflip", None, "colour photographs: up and "
                 "down differ (sky, ground)")  # fmt: skip
        plan.set("augmentation.train.transforms.rotate90", None, "colour photographs keep "
                 "their upright orientation")  # fmt: skip
    if fixed_lr:
        plan.set("augmentation.train.transforms.hflip", None, "left and right matter (flag)")
        if not colour:
            plan.set("augmentation.train.transforms.rotate90", None, "left and right matter "
                     "(flag): a half turn puts left on the right")  # fmt: skip


def _size_intensity_augmentation(plan: Plan, fp: Fingerprint) -> None:
    """Narrows ``medium``'s brightness, contrast and gamma ranges so that none moves the mean
    intensity by more than one standard deviation of the data.

    Albumentations sizes them on the full range of the image type (a brightness shift of 0.2 is
    13,000 grey values in 16 bits), right for photographs that span that range but several
    standard deviations for data that occupy a narrow band (tiny spots 3 sd above a 16-bit
    background were lost under such shifts). Contrast ``c`` moves the mean by ``mean * c``,
    gamma ``g`` by about ``|mean ln mean| * g``.
    """
    # The scale the loader divides by (unet_lab.data.dataset): the integer type's maximum.
    full = max((float(np.iinfo(d).max) for d in fp.dtypes if np.issubdtype(d, np.integer)),
               default=1.0)  # fmt: skip
    stats = [channel["overall"] for channel in fp.intensity]
    if not stats or not all("std" in s for s in stats):  # no pixel was sampled
        return
    spread = min(s["std"] for s in stats) / full
    mean = float(np.clip(np.mean([s["mean"] for s in stats]) / full, 1e-3, 0.999))
    limits = {
        "brightness_contrast.brightness_limit": (spread, MEDIUM_BRIGHTNESS),
        "brightness_contrast.contrast_limit": (spread / mean, MEDIUM_CONTRAST),
        "gamma.gamma_limit": (spread / abs(mean * math.log(mean)), MEDIUM_GAMMA),
    }
    band = f"intensities spread {100 * spread:.1f} % of the {fp.dtypes[0]} range"
    for key, (limit, preset) in limits.items():
        if limit >= preset:
            continue
        limit = _two_digits(limit)
        value: Any = (
            [round(100 * (1 - limit)), round(100 * (1 + limit))] if "gamma" in key else limit
        )
        why = f"{band}: moves the mean by at most one standard deviation (preset ±{preset:g})"
        plan.set(f"augmentation.train.transforms.{key}", value, why)


def _plan_volumes(
    plan: Plan, fp: Fingerprint, device: Device, sample_bytes: SampleBytes, fixed_lr: bool
) -> None:
    plan.choose("data", "volumes", "3D volumes and label maps from a folder")
    spacings = [c.spacing for c in fp.cases if c.spacing]
    target = [float(s) for s in target_spacing(spacings)]
    plan.set("data.target_spacing", target, "median spacing (the coarse axis: its 10th "
             "percentile where it is > 3x the finest), as nnU-Net")  # fmt: skip
    shapes = np.asarray(
        [np.asarray(c.shape) * np.asarray(c.spacing) / target for c in fp.cases if c.spacing]
    )
    median = [max(8, round(float(v))) for v in np.median(shapes, axis=0)]
    budget = 2**21 if device.gpu else 2**18  # voxels of a patch: 128^3 on a GPU, 64^3 on a CPU
    patch = list(median)
    while math.prod(patch) > budget:
        extents = [p * t for p, t in zip(patch, target, strict=True)]
        axis = int(np.argmax(extents))  # shrink the longest physical extent first
        patch[axis] = max(8, int(patch[axis] * 0.9))
    depth = 1
    deepest = 5 if device.gpu else MAX_DEPTH_3D_CPU
    for candidate in range(deepest, 0, -1):
        grid = pooling_plan(candidate, 3, target).grid
        if all(g == 1 or p / g >= MIN_FEATURE_MAP for p, g in zip(patch, grid, strict=True)):
            depth = candidate
            break
    grid = pooling_plan(depth, 3, target).grid
    # Up to the pooling grid (a small case fits whole, padded) unless that breaks the budget.
    up = [-(-p // g) * g for p, g in zip(patch, grid, strict=True)]
    patch = (
        up if math.prod(up) <= budget else [p // g * g for p, g in zip(patch, grid, strict=True)]
    )
    plan.set(
        "data.patch_size", patch,
        f"the median resampled case ({'x'.join(map(str, median))}) within {budget} voxels "
        f"(the longest physical extent shrunk first), on the pooling grid "
        f"{'x'.join(map(str, grid))}",
    )  # fmt: skip
    plan.set("model.spacing", "auto", "pooling and kernels per axis from the target spacing")
    plan.set("model.depth", depth, f"pooled axes keep >= {MIN_FEATURE_MAP} voxels, at most "
             + ("5" if device.gpu else f"{MAX_DEPTH_3D_CPU} on a CPU (a short run of a few "
                "hundred steps learns faster with fewer levels)"))  # fmt: skip
    width = 32 if device.gpu else 16
    plan.set("model.width", width, "GPU: 32 channels at the top" if device.gpu
             else "CPU: 16 channels at the top (speed)")  # fmt: skip
    per_sample = sample_bytes(
        {"depth": depth, "width": width, "spatial_dims": 3, "spacing": target}, patch
    )
    batch = 2 if per_sample * 2 <= device.memory else 1
    plan.set("data.batch_size", batch, f"nnU-Net's 2 patches ({per_sample / 2**20:.0f} MiB "
             f"of activations each, {device.memory / 2**30:.1f} GiB available)")  # fmt: skip
    stats = fp.intensity[0]["overall"]
    # Air is -1000 HU: CT holds values far below zero, MR (and most else) does not.
    ct = stats.get("min", 0) <= -500 and stats.get("p99_5", 0) >= 100
    plan.set(
        "data.normalization", "ct" if ct else "mr",
        "Hounsfield units (air at -1000): CT clipping to foreground percentiles and z-score"
        if ct else "no Hounsfield scale: z-score per volume (MR and others)",
    )  # fmt: skip
    foreground = _foreground(fp)
    rarest = min((c.share for c in foreground), default=1.0)
    oversample = 0.5 if rarest < 0.001 else 0.33
    plan.set(
        "data.foreground_oversample", oversample,
        f"the rarest class covers {100 * rarest:.3f} % of the voxels" if oversample == 0.5
        else "nnU-Net's one patch in three centred on foreground",
    )  # fmt: skip
    plan.choose("augmentation", "volume_medium", "nnU-Net-like 3D augmentation")
    if fixed_lr:
        plan.set("augmentation.train.transforms.flip.axes", [0, 1],
                 "left and right matter (flag): no flips along W")  # fmt: skip
        plan.set("augmentation.train.transforms.rotate90", None, "left and right matter "
                 "(flag): a half turn in the (H, W) plane puts left on the right")  # fmt: skip


def _plan_classes(plan: Plan, fp: Fingerprint) -> None:
    """Class weights and whether class 0 is background: the same rules for images and
    volumes."""
    background = fp.classes[0]
    named = background.name.lower() in BACKGROUND_NAMES
    is_background = named and background.largest >= 0.9
    plan.set(
        "module.include_background", not is_background,
        f"class 0 ({background.name}) is the largest class in "
        f"{100 * background.largest:.0f} % of the cases"
        + (" and named as background: left out of mean scores" if is_background
           else ("" if named else ", but not named as background") + ": a class like the others"),
    )  # fmt: skip
    foreground = _foreground(fp)
    if len(foreground) == 1 and foreground[0].share < RARE_SHARE:
        # Dice alone balances one class, but on a very rare one the cross-entropy of the
        # background dominates the first steps and the network predicts background everywhere.
        rare = foreground[0]
        weight = round(min(10.0, math.sqrt(background.share / rare.share)), 2)
        weights = [weight if c is rare else 1.0 for c in fp.classes]
        plan.set("loss.class_weights", weights, f"{rare.name} covers {100 * rare.share:.3f} % "
                 "of the pixels: cross-entropy weight sqrt(background share / its share), at "
                 "most 10")  # fmt: skip
        return
    if len(foreground) < 2:
        plan.set("loss.class_weights", None, "one foreground class: Dice balances it")
        return
    reference_share = max(c.share for c in foreground)
    reference_size = max(c.diameter for c in foreground) or 1.0
    weights = [1.0]
    for cls in fp.classes[1:]:
        if cls.share <= 0:
            weights.append(1.0)
            continue
        rare = math.sqrt(reference_share / cls.share)
        small = math.sqrt(reference_size / max(cls.diameter, 1.0))
        weights.append(round(min(10.0, max(1.0, rare * small)), 2))
    if max(weights) < 1.5:
        plan.set("loss.class_weights", None, "foreground classes of similar share and size")
        return
    plan.set(
        "loss.class_weights",
        weights,
        "cross-entropy weight sqrt(share ratio x size ratio) against the most common, largest "
        "class: small rare objects get more",
    )
