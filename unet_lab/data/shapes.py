"""Procedural images of textured shapes on textured, noisy backgrounds, with label masks.

Every sample is a pure function of ``(seed, split, index)``, so data sets are reproducible and
need nothing downloaded. Class ``k`` (1..) is a shape kind; colours and textures are random, so a
model must learn shape, not intensity. Objects are whole (inside the image, not overlapping).
"""

from __future__ import annotations

import cv2
import numpy as np

SHAPE_KINDS = ("ellipse", "rectangle", "triangle", "ring", "cross")
PLACEMENT_TRIES = 20


def _smooth_noise(rng: np.random.Generator, size: int, channels: int, cells: int) -> np.ndarray:
    """Random field in [0, 1] with structure about ``size / cells`` pixels across."""
    coarse = rng.random((cells, cells, channels), dtype=np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(field.reshape(size, size, channels), 0.0, 1.0)


def _texture(rng: np.random.Generator, size: int, channels: int, base: np.ndarray) -> np.ndarray:
    """A colour ``base`` modulated by coarse and fine noise."""
    coarse = _smooth_noise(rng, size, channels, int(rng.integers(3, 6))) - 0.5
    fine = _smooth_noise(rng, size, channels, int(rng.integers(12, 24))) - 0.5
    return base + 0.35 * coarse + 0.2 * fine


def _shape_mask(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    radius = rng.uniform(0.07, 0.17) * size
    center = rng.uniform(radius, size - radius, 2)
    angle = rng.uniform(0, 360)
    canvas = np.zeros((size, size), np.uint8)
    c = (round(center[0]), round(center[1]))
    if kind in ("ellipse", "ring"):
        axes = (int(radius), int(radius * rng.uniform(0.6, 1.0)))
        cv2.ellipse(canvas, c, axes, angle, 0, 360, 1, -1)
        if kind == "ring":
            inner = (int(axes[0] * 0.55), int(axes[1] * 0.55))
            cv2.ellipse(canvas, c, inner, angle, 0, 360, 0, -1)
    elif kind == "rectangle":
        box = ((center[0], center[1]), (2 * radius, 2 * radius * rng.uniform(0.5, 1.0)), angle)
        cv2.fillPoly(canvas, [np.round(cv2.boxPoints(box)).astype(np.int32)], 1)
    elif kind == "triangle":
        corners = np.deg2rad(angle + np.array([0.0, 120.0, 240.0]) + rng.uniform(-15, 15, 3))
        points = center + radius * np.stack([np.cos(corners), np.sin(corners)], axis=1)
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    else:  # cross
        for turn in (0.0, 90.0):
            box = ((center[0], center[1]), (2 * radius, 0.7 * radius), angle + turn)
            cv2.fillPoly(canvas, [np.round(cv2.boxPoints(box)).astype(np.int32)], 1)
    return canvas.astype(bool)


def _placed_shape(
    rng: np.random.Generator, kind: str, size: int, taken: np.ndarray
) -> np.ndarray | None:
    """A shape mask inside the image that does not touch ``taken``, or None after
    ``PLACEMENT_TRIES`` tries.

    Objects never overlap nor leave the image, so every shape is whole and its kind can be told
    from the image (an ellipse half hidden by a rectangle has no kind one could learn)."""
    for _ in range(PLACEMENT_TRIES):
        region = _shape_mask(rng, kind, size)
        on_border = region[[0, -1]].any() or region[:, [0, -1]].any()
        if not on_border and not (region & taken).any():
            return region
    return None


def render_shapes(
    rng: np.random.Generator,
    size: int,
    channels: int,
    num_classes: int,
    max_objects: int,
    noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One sample: a uint8 image (size, size, channels) and a uint8 label mask (size, size).

    With ``num_classes == 2`` every shape kind is class 1 (binary segmentation); otherwise class
    ``k`` is ``SHAPE_KINDS[k - 1]``.
    """
    background = rng.uniform(0.2, 0.8, channels).astype(np.float32)
    image = _texture(rng, size, channels, background)
    mask = np.zeros((size, size), np.uint8)
    # Where another object may not start: the objects so far, grown by a gap of 2 px.
    taken = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(1, num_classes))
        kind = SHAPE_KINDS[int(rng.integers(0, 3))] if num_classes == 2 else SHAPE_KINDS[label - 1]
        region = _placed_shape(rng, kind, size, taken.astype(bool))
        if region is None:  # no room left: fewer objects
            break
        taken = np.maximum(taken, cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)))
        # Keep objects visible: their colour differs from the background by at least 0.25.
        offset = rng.uniform(0.25, 0.45, channels) * rng.choice([-1.0, 1.0])
        colour = np.clip(background + offset, 0.0, 1.0)
        colour = np.where(np.abs(colour - background) < 0.2, background - offset, colour)
        image[region] = _texture(rng, size, channels, colour.astype(np.float32))[region]
        mask[region] = label
    image = cv2.GaussianBlur(image, (0, 0), 0.8).reshape(size, size, channels)
    image += rng.normal(0.0, noise, image.shape).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8), mask
