"""Early stopping, a moving average of the weights (EMA) and the poly schedule, each shown to do
what it says."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import FAST, TINY_DATA, run_cli
from torch import nn

from unet_lab.inference import load_trained
from unet_lab.training.module import SegmentationModule
from unet_lab.training.schedulers import poly


def test_poly_decays_as_nnunet_to_zero_at_the_end() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    schedule = poly(optimizer, total_steps=100)
    rates = []
    for _ in range(101):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.01)
    assert rates[50] == pytest.approx(0.01 * 0.5**0.9)
    assert rates[100] == 0.0 and all(a >= b for a, b in itertools.pairwise(rates))


def _module(decay: float | None) -> SegmentationModule:
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    return SegmentationModule(
        net, nn.CrossEntropyLoss(), torch.optim.SGD, ema_decay=decay,
        class_names=["background", "object"],
    )  # fmt: skip


def test_the_average_follows_the_weights_by_its_decay() -> None:
    module = _module(0.75)
    conv, average = module.net[0], module.ema_net[0]  # type: ignore[index]
    start = conv.weight.detach().clone()
    with torch.no_grad():
        conv.weight.fill_(1.0)
    module.on_train_batch_end(None, None, 0)
    assert torch.allclose(average.weight, 0.75 * start + 0.25)
    module.on_train_batch_end(None, None, 1)
    assert torch.allclose(average.weight, 0.75 * (0.75 * start + 0.25) + 0.25)
    image = torch.randn(2, 1, 4, 4)
    module.eval()
    assert torch.allclose(module(image), module.ema_net(image))  # type: ignore[misc]
    module.train()
    assert torch.allclose(module(image), module.net(image))


def test_checkpoints_hold_the_average_as_the_network_and_resume_both() -> None:
    module = _module(0.5)
    with torch.no_grad():
        module.net[0].weight.fill_(2.0)  # type: ignore[index]
    module.on_train_batch_end(None, None, 0)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    saved = checkpoint["state_dict"]
    assert torch.equal(saved["net.0.weight"], module.ema_net[0].weight)  # type: ignore[index]
    assert torch.equal(saved["ema_net.0.weight"], module.net[0].weight)  # type: ignore[index]
    resumed = _module(0.5)
    resumed.on_load_checkpoint(checkpoint)
    resumed.load_state_dict(checkpoint["state_dict"])
    assert torch.equal(resumed.net[0].weight, module.net[0].weight)  # type: ignore[index]
    assert torch.equal(resumed.ema_net[0].weight, module.ema_net[0].weight)  # type: ignore[index]


def test_a_run_with_ema_predicts_with_the_average(tmp_path: Path) -> None:
    run_cli([*FAST, *TINY_DATA, "module.ema_decay=0.9", "hydra.run.dir=run"], cwd=tmp_path)
    state = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)
    weights = state["state_dict"]
    key = next(k for k in weights if k.startswith("net.") and k.endswith("weight"))
    assert not torch.equal(weights[key], weights["ema_" + key])  # average and trained differ
    trained = load_trained(tmp_path / "run/checkpoints/last.ckpt")
    assert torch.equal(trained.net.state_dict()[key.removeprefix("net.")], weights[key])


def test_early_stopping_ends_a_run_that_stopped_improving(tmp_path: Path) -> None:
    # No improvement can reach min_delta=1 (Dice is at most 1): patience 1 ends the run after
    # its second validation instead of the tenth.
    run_cli(
        [*FAST, *TINY_DATA, "callbacks=early_stopping", "callbacks.early_stopping.patience=1",
         "callbacks.early_stopping.min_delta=1", "callbacks.validation_images=null",
         "trainer.max_epochs=10", "hydra.run.dir=run"],
        cwd=tmp_path,
    )  # fmt: skip
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
