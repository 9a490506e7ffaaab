"""Patch draws of volume training: each DDP process draws its own patches, and a resumed run
draws the patches the unbroken run would have drawn."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FAST, TINY_VOLUMES, run_cli

from unet_lab.data.volumes.synthetic import SyntheticVolumeDataModule


def _module(rank: int = 0, step: int = 0, workers: int = 0) -> SyntheticVolumeDataModule:
    module = SyntheticVolumeDataModule(
        volume_shape=(8, 16, 16), patch_size=(4, 8, 8), train_size=3, val_size=1, test_size=1,
        num_workers=workers,
    )  # fmt: skip
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    module.trainer = SimpleNamespace(global_rank=rank, global_step=step, strategy=cpu)  # type: ignore[assignment]
    module.setup("fit")
    return module


def _patches(module: SyntheticVolumeDataModule, count: int = 6) -> list[torch.Tensor]:
    dataset = module.datasets["train"]
    return [dataset[i]["image"] for i in range(count)]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_each_ddp_process_draws_patches_of_its_own() -> None:
    first, second = _patches(_module(rank=0)), _patches(_module(rank=1))
    assert not _same(first, second)
    assert _same(_patches(_module(rank=1)), second)  # and repeatably so


def test_the_loader_workers_of_each_ddp_process_draw_patches_of_their_own() -> None:
    def first_batch(rank: int) -> torch.Tensor:
        torch.manual_seed(0)  # seed_everything seeds every rank's generator alike
        return next(iter(_module(rank=rank, workers=1).train_dataloader()))["image"]

    first, second = first_batch(0), first_batch(1)
    assert not torch.equal(first, second)
    assert torch.equal(first_batch(1), second)


def test_the_patch_draws_continue_from_a_checkpoint() -> None:
    unbroken = _module()
    _patches(unbroken)  # the first epoch
    saved = unbroken.state_dict()
    expected = _patches(unbroken)
    resumed = _module()
    resumed.load_state_dict(saved)
    assert _same(_patches(resumed), expected)
    fresh = _module()  # without the state: the first epoch's patches again
    assert not _same(_patches(fresh), expected)


def test_another_rank_resumes_on_a_stream_of_its_own() -> None:
    saved = _module(rank=0).state_dict()
    rank0, rank1 = _module(rank=0), _module(rank=1, step=7)
    rank0.load_state_dict(saved)
    rank1.load_state_dict({**saved, "step": 7})
    assert not _same(_patches(rank0), _patches(rank1))


@pytest.mark.slow
def test_a_resumed_volume_run_ends_with_the_weights_of_an_unbroken_one(tmp_path: Path) -> None:
    common = [
        "data=synthetic3d", *TINY_VOLUMES, *FAST, "scheduler=none", "trainer.precision=32-true",
        "trainer.deterministic=true", "test=false", "data.num_workers=0",
    ]  # fmt: skip
    run_cli([*common, "trainer.max_epochs=2", "hydra.run.dir=unbroken"], cwd=tmp_path)
    run_cli([*common, "trainer.max_epochs=1", "hydra.run.dir=resumed"], cwd=tmp_path)
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    run_cli([*common, "trainer.max_epochs=2", f"ckpt_path={last}"], cwd=tmp_path)

    def weights(run: str) -> dict[str, torch.Tensor]:
        path = tmp_path / run / "checkpoints" / "last.ckpt"
        return torch.load(path, weights_only=False)["state_dict"]

    expected, actual = weights("unbroken"), weights("resumed")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
