"""The ISBI 2012 measures: foreground-restricted Rand error and pixel error over thresholds."""

import itertools

import numpy as np
import pytest

from unet_lab.metrics.regions import best_over_thresholds, rand_scores, regions


def _rand_by_pairs(true_regions: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Precision and recall counted pair by pair (ordered pairs, a pixel paired with itself
    included) over the pixels inside true regions; predicted 0 = a region of its own."""
    inside = np.flatnonzero(true_regions.ravel() > 0)
    t, p = true_regions.ravel()[inside], predicted.ravel()[inside]
    both = same_true = same_predicted = 0
    for i, j in itertools.product(range(len(t)), repeat=2):
        true_pair = t[i] == t[j]
        predicted_pair = i == j or (p[i] == p[j] and p[i] != 0)
        both += true_pair and predicted_pair
        same_true += true_pair
        same_predicted += predicted_pair
    return both / same_predicted, both / same_true


def test_identical_regions_score_perfectly() -> None:
    labels = np.array([[1, 1, 0, 2], [1, 1, 0, 2]])
    scores = rand_scores(labels, labels)
    assert scores.error == 0.0 and scores.precision == scores.recall == 1.0


def test_a_merge_costs_precision_and_a_split_costs_recall() -> None:
    two = np.array([[1, 1, 2, 2]])
    one = np.array([[1, 1, 1, 1]])
    merged = rand_scores(two, one)  # sizes 2+2 in one region: (4 + 4) / 16
    assert merged.precision == pytest.approx(0.5) and merged.recall == 1.0
    assert merged.error == pytest.approx(1 / 3)
    split = rand_scores(one, two)
    assert split.precision == 1.0 and split.recall == pytest.approx(0.5)


def test_true_boundary_pixels_are_left_out_and_predicted_ones_are_singletons() -> None:
    truth = np.array([[1, 1, 0, 2, 2]])
    assert rand_scores(truth, np.array([[3, 3, 3, 4, 4]])).error == 0.0  # differs on 0 only
    all_boundary = rand_scores(np.array([[1, 1, 1, 1]]), np.zeros((1, 4), int))
    assert all_boundary.precision == 1.0 and all_boundary.recall == pytest.approx(4 / 16)


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_pair_counting_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, (6, 7))
    predicted = rng.integers(0, 5, (6, 7))
    scores = rand_scores(truth, predicted)
    precision, recall = _rand_by_pairs(truth, predicted)
    assert scores.precision == pytest.approx(precision)
    assert scores.recall == pytest.approx(recall)


def test_regions_are_4_connected() -> None:
    diagonal = np.eye(5, dtype=bool)  # a one-pixel diagonal boundary separates the two halves
    labels = regions(diagonal)
    assert labels[0, 4] != labels[4, 0] and labels.max() == 2 and (labels[diagonal] == 0).all()


def test_best_threshold_of_a_probability_map() -> None:
    boundary = np.zeros((20, 20), bool)
    boundary[:, 9:11] = True  # two cells side by side
    probability = np.where(boundary, 0.7, 0.2)  # right at thresholds 0.3 .. 0.7
    scores = best_over_thresholds([probability], [boundary])
    assert scores.rand_error == 0.0 and scores.pixel_error == 0.0
    assert 0.3 <= scores.rand_threshold <= 0.7 and 0.3 <= scores.pixel_threshold <= 0.7
    leaky = probability.copy()
    leaky[5, 9:11] = 0.1  # a gap in the membrane merges the cells at every threshold
    merged = best_over_thresholds([leaky], [boundary])
    assert merged.rand_error == pytest.approx(1 / 3, abs=0.02)
    assert merged.pixel_error == pytest.approx(2 / 400)
