"""Overlapping classes (``data.regions``): regions of the label maps, trained with a sigmoid
each, scored per region, predicted as one mask per region and as a label map painted back."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import run_cli, run_unet_lab
from folders import write_dataset, write_volume_dataset

from unet_lab.arguments import InvalidArgumentError
from unet_lab.data.regions import IGNORED, Regions
from unet_lab.inference.ensemble import Ensemble
from unet_lab.inference.trained import probabilities
from unet_lab.losses import RegionLoss
from unet_lab.metrics.multilabel import MultiLabelScores
from unet_lab.models import UNet

BRATS = {"whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}
FAST = ["debug=fast", "logger=csv", "callbacks.validation_images=null"]
FAST += ["model.depth=2", "model.width=8", "test=false"]


def test_regions_are_unions_of_label_values_and_paint_back_in_order() -> None:
    regions = Regions(BRATS, num_classes=4)
    labels = torch.tensor([[0, 1, 2, 3, 255]])
    targets = regions.targets(labels, ignore_index=255)
    assert targets[0, :, :4].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]
    assert (targets[0, :, 4] == IGNORED).all()  # the ignored pixel, in every region
    masks = regions.masks(np.array([0, 1, 2, 3]))
    np.testing.assert_array_equal(regions.label_map(masks), [0, 1, 2, 3])
    assert Regions.from_state_dict(regions.state_dict(), 4).values == regions.values


def test_a_bad_region_names_its_key() -> None:
    with pytest.raises(InvalidArgumentError, match=r"regions\.core"):
        Regions({"whole": [1, 2], "core": [4]}, num_classes=3)
    with pytest.raises(InvalidArgumentError, match="regions"):
        Regions({}, num_classes=3)


def test_the_region_loss_ignores_ignored_pixels_and_rewards_the_truth() -> None:
    loss = RegionLoss()
    target = torch.tensor([[[[1.0, 0.0, IGNORED]]]])
    right = torch.tensor([[[[9.0, -9.0, 0.0]]]])
    wrong = torch.tensor([[[[-9.0, 9.0, 0.0]]]])
    assert loss(right, target) < 0.01 < loss(wrong, target)
    changed = right.clone()
    changed[..., 2] = 50.0  # only at the ignored pixel
    assert loss(changed, target) == pytest.approx(float(loss(right, target)))


def test_region_scores_count_each_region_on_its_own() -> None:
    scores = MultiLabelScores(["a", "b"])
    predicted = torch.tensor([[[1, 1, 0, 0], [1, 0, 0, 0]]])
    target = torch.tensor([[[1.0, 0.0, 1.0, IGNORED], [1.0, 0.0, 0.0, 0.0]]])
    scores.update(predicted, target)
    result = scores.compute()
    assert result["dice_a"] == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    assert result["dice_b"] == pytest.approx(1.0)
    assert result["dice"] == pytest.approx(0.75)
    assert sorted(result) == sorted(MultiLabelScores.score_names(["a", "b"]))


def test_an_ensemble_of_region_networks_averages_their_sigmoids() -> None:
    nets = [UNet(in_channels=1, num_classes=2, depth=2, width=8).eval() for _ in range(2)]
    for net in nets:
        net.multi_label = True
    image = torch.randn(1, 1, 16, 24)
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(n(image)) for n in nets]).mean(0)
    torch.testing.assert_close(probabilities(Ensemble(nets), image), expected, atol=1e-5, rtol=0)


def test_images_with_overlapping_regions_train_score_and_predict(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", count=8, channels=1)
    data = ["data=folder", "data.root=data", "data.num_classes=3", "data.patch_size=32"]
    regions = ["data.regions={any:[1,2],second:[2]}", "loss=regions"]
    run_cli([*data, *regions, *FAST, "hydra.run.dir=run"], tmp_path)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"dice", "dice_any", "dice_second", "iou_any"} <= set(summary["val"])
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"

    done = run_unet_lab(
        ["predict", f"ckpt_path={checkpoint}", "input=data/images", "output=out"], tmp_path
    )
    assert done.returncode == 0, done.stderr
    for name in ("img00.png", "img00_any.png", "img00_second.png"):
        assert (tmp_path / "out" / name).is_file()
    any_mask = cv2.imread(str(tmp_path / "out" / "img00_any.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(any_mask)) <= {0, 255}
    labels = cv2.imread(str(tmp_path / "out" / "img00.png"), cv2.IMREAD_UNCHANGED)
    second = cv2.imread(str(tmp_path / "out" / "img00_second.png"), cv2.IMREAD_UNCHANGED)
    assert ((labels == 2) == (second == 255)).all()  # the later region paints its own value

    scored = run_unet_lab(["eval", f"ckpt_path={checkpoint}", "split=val"], tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert "any" in scored.stdout and "second" in scored.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.regions={any:[1,2]}"], "data.regions needs loss=regions"),
        (["loss=regions"], "loss=regions is for overlapping classes"),
        (["data.regions={any:[1,5]}", "loss=regions"], "regions.any"),
    ],
)
def test_region_mistakes_stop_in_one_line(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    write_dataset(tmp_path / "data", count=4, channels=1)
    data = ["data=folder", "data.root=data", "data.num_classes=3"]
    done = run_cli([*data, *overrides, *FAST], tmp_path, check=False)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]


def test_volumes_with_regions_predict_one_volume_per_region(tmp_path: Path) -> None:
    write_volume_dataset(tmp_path / "volumes", count=4)
    data = ["data=volumes", "data.root=volumes", "data.num_classes=3"]
    data += ["data.patch_size=[8,16,16]", "data.samples_per_epoch=4"]
    run_cli([*data, "data.regions={any:[1,2],second:[2]}", "loss=regions", *FAST,
             "hydra.run.dir=run"], tmp_path)  # fmt: skip
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    case = tmp_path / "volumes" / "imagesTr" / "case_000.nii.gz"
    done = run_unet_lab(
        ["predict", f"ckpt_path={checkpoint}", f"input={case}", "output=out"], tmp_path
    )
    assert done.returncode == 0, done.stderr
    for name in ("case_000.nii.gz", "case_000_any.nii.gz", "case_000_second.nii.gz"):
        assert (tmp_path / "out" / name).is_file()
