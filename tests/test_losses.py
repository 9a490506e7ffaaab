"""Losses against values worked out by hand, and ignore_index behaving the same everywhere."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate

from unet_lab.losses import (
    BinaryCrossEntropyLoss,
    BorderWeightedCrossEntropyLoss,
    CrossEntropyLoss,
    DiceCELoss,
    DiceLoss,
    FocalLoss,
    TverskyLoss,
    border_weight_map,
)

# Every loss over one logit per class (BinaryCrossEntropyLoss has its own tests).
MULTICLASS_LOSSES = [
    CrossEntropyLoss,
    DiceLoss,
    DiceCELoss,
    FocalLoss,
    TverskyLoss,
    BorderWeightedCrossEntropyLoss,
]
# Two pixels, two classes: pixel A has logits (2, 0) and is class 0; pixel B (0, 1), class 1.
LOGITS = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (N=1, C=2, H=1, W=2)
TARGET = torch.tensor([[[0, 1]]])
P_A0 = math.exp(2) / (math.exp(2) + 1)  # softmax probability of class 0 at A
P_B1 = math.exp(1) / (math.exp(1) + 1)  # softmax probability of class 1 at B


def test_cross_entropy_by_hand() -> None:
    expected = (-math.log(P_A0) - math.log(P_B1)) / 2
    assert CrossEntropyLoss()(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_class_weights_by_hand() -> None:
    expected = (1 * -math.log(P_A0) + 3 * -math.log(P_B1)) / (1 + 3)
    loss = CrossEntropyLoss(class_weights=[1.0, 3.0])(LOGITS, TARGET)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_label_smoothing_by_hand() -> None:
    eps = 0.2
    log_p = torch.log_softmax(LOGITS, dim=1)[0, :, 0, :]  # (C, pixels)
    # smoothed target: 1 - eps + eps/C on the true class, eps/C on the other
    expected = (
        -sum(
            (1 - eps + eps / 2) * log_p[t, i] + (eps / 2) * log_p[1 - t, i]
            for i, t in enumerate([0, 1])
        ).item()
        / 2
    )
    loss = CrossEntropyLoss(label_smoothing=eps)(LOGITS, TARGET)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_dice_foreground_by_hand() -> None:
    intersection = P_B1
    predicted = (1 - P_A0) + P_B1
    expected = 1 - 2 * intersection / (predicted + 1)
    assert DiceLoss(smooth=0.0)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)


def test_dice_with_background_by_hand() -> None:
    dice_fg = 2 * P_B1 / ((1 - P_A0) + P_B1 + 1)
    dice_bg = 2 * P_A0 / (P_A0 + (1 - P_B1) + 1)
    loss = DiceLoss(include_background=True, smooth=0.0)(LOGITS, TARGET)
    assert loss.item() == pytest.approx(1 - (dice_fg + dice_bg) / 2, rel=1e-6)


def test_dice_ce_is_the_weighted_sum() -> None:
    dice = DiceLoss(smooth=0.0)(LOGITS, TARGET)
    ce = CrossEntropyLoss()(LOGITS, TARGET)
    loss = DiceCELoss(dice_weight=0.5, ce_weight=2.0, smooth=0.0)(LOGITS, TARGET)
    assert loss.item() == pytest.approx(0.5 * dice.item() + 2.0 * ce.item(), rel=1e-6)


def test_per_image_dice_is_the_mean_over_images() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    loss = DiceLoss(batch_dice=False)
    each = [loss(logits[i : i + 1], target[i : i + 1]) for i in range(2)]
    assert loss(logits, target).item() == pytest.approx(sum(each).item() / 2, rel=1e-5)


@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("make_loss", MULTICLASS_LOSSES)
def test_perfect_prediction_costs_nothing(make_loss, num_classes: int) -> None:
    target = torch.randint(0, num_classes, (2, 16, 16))
    logits = 50.0 * torch.nn.functional.one_hot(target, num_classes).movedim(-1, 1).float()
    assert make_loss()(logits, target).item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("make_loss", MULTICLASS_LOSSES)
def test_ignored_pixels_change_nothing(make_loss, num_classes: int) -> None:
    torch.manual_seed(1)
    loss = make_loss(ignore_index=255)
    logits = torch.randn(2, num_classes, 12, 12)
    target = torch.randint(0, num_classes, (2, 12, 12))
    ignored = torch.rand(2, 12, 12) < 0.3
    target[ignored] = 255
    reference = loss(logits, target)

    scrambled = logits.clone()
    scrambled[ignored.unsqueeze(1).expand_as(logits)] = 100 * torch.randn(
        int(ignored.sum()) * num_classes
    )
    assert loss(scrambled, target).item() == pytest.approx(reference.item(), rel=1e-6)

    # (The border weights depend on where objects are, so they are not pooled this way.)
    if make_loss is not BorderWeightedCrossEntropyLoss:
        # Same value as the loss over the valid pixels alone (pooled as one image).
        valid = ~ignored
        only_valid_logits = logits.movedim(1, -1)[valid].T.reshape(1, num_classes, -1, 1)
        only_valid_target = target[valid].reshape(1, -1, 1)
        expected = make_loss()(only_valid_logits, only_valid_target)
        assert reference.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("make_loss", MULTICLASS_LOSSES)
def test_float64_logits_stay_float64(make_loss) -> None:
    """trainer.precision=64-true, for debugging, keeps its precision in the loss."""
    logits = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 8, 8))
    takes_weights = make_loss not in (DiceLoss, TverskyLoss)
    kwargs = {"class_weights": [1.0, 2.0, 3.0]} if takes_weights else {}
    assert make_loss(**kwargs)(logits, target).dtype == torch.float64


def test_losses_compute_in_float32_under_bf16() -> None:
    logits = torch.randn(2, 3, 8, 8, dtype=torch.bfloat16, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    loss = DiceCELoss()(logits, target)
    assert loss.dtype == torch.float32
    loss.backward()
    assert logits.grad is not None


def test_focal_by_hand() -> None:
    gamma = 2.0
    expected = (
        -((1 - P_A0) ** gamma) * math.log(P_A0) - ((1 - P_B1) ** gamma) * math.log(P_B1)
    ) / 2
    assert FocalLoss(gamma)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)
    weighted = (
        -0.25 * (1 - P_A0) ** gamma * math.log(P_A0) - 0.75 * (1 - P_B1) ** gamma * math.log(P_B1)
    ) / 2
    loss = FocalLoss(gamma, class_weights=[0.25, 0.75])(LOGITS, TARGET)
    assert loss.item() == pytest.approx(weighted, rel=1e-6)


def test_focal_with_gamma_0_is_cross_entropy() -> None:
    logits, target = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 6, 6))
    assert FocalLoss(0.0)(logits, target).item() == pytest.approx(
        CrossEntropyLoss()(logits, target).item(), rel=1e-6
    )


def test_tversky_by_hand() -> None:
    # Foreground (class 1): TP = P(B is 1) = P_B1, FP = P(A is 1) = 1 - P_A0, FN = 1 - P_B1.
    alpha, beta = 0.3, 0.7
    tp, fp, fn = P_B1, 1 - P_A0, 1 - P_B1
    expected = 1 - tp / (tp + alpha * fp + beta * fn)
    loss = TverskyLoss(alpha, beta, smooth=0.0)(LOGITS, TARGET)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_tversky_with_equal_halves_is_dice() -> None:
    logits, target = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 6, 6))
    tversky = TverskyLoss(0.5, 0.5, include_background=True, batch_dice=False)
    dice = DiceLoss(include_background=True, batch_dice=False)
    assert tversky(logits, target).item() == pytest.approx(dice(logits, target).item(), rel=1e-6)


def test_binary_cross_entropy_by_hand_on_one_output_channel() -> None:
    logits = torch.tensor([[[[2.0, -1.0, 0.5]]]])  # (N=1, C=1, H=1, W=3)
    target = torch.tensor([[[1, 0, 255]]])
    sigmoid = [1 / (1 + math.exp(-x)) for x in (2.0, -1.0)]
    expected = (-math.log(sigmoid[0]) - math.log(1 - sigmoid[1])) / 2  # pixel 3 ignored
    loss = BinaryCrossEntropyLoss(ignore_index=255)(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    weighted = (-3 * math.log(sigmoid[0]) - math.log(1 - sigmoid[1])) / 2
    loss = BinaryCrossEntropyLoss(pos_weight=3.0, ignore_index=255)(logits, target)
    assert loss.item() == pytest.approx(weighted, rel=1e-6)
    with pytest.raises(ValueError, match="1 output channel"):
        BinaryCrossEntropyLoss()(LOGITS, TARGET)


def test_border_weight_map_by_hand() -> None:
    """Two objects with a 2-pixel gap: a gap pixel is 1 px from one object and 2 px from the
    other; far from both, only the class weight is left."""
    target = np.zeros((5, 12), np.int64)
    target[:, 2:5] = 1
    target[:, 7:10] = 1
    weights = border_weight_map(target, w0=10, sigma=5, class_weights=[1.0, 2.0])
    assert weights[2, 5] == pytest.approx(1 + 10 * math.exp(-((1 + 2) ** 2) / 50))
    assert weights[2, 3] == 2.0  # inside an object: its class weight only
    assert weights[2, 0] == pytest.approx(1 + 10 * math.exp(-((2 + 7) ** 2) / 50))
    single = np.zeros((5, 5), np.int64)
    single[1:3, 1:3] = 1  # one object: no border term
    assert border_weight_map(single, class_weights=[1.0, 1.0]).max() == 1.0
    balanced = border_weight_map(single)  # 21 background and 4 foreground pixels
    assert balanced[0, 0] == pytest.approx(25 / (2 * 21))
    assert balanced[1, 1] == pytest.approx(25 / (2 * 4))


def test_border_weights_peak_on_the_membrane_between_touching_cells() -> None:
    """EM membranes (ISBI 2012: class 0 cell, class 1 membrane): the objects are the cells that
    the membrane separates (``boundary_class=1``), so the weight peaks on the thin membrane
    between two touching cells, which the network must not miss or the cells merge. Taken as
    the objects themselves (the foreground, as for ordinary data), the membranes form one
    network and get no border term at all."""
    target = np.ones((40, 64), np.int64)  # membrane around the cells and between them
    target[4:36, 4:31] = 0  # cell A
    target[4:36, 32:60] = 0  # cell B; column 31 is a 1 px membrane between them
    weights = border_weight_map(target, class_weights=[1.0, 1.0], boundary_class=1)
    peak = 1 + 10 * math.exp(-((1 + 1) ** 2) / 50)  # 1 px from each cell: 10.2
    assert weights[4:36, 31] == pytest.approx(np.full(32, peak))  # all along the gap
    assert weights.max() == pytest.approx(peak)
    assert (weights[target == 0] == 1.0).all()  # inside the cells: the class weight only
    columns = np.arange(64)[None, :].repeat(40, axis=0)
    far = (target == 1) & (np.abs(columns - 31) > 16)  # membrane far from the gap
    assert weights[far].max() < 1.01
    assert border_weight_map(target, class_weights=[1.0, 1.0]).max() == 1.0


def test_border_weighted_ce_takes_the_boundary_class_from_the_module(tmp_path: Path) -> None:
    """experiment=isbi2012 sets module.boundary_class=1 (the membrane, for the Rand error);
    loss=border_weighted_ce then takes the cells as objects; ordinary data keeps the
    foreground classes."""
    isbi = compose_config(tmp_path, ["experiment=isbi2012", "loss=border_weighted_ce"])
    assert instantiate(isbi.loss).boundary_class == 1
    plain = compose_config(tmp_path, ["loss=border_weighted_ce"])
    assert instantiate(plain.loss).boundary_class is None


def test_border_weighted_loss_is_the_weighted_mean_of_cross_entropy() -> None:
    torch.manual_seed(0)
    target = torch.zeros(1, 6, 12, dtype=torch.long)
    target[:, :, 2:5] = 1
    target[:, :, 7:10] = 1
    logits = torch.randn(1, 2, 6, 12)
    weights = torch.from_numpy(border_weight_map(target[0].numpy())).float()
    pixel_ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")[0]
    expected = (pixel_ce * weights).sum() / weights.sum()
    loss = BorderWeightedCrossEntropyLoss()(logits, target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_binary_cross_entropy_keeps_float64_and_computes_bf16_in_float32() -> None:
    target = torch.randint(0, 2, (2, 8, 8))
    assert BinaryCrossEntropyLoss()(torch.randn(2, 1, 8, 8, dtype=torch.float64), target).dtype == (
        torch.float64
    )
    logits = torch.randn(2, 1, 8, 8, dtype=torch.bfloat16)
    assert BinaryCrossEntropyLoss()(logits, target).dtype == torch.float32
