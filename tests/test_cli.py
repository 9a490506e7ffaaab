"""The command line end to end, in a subprocess, as a user types it."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import REPO, TINY_DATA, run_cli
from folders import write_dataset

pytestmark = pytest.mark.slow


def _only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def _wandb_inspect(run_dir: Path, *flags: str) -> str:
    """``wandb leet inspect --json`` of the run folder's one offline W&B run."""
    offline = _only(sorted((run_dir / "wandb").glob("offline-run-*")))
    wandb = Path(sys.executable).parent / "wandb"
    command = [str(wandb), "leet", "inspect", "--json", *flags, str(offline)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def _wandb_summary(run_dir: Path) -> dict:
    return json.loads(_wandb_inspect(run_dir, "--summary"))


def _wandb_run_record(run_dir: Path) -> dict:
    records = [json.loads(line) for line in _wandb_inspect(run_dir).splitlines() if line]
    return next(r["run"] for r in records if r.get("type") == "run")


def _csv_epochs(run_dir: Path) -> list[int]:
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    return [int(r["epoch"]) for r in rows if r.get("train/loss_epoch")]


def test_train_writes_a_complete_run_folder(tmp_path: Path) -> None:
    result = run_cli(["debug=fast", "model.depth=2", *TINY_DATA], cwd=tmp_path)
    run_dir = _only(list(tmp_path.glob("runs/*/*")))
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["status"] == "completed"
    assert summary["epochs_completed"] == 2
    assert set(summary["val"]) >= {"dice", "iou", "acc", "dice_ellipse"}
    assert set(summary["test"]) >= {"dice", "iou", "acc"}
    for name in (
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "csv/metrics.csv",
        ".hydra/config.yaml",
        "train.log",
    ):
        assert (run_dir / name).exists(), name
    wandb = _wandb_summary(run_dir)
    assert wandb["config"]["model"]["depth"] == 2
    assert wandb["summary"]["best/val/dice"] == pytest.approx(summary["val"]["dice"])
    assert "run_group" not in _wandb_run_record(run_dir)
    offline = _only(list((run_dir / "wandb").glob("offline-run-*")))
    images = list((offline / "files" / "media" / "images" / "val").glob("examples_*.png"))
    assert len(images) == 2 * 4  # 4 validation images in each of the 2 epochs
    output = result.stdout + result.stderr
    assert str(run_dir) in output
    assert "wandb sync" in output
    assert "best val/dice" in output


def test_multirun_gives_one_folder_per_job(tmp_path: Path) -> None:
    run_cli(
        ["-m", "model.depth=1,2", "debug=fast", "trainer.max_epochs=1", *TINY_DATA], cwd=tmp_path
    )
    jobs = sorted(tmp_path.glob("multirun/*/*/*_*"))
    assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1"]
    sweep_dir = jobs[0].parent
    table = (sweep_dir / "summary.md").read_text()
    assert "| model.depth=1 |" in table and "| model.depth=2 |" in table
    assert (sweep_dir / "summary.csv").exists() and (sweep_dir / "curves.png").stat().st_size > 0
    for job, depth in zip(jobs, (1, 2), strict=True):
        assert f"model.depth={depth}" in job.name
        assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
        assert (job / "checkpoints" / "last.ckpt").exists()
        wandb = _wandb_summary(job)
        assert wandb["config"]["model"]["depth"] == depth
        assert str(wandb["config"]["model.depth"]) == str(depth)  # swept key at the top level
        assert f"model.depth={depth}" in wandb["name"]
        sweep_dir = job.parent
        group = f"{sweep_dir.parent.name}_{sweep_dir.name}"
        record = _wandb_run_record(job)
        assert record["run_group"] == group
        assert {"model:unet", "data:synthetic", "sweep"} <= set(record["tags"])


def test_a_sweep_over_model_variants(tmp_path: Path) -> None:
    models = ["unet", "unet_plusplus", "attention_unet"]
    sweep = ["-m", f"model={','.join(models)}", "model.depth=2", "model.width=4"]
    run_cli([*sweep, "debug=fast", "logger=csv", "trainer.max_epochs=1", *TINY_DATA], cwd=tmp_path)
    jobs = _sweep_jobs(tmp_path)
    chosen = [
        next(
            o
            for o in yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text())
            if o.startswith("model=")
        )
        for j in jobs
    ]
    assert chosen == [f"model={m}" for m in models]
    assert all(len(j.name) <= 160 for j in jobs)  # long override lists are shortened
    for job, target in zip(jobs, ["UNet", "UNetPlusPlus", "UNet"], strict=True):
        summary = json.loads((job / "metrics.json").read_text())
        assert summary["status"] == "completed" and summary["model"]["class"] == target


def test_a_diverging_job_fails_alone_and_the_sweep_reports_it(tmp_path: Path) -> None:
    sweep = ["-m", "optimizer.lr=0.001,1e30", "debug=fast", "logger=csv", "trainer.max_epochs=1"]
    result = run_cli([*sweep, *TINY_DATA], cwd=tmp_path)
    jobs = sorted(tmp_path.glob("multirun/*/*/*_*"), key=lambda j: int(j.name.split("_")[0]))
    statuses = [json.loads((j / "metrics.json").read_text())["status"] for j in jobs]
    assert statuses == ["completed", "failed"]
    failed = json.loads((jobs[1] / "metrics.json").read_text())
    assert failed["error"].startswith("FloatingPointError: training loss became NaN or infinite")
    table = (jobs[0].parent / "summary.md").read_text()
    assert "| optimizer.lr=1e+30 | failed |" in table and "diverged" in table
    assert "1 of 2 jobs did not complete" in result.stdout


def _sweep_jobs(tmp_path: Path) -> list[Path]:
    jobs = [j for j in tmp_path.glob("multirun/*/*/*_*") if j.is_dir()]
    return sorted(jobs, key=lambda j: int(j.name.split("_")[0]))


def test_an_optuna_search_reports_the_best_trial(tmp_path: Path) -> None:
    search = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "debug=fast"]
    run_cli([*search, "logger=csv", "trainer.max_epochs=1", *TINY_DATA], cwd=tmp_path)
    jobs = _sweep_jobs(tmp_path)
    assert len(jobs) == 2
    values = [
        json.loads((j / "metrics.json").read_text())["optimized_metric"]["value"] for j in jobs
    ]
    results = yaml.safe_load((jobs[0].parent / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(values))
    assert set(results["best_params"]) >= {"optimizer.lr", "model.depth", "loss"}
    assert (jobs[0].parent / "summary.md").exists()


def test_joblib_runs_jobs_in_parallel_with_divided_threads(tmp_path: Path) -> None:
    sweep = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.depth=1,2"]
    run_cli([*sweep, "debug=fast", "logger=csv", "trainer.max_epochs=1", *TINY_DATA], cwd=tmp_path)
    jobs = _sweep_jobs(tmp_path)
    assert [json.loads((j / "metrics.json").read_text())["status"] for j in jobs] == [
        "completed",
        "completed",
    ]
    threads = max(1, (os.cpu_count() or 1) // 2)
    for job in jobs:
        assert f"2 jobs in parallel: {threads} CPU threads" in (job / "train.log").read_text()


def test_submitit_local_runs_a_job_like_a_cluster_would(tmp_path: Path) -> None:
    sweep = ["-m", "hydra/launcher=submitit_local", "model.depth=1", "debug=fast", "logger=csv"]
    run_cli([*sweep, "trainer.max_epochs=1", *TINY_DATA], cwd=tmp_path)
    (job,) = _sweep_jobs(tmp_path)
    assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
    assert (job.parent / "summary.md").exists()


def _first_epoch_done(root: Path) -> bool:
    jobs = list(root.glob("multirun/*/*/1_*"))
    if not jobs or not (jobs[0] / "checkpoints" / "last.ckpt").exists():
        return False
    return (jobs[0] / "csv" / "metrics.csv").exists() and bool(_csv_epochs(jobs[0]))


def test_an_interrupted_sweep_resumes_with_the_same_command(tmp_path: Path) -> None:
    """Kill a sweep while its second job trains, re-run the command with resume=true: the
    finished job is left alone, the interrupted one continues from its last.ckpt."""
    sweep = [
        "-m",
        "model.depth=1,2",
        "debug=fast",
        "logger=csv",
        "trainer.max_epochs=6",
        *TINY_DATA,
    ]
    command = [sys.executable, str(REPO / "train.py"), *sweep]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    # After job 1's first epoch: its checkpoint and its CSV row are both written (the
    # checkpoint comes at validation end, the epoch's training row just after it).
    while not _first_epoch_done(tmp_path):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint of job 1"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    first, second = _sweep_jobs(tmp_path)
    finished = (first / "metrics.json").read_text()
    assert json.loads(finished)["status"] == "completed"
    assert not (second / "metrics.json").exists()  # killed: no summary written

    result = run_cli([*sweep, "resume=true"], cwd=tmp_path)
    assert [p.name for p in _sweep_jobs(tmp_path)] == [first.name, second.name]  # same folders
    assert (first / "metrics.json").read_text() == finished  # untouched
    resumed = json.loads((second / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["epochs_completed"] == 6
    assert "already completed, skipped" in result.stderr + result.stdout
    assert "continuing" in (second / "train.log").read_text()
    assert len(_csv_epochs(second)) == 6  # every epoch once, the earlier ones kept


def test_resume_continues_the_same_run_in_place(tmp_path: Path) -> None:
    # A sweep job: its folder name has '=' and ',', which Hydra's parser would reject unquoted.
    run_cli(["-m", "debug=fast", "model.depth=1", "trainer.max_epochs=1", *TINY_DATA], cwd=tmp_path)
    run_dir = _only(list(tmp_path.glob("multirun/*/*/0_*")))
    first = json.loads((run_dir / "metrics.json").read_text())
    assert (first["epochs_completed"], first["global_step"]) == (1, 4)
    run_id = (run_dir / "wandb" / "run_id").read_text()

    # Only the new override is given: the run's own overrides (debug=fast, model.depth=1) are
    # reused, or the depth-1 weights would not load into the default depth-4 model.
    result = run_cli(
        [f"ckpt_path={run_dir}/checkpoints/last.ckpt", "trainer.max_epochs=3"], cwd=tmp_path
    )
    assert f"continuing from the checkpoint {run_dir}/checkpoints/last.ckpt" in result.stdout
    assert not (tmp_path / "runs").exists()
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert (resumed["epochs_completed"], resumed["global_step"]) == (3, 12)
    assert _csv_epochs(run_dir) == [0, 1, 2]  # the first part's rows are kept, no epoch twice
    assert (run_dir / "wandb" / "run_id").read_text() == run_id
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{run_id.strip()}"))) == 2
    resume_record = _only(list((run_dir / ".hydra").glob("resume-*")))
    assert "model.depth=1" in (resume_record / "overrides.yaml").read_text()
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().count("trainer.max_epochs=1") == 1


def test_installed_wheel_trains_outside_the_repository(tmp_path: Path, wheel: Path) -> None:
    """`pip install unet-lab` then `unet-lab train`: the configs ship inside the package (the
    wheel: conftest's session fixture, which tests/test_packaging.py lists too)."""
    pip = [sys.executable, "-m", "pip"]
    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import unet_lab.conf; print(unet_lab.conf.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site))
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [str(site / "bin" / "unet-lab"), "train", "debug=fast", "logger=csv", *TINY_DATA],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    run_dir = _only(list(work.glob("runs/*/*")))
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.parametrize(
    "kind",
    [
        {"sizes": [(40, 56), (64, 48)], "image_ext": ".jpg"},  # RGB JPEG, PNG masks, 2 sizes
        {"channels": 1, "dtype": np.uint16, "image_ext": ".tif", "mask_ext": ".tif"},
    ],
    ids=["rgb-jpeg-varying-sizes", "grey-16bit-tiff"],
)
def test_train_on_a_folder_of_your_own_images(tmp_path: Path, kind: dict) -> None:
    """Only the class count is given: channels, patches and splits follow the data."""
    root = write_dataset(tmp_path / "data", count=8, **kind)
    run_cli(
        [
            "data=folder",
            f"data.root={root}",
            "data.num_classes=3",
            "trainer.max_epochs=2",
            "logger=csv",
            "callbacks.validation_images=null",
            "model.depth=2",
            "model.width=8",
        ],
        cwd=tmp_path,
    )
    run_dir = _only(list(tmp_path.glob("runs/*/*")))
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["test"] == {}  # no test split given
    assert json.loads((run_dir / "split.json").read_text())["val"]


def test_bad_data_stops_before_training(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", count=4)
    (root / "masks" / "img02.png").unlink()
    result = run_cli(
        ["data=folder", f"data.root={root}", "data.num_classes=3"], cwd=tmp_path, check=False
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {root / 'images' / 'img02.png'}: image without a mask in {root / 'masks'} "
        "(masks named otherwise: data.mask_name, e.g. '{id}_manual1', with data.image_pattern; "
        "or a list: data.pairs)"
    ]
    assert not list(tmp_path.glob("runs/*/*"))


def _unet_lab(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "unet-lab"), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_check_data_summarizes_a_good_folder(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", count=10, sizes=[(40, 56), (64, 48)])
    result = _unet_lab(
        [
            "check-data",
            "data=folder",
            f"data.root={root}",
            "data.num_classes=3",
            "data.test_fraction=0.2",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["train", "6"] for line in lines)
    assert any(line.split()[:2] == ["test", "2"] for line in lines)
    assert "40x48 .. 64x56" in result.stdout
    assert "classes (share of labelled pixels): background" in result.stdout
    assert not list(tmp_path.glob("runs/*"))  # checking writes nothing


def test_check_data_names_the_bad_file(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", count=4)
    bad = root / "masks" / "img01.png"
    bad.write_bytes(b"not a png")
    result = _unet_lab(
        ["check-data", "data=folder", f"data.root={root}", "data.num_classes=3"], cwd=tmp_path
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}: cannot be read as an image (unreadable, truncated or empty)"]


def test_show_aug_writes_a_grid(tmp_path: Path) -> None:
    result = _unet_lab(
        [
            "show-aug",
            "augmentation=medium",
            *TINY_DATA,
            "--output",
            "grid.png",
            "--samples",
            "3",
            "--variants",
            "2",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid.shape == (3 * (32 + 4), 3 * 2 * (32 + 4), 3)
