"""The fingerprint of a data set: what the planning rules need to know about it, read one case
at a time (never the whole set in memory).

Per case: its size (and, for volumes, its spacing after reorientation and cropping to the
non-zero voxels), channels and stored type, per-channel mean and standard deviation, voxels per
class, and per foreground class the sizes of its connected objects and how deep its structures
are (median distance of a class voxel to another class). Over the set: intensity statistics per
channel over all voxels and over the foreground (sampled, as nnU-Net samples), class shares,
presence and how often each class is the largest, and a hash of the files that training checks
to warn when the data changed since planning.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from unet_lab.data.files import DataError, files_hash

# Values sampled per case and channel for the intensity percentiles (nnU-Net samples 10,000
# foreground voxels per case).
INTENSITY_SAMPLES = 10_000
FINGERPRINT_VERSION = 1


@dataclass
class CaseFacts:
    """One case, as the fingerprint records it."""

    name: str
    shape: list[int]  # spatial: (H, W) or (D, H, W) after cropping to the non-zero voxels
    spacing: list[float] | None  # mm per spatial axis (volumes), None for images
    dtype: str
    mean: list[float]  # per channel, over all voxels
    std: list[float]
    class_voxels: list[int]
    ignored_voxels: int


@dataclass
class ClassFacts:
    """One class over the set. Object sizes are in voxels at the files' own resolution;
    ``diameter`` is that of a disk (ball) of the median object's size."""

    name: str
    share: float  # of all labelled (not ignored) voxels
    presence: float  # share of cases that hold it
    largest: float  # share of cases in which it is the largest class
    objects_per_case: float  # median over the cases that hold it
    object_size: dict[str, float] = field(default_factory=dict)  # p10, median, p90 (voxels)
    diameter: float = 0.0  # of the median object, voxels
    depth: float | None = None  # median distance to another class (voxels); None for class 0


@dataclass
class Fingerprint:
    """What autoplan knows about a data set (``fingerprint.json``)."""

    kind: str  # images | volumes
    root: str
    files_hash: str
    num_classes: int
    class_names: list[str]
    channels: int
    dtypes: list[str]
    sizes_vary: bool
    median_shape: list[float]
    median_spacing: list[float] | None
    intensity: list[dict[str, dict[str, float]]]  # per channel: overall / foreground stats
    classes: list[ClassFacts]
    cases: list[CaseFacts]
    version: int = FINGERPRINT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @staticmethod
    def from_json(text: str) -> Fingerprint:
        data = json.loads(text)
        data["classes"] = [ClassFacts(**c) for c in data["classes"]]
        data["cases"] = [CaseFacts(**c) for c in data["cases"]]
        return Fingerprint(**data)

    @property
    def spatial_dims(self) -> int:
        return 3 if self.kind == "volumes" else 2


@dataclass
class _Sums:
    """What the set's statistics accumulate, case by case."""

    overall: list[list[np.ndarray]]  # per channel, sampled values per case
    foreground: list[list[np.ndarray]]
    objects: dict[int, list[int]]  # class -> object sizes
    objects_per_case: dict[int, list[int]]
    depths: dict[int, list[float]]
    largest: list[int]


Reader = Callable[[Any], tuple[np.ndarray, np.ndarray, list[float] | None]]


def fingerprint_cases(
    kind: str,
    root: Path,
    cases: Sequence[Any],
    names: Sequence[str],
    read: Reader,
    class_names: Sequence[str],
    ignore_index: int | None,
    files: Iterable[Path],
    seed: int = 0,
) -> Fingerprint:
    """Reads every case once through ``read(case) -> (image (C, *spatial), labels (*spatial),
    spacing or None)`` and summarizes the set.

    Args:
        kind: ``images`` or ``volumes``.
        root: the data folder.
        cases: what ``read`` takes, one per case.
        names: one name per case.
        read: a case's channels-first image, its class indices and its spacing.
        class_names: one per class.
        ignore_index: a label value that is not a class (left out of the shares).
        files: every file of the data set, for :func:`files_hash`.
        seed: seeds the intensity sampling.
    """
    rng = np.random.default_rng(seed)
    num_classes = len(class_names)
    facts: list[CaseFacts] = []
    sums: _Sums | None = None
    for case, name in zip(cases, names, strict=True):
        image, labels, spacing = read(case)
        if sums is None:
            channels = range(image.shape[0])
            sums = _Sums([[] for _ in channels], [[] for _ in channels], {}, {}, {}, [])
        if image.shape[0] != len(sums.overall):
            raise DataError(
                f"{root}: case {name} has {image.shape[0]} channel(s), but {names[0]} has "
                f"{len(sums.overall)}"
            )
        facts.append(_case_facts(name, image, labels, spacing, num_classes, ignore_index))
        _accumulate(sums, image, labels, num_classes, spacing, rng)
    if sums is None:
        raise ValueError(f"{root}: no labelled cases to fingerprint")
    return _summary(kind, root, facts, sums, class_names, files)


def _case_facts(
    name: str,
    image: np.ndarray,
    labels: np.ndarray,
    spacing: list[float] | None,
    num_classes: int,
    ignore_index: int | None,
) -> CaseFacts:
    values = image.reshape(image.shape[0], -1).astype(np.float64)
    kept = labels[labels != ignore_index] if ignore_index is not None else labels
    counts = np.bincount(kept.ravel(), minlength=num_classes)[:num_classes]
    return CaseFacts(
        name=name,
        shape=[int(n) for n in labels.shape],
        spacing=spacing,
        dtype=str(image.dtype),
        mean=[float(v) for v in values.mean(1)],
        std=[float(v) for v in values.std(1)],
        class_voxels=[int(c) for c in counts],
        ignored_voxels=int((labels == ignore_index).sum()) if ignore_index is not None else 0,
    )


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(values) > INTENSITY_SAMPLES:
        values = values[rng.choice(len(values), INTENSITY_SAMPLES, replace=False)]
    return values.astype(np.float32)


def _accumulate(
    sums: _Sums,
    image: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    spacing: list[float] | None,
    rng: np.random.Generator,
) -> None:
    foreground = (labels > 0) & (labels < num_classes)
    for channel, values in enumerate(image):
        sums.overall[channel].append(_sample(values.ravel(), rng))
        sums.foreground[channel].append(_sample(values[foreground], rng))
    counts = np.bincount(labels[labels < num_classes].ravel(), minlength=num_classes)
    sums.largest.append(int(np.argmax(counts)))
    for label in range(1, num_classes):
        inside = labels == label
        if not inside.any():
            continue
        components, count = ndimage.label(inside)
        sizes = np.bincount(components.ravel())[1:]
        sums.objects.setdefault(label, []).extend(int(s) for s in sizes)
        sums.objects_per_case.setdefault(label, []).append(int(count))
        if not inside.all():
            # Depth in voxels (spacing left out: the network sees voxels).
            distance = ndimage.distance_transform_edt(inside)
            sums.depths.setdefault(label, []).append(float(np.median(distance[inside])))


def _statistics(samples: list[np.ndarray]) -> dict[str, float]:
    values = np.concatenate(samples) if samples else np.zeros(0, np.float32)
    if not len(values):
        return {}
    low, high = np.percentile(values, [0.5, 99.5])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "p00_5": float(low),
        "p99_5": float(high),
    }


def _summary(
    kind: str,
    root: Path,
    facts: list[CaseFacts],
    sums: _Sums,
    class_names: Sequence[str],
    files: Iterable[Path],
) -> Fingerprint:
    num_classes = len(class_names)
    totals = np.sum([f.class_voxels for f in facts], axis=0).astype(np.float64)
    labelled = max(1.0, float(totals.sum()))
    dims = len(facts[0].shape)
    classes = []
    for label, name in enumerate(class_names):
        sizes = np.asarray(sums.objects.get(label, []), np.float64)
        median_size = float(np.median(sizes)) if len(sizes) else 0.0
        classes.append(
            ClassFacts(
                name=name,
                share=float(totals[label] / labelled),
                presence=float(np.mean([f.class_voxels[label] > 0 for f in facts])),
                largest=float(np.mean([largest == label for largest in sums.largest])),
                objects_per_case=float(np.median(sums.objects_per_case.get(label, [0]))),
                object_size=_percentiles(sizes),
                diameter=diameter(median_size, dims),
                depth=float(np.median(sums.depths[label])) if label in sums.depths else None,
            )
        )
    spacings = [f.spacing for f in facts if f.spacing is not None]
    return Fingerprint(
        kind=kind,
        root=str(root),
        files_hash=files_hash(files, root),
        num_classes=num_classes,
        class_names=list(class_names),
        channels=len(sums.overall),
        dtypes=sorted({f.dtype for f in facts}),
        sizes_vary=len({tuple(f.shape) for f in facts}) > 1,
        median_shape=[float(v) for v in np.median([f.shape for f in facts], axis=0)],
        median_spacing=[float(v) for v in np.median(spacings, axis=0)] if spacings else None,
        intensity=[
            {"overall": _statistics(o), "foreground": _statistics(f)}
            for o, f in zip(sums.overall, sums.foreground, strict=True)
        ],
        classes=classes,
        cases=facts,
    )


def _percentiles(sizes: np.ndarray) -> dict[str, float]:
    if not len(sizes):
        return {}
    p10, median, p90 = np.percentile(sizes, [10, 50, 90])
    return {"p10": float(p10), "median": float(median), "p90": float(p90)}


def diameter(size: float, dims: int) -> float:
    """The diameter of a disk (2D) or ball (3D) of ``size`` pixels (voxels)."""
    if size <= 0:
        return 0.0
    if dims == 2:
        return 2 * math.sqrt(size / math.pi)
    return (6 * size / math.pi) ** (1 / 3)
