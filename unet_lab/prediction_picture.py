"""``predictions.png``: what a run learned, as a picture a person reads at a glance.

A few validation images, one row each: the image, its true mask and the best checkpoint's
prediction in class colours (with that image's mean foreground Dice), above a legend of the
class colours. Written into every run folder at the end of training, with or without W&B.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from unet_lab.visual import colour, display, write_rgb

# Pixels whose true label is not a class (ignore_index) are shown in this grey.
IGNORED = np.array([128, 128, 128], np.uint8)
# Small images are enlarged (nearest neighbour) to at least this height so they stay legible;
# large ones are shrunk to at most MAX_SIDE.
MIN_SIDE = 160
MAX_SIDE = 320
GAP = 6
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.45
LINE = 20  # pixels per line of text


def label_picture(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """A label map as RGB: class colours, and grey for values that are not classes."""
    picture = colour(labels)
    picture[np.asarray(labels) >= num_classes] = IGNORED
    return picture


def foreground_dice(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> float:
    """Mean Dice over the foreground classes present in the truth or the prediction of one
    image (NaN when neither has any); ignored pixels are left out."""
    valid = truth < num_classes
    scores = []
    for k in range(1, num_classes):
        t, p = (truth == k) & valid, (prediction == k) & valid
        total = int(t.sum() + p.sum())
        if total:
            scores.append(2 * int((t & p).sum()) / total)
    return float(np.mean(scores)) if scores else float("nan")


def _resized(picture: np.ndarray) -> np.ndarray:
    """The picture scaled (nearest neighbour, so labels stay sharp) into the legible range."""
    height, width = picture.shape[:2]
    factor = 1.0
    if max(height, width) > MAX_SIDE:
        factor = MAX_SIDE / max(height, width)
    elif height < MIN_SIDE:
        factor = min(MIN_SIDE / height, MAX_SIDE / max(height, width))
    if factor == 1.0:
        return picture
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(picture, size, interpolation=cv2.INTER_NEAREST)


def _text_strip(width: int, texts: Sequence[tuple[int, str]]) -> np.ndarray:
    """A white strip one line high with ``(x, text)`` written on it."""
    strip = np.full((LINE, width, 3), 255, np.uint8)
    for x, text in texts:
        cv2.putText(strip, text, (x, LINE - 6), FONT, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def _legend(width: int, class_names: Sequence[str], ignored: bool) -> np.ndarray:
    """Colour swatches with class names, wrapped over as many lines as needed."""
    entries = [(colour(np.array(k)).tolist(), name) for k, name in enumerate(class_names)]
    if ignored:
        entries.append((IGNORED.tolist(), "ignored"))
    lines: list[np.ndarray] = []
    line = np.full((LINE, width, 3), 255, np.uint8)
    x = GAP
    for rgb, name in entries:
        text_width = cv2.getTextSize(name, FONT, FONT_SCALE, 1)[0][0]
        needed = 14 + 4 + text_width + 2 * GAP
        if x + needed > width and x > GAP:
            lines.append(line)
            line = np.full((LINE, width, 3), 255, np.uint8)
            x = GAP
        cv2.rectangle(line, (x, 4), (x + 13, LINE - 4), rgb, -1)
        cv2.rectangle(line, (x, 4), (x + 13, LINE - 4), (0, 0, 0), 1)
        cv2.putText(line, name, (x + 18, LINE - 6), FONT, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
        x += needed
    lines.append(line)
    return np.concatenate(lines, axis=0)


def prediction_grid(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    class_names: Sequence[str],
) -> np.ndarray:
    """The picture as an RGB array: a header, one row per image (image | truth | prediction),
    and the legend.

    Args:
        images: decoded images ``(H, W[, C])``, integer or float in [0, 1].
        truths: true label maps ``(H, W)``; values ``>= len(class_names)`` are ignored pixels.
        predictions: predicted label maps ``(H, W)``, each the size of its image.
        class_names: one name per class, in class order.
    """
    num_classes = len(class_names)
    rows = []
    for image, truth, prediction in zip(images, truths, predictions, strict=True):
        dice = foreground_dice(truth, prediction, num_classes)
        tiles = [
            _resized(display(image)),
            _resized(label_picture(truth, num_classes)),
            _resized(label_picture(prediction, num_classes)),
        ]
        height, tile_width = tiles[0].shape[0], tiles[0].shape[1]
        row = np.full((height, 3 * tile_width + 4 * GAP, 3), 255, np.uint8)
        for column, tile in enumerate(tiles):
            x = GAP + column * (tile_width + GAP)
            row[:, x : x + tile_width] = tile
        caption = "prediction" + ("" if np.isnan(dice) else f" (Dice {dice:.3f})")
        header = _text_strip(
            row.shape[1],
            [
                (GAP + column * (tile_width + GAP), text)
                for column, text in enumerate(("image", "truth", caption))
            ],
        )
        rows.append(np.concatenate([header, row], axis=0))
    width = max(row.shape[1] for row in rows)
    padded = [
        np.pad(row, ((0, GAP), (0, width - row.shape[1]), (0, 0)), constant_values=255)
        for row in rows
    ]
    ignored = any(bool((np.asarray(t) >= num_classes).any()) for t in truths)
    return np.concatenate([*padded, _legend(width, class_names, ignored)], axis=0)


def write_prediction_picture(
    path: Path,
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    class_names: Sequence[str],
) -> Path:
    """Writes :func:`prediction_grid` as a PNG to ``path`` and returns ``path``."""
    write_rgb(path, prediction_grid(images, truths, predictions, class_names))
    return path
