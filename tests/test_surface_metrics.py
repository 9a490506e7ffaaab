"""HD95 and average surface distance against MONAI's implementations (an independent
computation), and the policy for empty classes."""

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
from scipy import ndimage

from unet_lab.metrics.surface import SurfaceDistances, hd95_and_asd, surface_distances

# MONAI 1.6 warns about one of its own deprecated arguments, used internally.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy")


def _blobs(rng: np.random.Generator, shape=(40, 48)) -> np.ndarray:
    """A random binary mask of smooth blobs."""
    return ndimage.gaussian_filter(rng.normal(size=shape), 3) > 0.05


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))


@pytest.mark.parametrize("seed", range(6))
def test_matches_monai_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prediction, truth = _blobs(rng), _blobs(rng)
    hd95, asd = hd95_and_asd(prediction, truth)
    expected_hd95 = compute_hausdorff_distance(_one_hot(prediction), _one_hot(truth), percentile=95)
    expected_asd = compute_average_surface_distance(
        _one_hot(prediction), _one_hot(truth), symmetric=True
    )
    assert hd95 == pytest.approx(float(expected_hd95[0, 0]), rel=1e-5)
    assert asd == pytest.approx(float(expected_asd[0, 0]), rel=1e-5)


def test_the_maximum_matches_monai_hausdorff() -> None:
    """(torchmetrics' HausdorffDistance takes another surface definition, so its values differ;
    MONAI's is the reference these scores follow.)"""
    rng = np.random.default_rng(7)
    prediction, truth = _blobs(rng), _blobs(rng)
    to_truth, to_prediction = surface_distances(prediction, truth)
    expected = compute_hausdorff_distance(_one_hot(prediction), _one_hot(truth))
    assert max(to_truth.max(), to_prediction.max()) == pytest.approx(float(expected[0, 0]))


def test_by_hand_two_squares_shifted_by_three_pixels() -> None:
    truth = np.zeros((20, 20), bool)
    truth[5:10, 5:10] = True
    prediction = np.roll(truth, 3, axis=1)
    hd95, asd = hd95_and_asd(prediction, truth)
    # Edges: 16 pixels each. The shifted left edge (5 px) is 3 px from the true left edge,
    # and so on; every surface pixel is within 3 px, the farthest exactly 3.
    assert hd95 == pytest.approx(3.0)
    assert 0 < asd < 3


def test_empty_classes_follow_the_policy() -> None:
    empty, square = np.zeros((6, 8), bool), np.zeros((6, 8), bool)
    square[1:4, 2:5] = True
    assert all(math.isnan(v) for v in hd95_and_asd(empty, empty))
    assert hd95_and_asd(empty, square) == (10.0, 10.0)  # the image diagonal, 6-8-10
    assert hd95_and_asd(square, empty) == (10.0, 10.0)


def test_metric_averages_images_per_class_and_ignores_pixels() -> None:
    rng = np.random.default_rng(3)
    truths = np.stack([_blobs(rng) for _ in range(3)]).astype(np.int64)
    predictions = np.stack([_blobs(rng) for _ in range(3)]).astype(np.int64)
    metric = SurfaceDistances(2, ["background", "object"])
    metric.update(torch.from_numpy(predictions[:2]), torch.from_numpy(truths[:2]))
    metric.update(torch.from_numpy(predictions[2:]), torch.from_numpy(truths[2:]))
    scores = metric.compute()
    expected = np.mean(
        [hd95_and_asd(p == 1, t == 1)[0] for p, t in zip(predictions, truths, strict=True)]
    )
    assert float(scores["hd95"]) == pytest.approx(expected, rel=1e-5)
    assert float(scores["hd95_object"]) == float(scores["hd95"])  # foreground mean = class 1

    ignored = truths.copy()
    ignored[:, :5] = 255  # the top rows are left out of both masks
    metric = SurfaceDistances(2, ignore_index=255)
    metric.update(torch.from_numpy(predictions), torch.from_numpy(ignored))
    valid = ignored != 255
    cropped = np.mean(
        [
            hd95_and_asd((p == 1) & v, (t == 1) & v)[1]
            for p, t, v in zip(predictions, ignored, valid, strict=True)
        ]
    )
    assert float(metric.compute()["asd"]) == pytest.approx(cropped, rel=1e-5)
