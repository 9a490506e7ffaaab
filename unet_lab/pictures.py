"""Pictures for people: images as RGB, label maps in colour, overlays and side-by-side rows;
and ``predictions.png``, what a run learned at a glance: a few validation images, one row each
(the image, its true mask and the best checkpoint's prediction in class colours, with that
image's mean foreground Dice), above a legend of the class colours."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from unet_lab.data.dataset import as_unit_float

# Distinct colours for class indices 1.. (class 0, background, stays black).
COLOURS = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ],
    np.uint8,
)
GAP = 4


def display(image: np.ndarray) -> np.ndarray:
    """An image (HWC or HW; integer, or float in [0, 1]) as RGB uint8: grey is repeated, more
    than 3 channels show the first 3."""
    image = as_unit_float(image if image.ndim == 3 else image[..., None])
    image = np.clip(image, 0.0, 1.0)
    image = np.repeat(image[..., :1], 3, axis=2) if image.shape[2] < 3 else image[..., :3]
    return (image * 255).round().astype(np.uint8)


def colour(labels: np.ndarray) -> np.ndarray:
    """A label map as RGB, one colour per class."""
    return COLOURS[np.asarray(labels).astype(np.int64) % len(COLOURS)]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with non-background classes tinted in their colour."""
    picture = display(image).astype(np.float32)
    tinted = np.where(
        (np.asarray(labels) > 0)[..., None],
        (1 - alpha) * picture + alpha * colour(labels).astype(np.float32),
        picture,
    )
    return tinted.round().astype(np.uint8)


def side_by_side(pictures: Sequence[np.ndarray]) -> np.ndarray:
    """RGB pictures in a row, top-aligned, with white gaps."""
    height = max(p.shape[0] for p in pictures)
    tiles = []
    for picture in pictures:
        padded = np.full((height, picture.shape[1] + GAP, 3), 255, np.uint8)
        padded[: picture.shape[0], : picture.shape[1]] = picture
        tiles.append(padded)
    return np.concatenate(tiles, axis=1)


def write_rgb(path: Path, picture: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))


# predictions.png
IGNORED = np.array([128, 128, 128], np.uint8)
# Small images are enlarged (nearest neighbour) to at least this height so they stay legible;
# large ones are shrunk to at most MAX_SIDE.
MIN_SIDE = 160
MAX_SIDE = 320
ROW_GAP = 6
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
    x = ROW_GAP
    for rgb, name in entries:
        text_width = cv2.getTextSize(name, FONT, FONT_SCALE, 1)[0][0]
        needed = 14 + 4 + text_width + 2 * ROW_GAP
        if x + needed > width and x > ROW_GAP:
            lines.append(line)
            line = np.full((LINE, width, 3), 255, np.uint8)
            x = ROW_GAP
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
        row = np.full((height, 3 * tile_width + 4 * ROW_GAP, 3), 255, np.uint8)
        for column, tile in enumerate(tiles):
            x = ROW_GAP + column * (tile_width + ROW_GAP)
            row[:, x : x + tile_width] = tile
        caption = "prediction" + ("" if np.isnan(dice) else f" (Dice {dice:.3f})")
        header = _text_strip(
            row.shape[1],
            [
                (ROW_GAP + column * (tile_width + ROW_GAP), text)
                for column, text in enumerate(("image", "truth", caption))
            ],
        )
        rows.append(np.concatenate([header, row], axis=0))
    width = max(row.shape[1] for row in rows)
    padded = [
        np.pad(row, ((0, ROW_GAP), (0, width - row.shape[1]), (0, 0)), constant_values=255)
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
