"""Connected-component postprocessing: the rules, their connectivity, and choosing them on
out-of-fold predictions only where they raise a class's mean Dice."""

from __future__ import annotations

import numpy as np
import pytest

from unet_lab.arguments import InvalidArgumentError
from unet_lab.crossval.postprocessing import candidate_rules, choose_postprocessing
from unet_lab.data.normalization import Normalizer
from unet_lab.inference.postprocessing import ComponentRule, Postprocessing
from unet_lab.inference.trained import TrainedNetwork


def _blobs() -> np.ndarray:
    """Class 1: a 6x6 square and a 2x2 speck; class 2: a 3x3 square and a single pixel."""
    labels = np.zeros((20, 20), np.int64)
    labels[2:8, 2:8] = 1
    labels[15:17, 15:17] = 1
    labels[10:13, 2:5] = 2
    labels[18, 2] = 2
    return labels


def test_largest_keeps_one_component_and_leaves_other_classes() -> None:
    labels = _blobs()
    cleaned = Postprocessing([ComponentRule(1, "largest")])(labels)
    assert (cleaned[2:8, 2:8] == 1).all()
    assert (cleaned[15:17, 15:17] == 0).all()  # removed pixels become background
    assert (cleaned == 2).sum() == (labels == 2).sum()


def test_min_size_removes_only_smaller_components() -> None:
    labels = _blobs()
    cleaned = Postprocessing([ComponentRule(2, "min_size", 5)])(labels)
    assert (cleaned == 2).sum() == 9
    assert cleaned[18, 2] == 0
    assert (cleaned == 1).sum() == (labels == 1).sum()


def test_connectivity_face_splits_what_full_joins_in_3d() -> None:
    labels = np.zeros((4, 4, 4), np.int64)
    labels[0, 0, 0] = labels[1, 1, 1] = 1  # touch at a corner only
    labels[3, 3, 0:3] = 1  # a line of three
    full = Postprocessing([ComponentRule(1, "largest")], "full")(labels)
    face = Postprocessing([ComponentRule(1, "largest")], "face")(labels)
    assert (full == 1).sum() == 3  # the corner pair (2) is a component, smaller than the line
    assert (face == 1).sum() == 3
    pair = Postprocessing([ComponentRule(1, "min_size", 2)], "full")(labels)
    single = Postprocessing([ComponentRule(1, "min_size", 2)], "face")(labels)
    assert (pair == 1).sum() == 5  # with corners the pair is one component of 2
    assert (single == 1).sum() == 3  # by faces it is two single voxels


def test_rules_round_trip_and_bad_values_name_the_argument() -> None:
    rules = Postprocessing([ComponentRule(1, "largest"), ComponentRule(2, "min_size", 8)], "face")
    assert Postprocessing.from_state_dict(rules.state_dict()) == rules
    with pytest.raises(InvalidArgumentError, match="kind"):
        ComponentRule(1, "biggest")
    with pytest.raises(InvalidArgumentError, match="class_index"):
        ComponentRule(0, "largest")  # the background is never cleaned up
    with pytest.raises(InvalidArgumentError, match="connectivity"):
        Postprocessing([], "diagonal")


def _case(rng: np.random.Generator, specks: bool) -> tuple[np.ndarray, np.ndarray]:
    """Truth: one 8x8 object of class 1 and two 4x4 objects of class 2. Prediction: the same,
    slightly shifted, plus (``specks``) false single pixels of class 1."""
    truth = np.zeros((40, 40), np.int64)
    truth[5:13, 5:13] = 1
    truth[25:29, 5:9] = 2
    truth[25:29, 25:29] = 2
    prediction = np.roll(truth, 1, axis=1)
    if specks:
        for y, x in rng.integers(15, 38, (3, 2)):
            if prediction[y, x] == 0:
                prediction[y, x] = 1
    return prediction, truth


def test_choosing_keeps_a_rule_only_where_it_raises_the_class_dice() -> None:
    rng = np.random.default_rng(0)
    cases = [_case(rng, specks=True) for _ in range(6)]
    rules, trials = choose_postprocessing(cases, ["background", "a", "b"])
    assert [r.class_index for r in rules.rules] == [1]  # class 2 has two true objects
    baseline = next(t for t in trials if t.class_index == 1 and t.rule == "none")
    kept = next(t for t in trials if t.class_index == 1 and t.kept)
    assert kept.mean_dice > baseline.mean_dice
    assert next(t for t in trials if t.class_index == 2 and t.rule == "none").kept
    # Applied, the rule gives the Dice that choosing measured.
    cleaned = [(rules(p), t) for p, t in cases]
    dice = np.mean(
        [2 * ((p == 1) & (t == 1)).sum() / ((p == 1).sum() + (t == 1).sum()) for p, t in cleaned]
    )
    assert dice == pytest.approx(kept.mean_dice)


def test_clean_predictions_get_no_rule() -> None:
    rng = np.random.default_rng(1)
    rules, _ = choose_postprocessing([_case(rng, specks=False) for _ in range(4)], ["bg", "a", "b"])
    assert rules.rules == []


def test_candidates_stop_below_the_typical_object() -> None:
    rules = candidate_rules(1, [40, 50, 60])  # median 50: thresholds up to 25
    assert [r.min_size for r in rules if r.kind == "min_size"] == [8]
    assert rules[0].kind == "largest"


def test_a_network_with_rules_cleans_its_labels_unless_asked_not_to() -> None:
    rules = Postprocessing([ComponentRule(1, "largest")])
    trained = TrainedNetwork(
        None, ["bg", "a", "b"], 1, Normalizer("none"), {}, postprocessing=rules
    )  # type: ignore[arg-type]
    probs = np.stack([_blobs() == c for c in range(3)]).astype(np.float32)
    assert (trained.labels(probs) == 1).sum() == 36
    assert (trained.labels(probs, postprocess=False) == 1).sum() == 40
