"""DDP with 2 CPU processes (``trainer=ddp_cpu``, gloo): single runs and ``-m`` sweeps write one
run folder per job, scores are synchronised over the ranks (equal to one process evaluating the
same checkpoint), and DDP checkpoints resume."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest
from conftest import FAST, compose_config, run_cli
from folders import write_dataset
from hydra import compose, initialize_config_module

from unet_lab.config.compose import CONFIG_MODULE
from unet_lab.errors import ConfigError
from unet_lab.training import build
from unet_lab.training.launcher import processes_to_start, shared_run_folder_arguments

pytestmark = pytest.mark.slow

# 9 validation and 7 test images: ranks get different counts (5 + 4, 4 + 3), and Lightning's
# default sampler would repeat an image to even them out.
DATA = [
    "data.image_size=32",
    "data.train_size=32",
    "data.val_size=9",
    "data.test_size=7",
    "data.batch_size=4",
]
# Cross-entropy: a per-pixel loss, so its mean does not depend on how images are batched (a Dice
# loss does, and ranks batch the images differently from one process).
DDP = ["trainer=ddp_cpu", *FAST, *DATA, "trainer.precision=32-true", "loss=ce"]


def _run_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("**/metrics.json"))


def _summary(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize("data", ["synthetic", "folder"])
def test_a_ddp_run_writes_one_folder_and_scores_like_one_process(data: str, tmp_path: Path) -> None:
    """Also on a folder data set: every rank must hold the same split (same seed) for the
    scores to match."""
    overrides = [*DDP, "logger=default"]  # CSV and W&B (offline)
    if data == "folder":
        root = write_dataset(tmp_path / "data", count=23, num_classes=3)
        folder = [
            "data=folder",
            f"data.root={root}",
            "data.num_classes=3",
            "data.test_fraction=0.3",
        ]
        overrides = [o for o in overrides if o not in DATA] + [*folder, "data.batch_size=4"]
    (tmp_path / "work").mkdir()
    result = run_cli(overrides, cwd=tmp_path / "work")
    (run,) = _run_folders(tmp_path / "work")
    summary = _summary(run)
    (wandb_run,) = (run / "wandb").glob("offline-run-*")  # one W&B run, by rank 0
    assert wandb_run.name.endswith((run / "wandb" / "run_id").read_text().strip())
    assert summary["status"] == "completed"
    assert summary["processes"] == 2
    assert "4 per device x 2 devices x 1 accumulated = 8" in (run / "train.log").read_text()
    assert "Traceback" not in result.stderr

    # The same best checkpoint tested by one process on the same data.
    cfg = compose_config(tmp_path / "single", [*overrides[1:], "trainer=cpu"])
    experiment = build(cfg)
    (single,) = experiment.trainer.test(
        experiment.module,
        datamodule=experiment.datamodule,
        ckpt_path=str(run / summary["best_checkpoint"]),
        verbose=False,
    )
    for name in ("dice", "iou", "acc", "loss", "hd95"):
        assert summary["test"][name] == pytest.approx(single[f"test/{name}"], rel=1e-5, abs=1e-6)


def test_a_ddp_sweep_writes_one_folder_per_job(tmp_path: Path) -> None:
    run_cli(["-m", *DDP, "model.width=4,8"], cwd=tmp_path)
    jobs = _run_folders(tmp_path)
    assert len(jobs) == 2
    assert all(job.parent == jobs[0].parent for job in jobs)  # one sweep folder
    assert not (tmp_path / "runs").exists()  # no rank started a run (or a sweep) of its own
    assert [_summary(job)["status"] for job in jobs] == ["completed", "completed"]
    assert (jobs[0].parent / "summary.md").exists()


def test_a_ddp_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    run_cli([*DDP, "trainer.max_epochs=1", "test=false"], cwd=tmp_path)
    (run,) = _run_folders(tmp_path)
    first = _summary(run)
    run_cli(
        [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=2"], cwd=tmp_path
    )
    assert _run_folders(tmp_path) == [run]  # resumed in place
    resumed = _summary(run)
    assert resumed["status"] == "completed"
    assert resumed["processes"] == 2
    assert resumed["epochs_completed"] == 2
    assert resumed["global_step"] == 2 * first["global_step"]


def test_several_nodes_need_a_scheduler(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, [*FAST, "trainer=multinode", "trainer.accelerator=cpu"])
    cfg.trainer.sync_batchnorm = False
    experiment = build(cfg)
    with pytest.raises(ConfigError, match=r"num_nodes=2.*SLURM.*torchrun"):
        processes_to_start(experiment.trainer)


def test_torchrun_and_srun_processes_share_one_run_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    assert shared_run_folder_arguments(["debug=fast"])[-1] == (
        "hydra.run.dir=${paths.log_dir}/runs/torchrun-abc"
    )
    assert shared_run_folder_arguments(["hydra.run.dir=x"]) == ["hydra.run.dir=x"]
    with pytest.raises(ConfigError, match="sweeps cannot run inside torchrun"):
        shared_run_folder_arguments(["-m", "model.depth=3,4"])
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    with pytest.raises(ConfigError, match=r"same hydra\.run\.dir"):
        shared_run_folder_arguments([])
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert shared_run_folder_arguments([])[-1].endswith("runs/slurm-4242")


def test_the_slurm_preset_runs_one_task_per_gpu() -> None:
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=slurm_ddp",
                "trainer=multinode",
                "trainer.num_nodes=3",
                "trainer.devices=8",
                "hydra.launcher.partition=gpu",
            ],
            return_hydra_config=True,
        )
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    assert launcher.params["nodes"] == 3
    assert launcher.params["tasks_per_node"] == launcher.params["gpus_per_node"] == 8
    assert launcher.params["partition"] == "gpu"
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.sync_batchnorm
