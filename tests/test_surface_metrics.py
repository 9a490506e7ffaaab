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


def _sphere(shape: tuple[int, ...], centre: tuple[int, ...], radius: float, spacing) -> np.ndarray:
    """A ball of ``radius`` in millimetres on a voxel grid of ``spacing``."""
    grid = np.indices(shape, dtype=np.float64)
    squared = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing, strict=True))
    return squared <= radius**2


def test_spheres_two_coarse_voxels_apart_are_six_millimetres_apart() -> None:
    """Voxels of 3 x 1 x 1 mm: a ball of 10 mm moved by 2 voxels along the first axis has moved
    6 mm; its poles are the farthest surface voxels, more than 5% of the surface."""
    spacing = (3.0, 1.0, 1.0)
    truth = _sphere((20, 32, 32), (8, 16, 16), 10, spacing)
    prediction = _sphere((20, 32, 32), (10, 16, 16), 10, spacing)
    hd95, asd = hd95_and_asd(prediction, truth, spacing)
    assert hd95 == pytest.approx(6.0)
    assert 0 < asd < 6
    to_truth, to_prediction = surface_distances(prediction, truth, spacing)
    assert max(to_truth.max(), to_prediction.max()) == pytest.approx(6.0)
    assert hd95_and_asd(prediction, truth)[0] == pytest.approx(2.0)  # in voxels


@pytest.mark.parametrize("seed", range(2))
def test_volumes_with_spacing_match_monai(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape, spacing = (14, 24, 20), (3.0, 0.8, 1.2)
    prediction, truth = _blobs(rng, shape), _blobs(rng, shape)
    hd95, asd = hd95_and_asd(prediction, truth, spacing)
    expected_hd95 = compute_hausdorff_distance(
        _one_hot(prediction), _one_hot(truth), percentile=95, spacing=spacing
    )
    expected_asd = compute_average_surface_distance(
        _one_hot(prediction), _one_hot(truth), symmetric=True, spacing=spacing
    )
    assert hd95 == pytest.approx(float(expected_hd95[0, 0]), rel=1e-5)
    assert asd == pytest.approx(float(expected_asd[0, 0]), rel=1e-5)


def test_unit_spacing_keeps_the_pixel_results() -> None:
    rng = np.random.default_rng(4)
    prediction, truth = _blobs(rng), _blobs(rng)
    assert hd95_and_asd(prediction, truth, (1, 1)) == hd95_and_asd(prediction, truth)
    doubled = hd95_and_asd(prediction, truth, (2.0, 2.0))
    assert doubled == pytest.approx(tuple(2 * v for v in hd95_and_asd(prediction, truth)))


def test_an_empty_class_gets_the_diagonal_in_millimetres() -> None:
    empty, box = np.zeros((2, 3, 6), bool), np.zeros((2, 3, 6), bool)
    box[0, 1, 2:4] = True
    assert hd95_and_asd(empty, box) == (7.0, 7.0)  # sqrt(4 + 9 + 36)
    assert hd95_and_asd(box, empty, (3, 4, 2)) == (18.0, 18.0)  # sqrt(36 + 144 + 144)


def test_a_spacing_with_the_wrong_length_or_sign_is_refused() -> None:
    box = np.ones((3, 4, 5), bool)
    with pytest.raises(ValueError, match="spacing"):
        hd95_and_asd(box, box, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95_and_asd(box, box, (1.0, 0.0, 1.0))


def test_the_metric_takes_a_spacing_per_metric_per_update_or_per_volume() -> None:
    rng = np.random.default_rng(5)
    shape = (10, 16, 14)
    truths = np.stack([_blobs(rng, shape) for _ in range(2)]).astype(np.int64)
    predictions = np.stack([_blobs(rng, shape) for _ in range(2)]).astype(np.int64)
    preds, target = torch.from_numpy(predictions), torch.from_numpy(truths)
    coarse, fine = (3.0, 1.0, 1.0), (1.5, 0.5, 0.5)

    def expected(spacings) -> float:
        pairs = zip(predictions, truths, spacings, strict=True)
        return float(np.mean([hd95_and_asd(p == 1, t == 1, s)[0] for p, t, s in pairs]))

    metric = SurfaceDistances(2, spacing=coarse)
    metric.update(preds, target)
    assert float(metric.compute()["hd95"]) == pytest.approx(expected([coarse, coarse]), rel=1e-5)

    metric = SurfaceDistances(2, spacing=coarse)
    metric.update(preds, target, spacing=fine)  # overrides the metric's
    assert float(metric.compute()["hd95"]) == pytest.approx(expected([fine, fine]), rel=1e-5)

    metric = SurfaceDistances(2)
    metric.update(preds, target, spacing=torch.tensor([coarse, fine]))  # as a batch collates
    assert float(metric.compute()["hd95"]) == pytest.approx(expected([coarse, fine]), rel=1e-5)
    assert expected([coarse, fine]) != pytest.approx(expected([None, None]))

    with pytest.raises(ValueError, match="spacing"):
        SurfaceDistances(2).update(preds, target, spacing=(1.0, 1.0))
