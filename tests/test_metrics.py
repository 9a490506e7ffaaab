"""Scores against torchmetrics' own classification metrics and hand-made cases."""

import math

import pytest
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_f1_score,
    multiclass_jaccard_index,
)

from unet_lab.metrics.scores import SegmentationScores, scores_from_confusion

NAMES = ["bg", "a", "b", "c"]


def _scores(preds, target, **kwargs) -> dict[str, float]:
    metric = SegmentationScores(num_classes=4, class_names=NAMES, **kwargs)
    metric.update(preds, target)
    return {k: float(v) for k, v in metric.compute().items()}


def test_matches_independent_computation_on_random_masks() -> None:
    torch.manual_seed(0)
    preds, target = torch.randint(0, 4, (3, 32, 32)), torch.randint(0, 4, (3, 32, 32))
    scores = _scores(preds, target)
    dice = multiclass_f1_score(preds, target, 4, average="none", multidim_average="global")
    iou = multiclass_jaccard_index(preds, target, 4, average="none")
    for i, name in enumerate(NAMES):
        assert scores[f"dice_{name}"] == pytest.approx(float(dice[i]), rel=1e-6)
        assert scores[f"iou_{name}"] == pytest.approx(float(iou[i]), rel=1e-6)
    assert scores["dice"] == pytest.approx(float(dice[1:].mean()), rel=1e-6)
    assert scores["iou"] == pytest.approx(float(iou[1:].mean()), rel=1e-6)
    assert scores["acc"] == pytest.approx(
        float(multiclass_accuracy(preds, target, 4, average="micro"))
    )


def test_dice_by_hand() -> None:
    target = torch.tensor([[0, 1, 1, 1]])
    preds = torch.tensor([[0, 1, 1, 0]])
    scores = _scores(preds, target)
    assert scores["dice_a"] == pytest.approx(2 * 2 / (3 + 2))
    assert scores["iou_a"] == pytest.approx(2 / 3)
    assert scores["dice_bg"] == pytest.approx(2 * 1 / (1 + 2))
    assert scores["acc"] == pytest.approx(3 / 4)


def test_class_absent_from_truth_and_prediction_is_nan_and_left_out() -> None:
    target = torch.tensor([[0, 1, 1, 2]])
    preds = torch.tensor([[0, 1, 0, 2]])
    scores = _scores(preds, target)
    assert math.isnan(scores["dice_c"]) and math.isnan(scores["iou_c"])
    assert scores["dice"] == pytest.approx((2 * 1 / 3 + 1.0) / 2)


def test_class_predicted_but_absent_from_truth_scores_zero() -> None:
    scores = _scores(torch.tensor([[3, 1]]), torch.tensor([[0, 1]]))
    assert scores["dice_c"] == 0.0


def test_background_in_the_mean_when_asked() -> None:
    target = torch.tensor([[0, 0, 1, 1]])
    preds = torch.tensor([[0, 1, 1, 1]])
    scores = _scores(preds, target, include_background=True)
    assert scores["dice"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_ignore_index_pixels_are_left_out() -> None:
    target = torch.tensor([[0, 1, 255, 255]])
    preds = torch.tensor([[0, 1, 2, 3]])
    scores = _scores(preds, target, ignore_index=255)
    assert scores["acc"] == 1.0
    assert math.isnan(scores["dice_b"])


def test_accumulating_batches_equals_one_computation() -> None:
    torch.manual_seed(2)
    preds, target = torch.randint(0, 4, (4, 16, 16)), torch.randint(0, 4, (4, 16, 16))
    metric = SegmentationScores(num_classes=4, class_names=NAMES)
    for i in range(4):
        metric.update(preds[i : i + 1], target[i : i + 1])
    whole = _scores(preds, target)
    assert {k: float(v) for k, v in metric.compute().items()} == pytest.approx(whole)


def test_scores_from_confusion_counts_rows_as_truth() -> None:
    confmat = torch.tensor([[5, 1], [2, 4]])  # truth 1: 4 right, 2 predicted as 0
    scores = scores_from_confusion(confmat, ["bg", "fg"])
    assert float(scores["dice_fg"]) == pytest.approx(2 * 4 / (6 + 5))
