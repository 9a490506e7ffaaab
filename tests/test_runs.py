"""Resume arguments, run folders claimed per run, and housekeeping, without training."""

from datetime import datetime
from pathlib import Path

import pytest

from unet_lab.config.resolvers import MAX_FOLDER_NAME, short_name
from unet_lab.runs.folders import (
    claimed_folder_arguments,
    discard_unstarted,
    release_if_unused,
    run_dir_of_checkpoint,
)
from unet_lab.runs.resume import resume_arguments


def _run_folder(root: Path, overrides: list[str], name: str = "0_model.depth=3,x=1") -> Path:
    run_dir = root / name
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    return run_dir


def test_resume_reuses_the_runs_overrides_and_folder(tmp_path: Path) -> None:
    run_dir = _run_folder(tmp_path, ["model.depth=3", "trainer.max_epochs=1", "debug=fast"])
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    args = resume_arguments([f"ckpt_path={ckpt}", "trainer.max_epochs=5"])
    assert args[:2] == ["model.depth=3", "debug=fast"]  # the user's max_epochs wins
    assert f"ckpt_path='{ckpt}'" in args and "trainer.max_epochs=5" in args
    assert f"hydra.run.dir='{run_dir}'" in args
    assert any(a.startswith("hydra.output_subdir=.hydra/resume-") for a in args)


def test_the_latest_resume_record_wins(tmp_path: Path) -> None:
    run_dir = _run_folder(tmp_path, ["model.depth=3"])
    for stamp, depth in (("2026-01-01_00-00-00-000000", 4), ("2026-01-02_00-00-00-000000", 5)):
        record = run_dir / ".hydra" / f"resume-{stamp}"
        record.mkdir()
        (record / "overrides.yaml").write_text(f"- model.depth={depth}\n")
    args = resume_arguments([f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"])
    assert args[0] == "model.depth=5"


def test_foreign_checkpoints_and_sweeps_are_left_alone(tmp_path: Path) -> None:
    foreign = tmp_path / "weights.ckpt"
    assert resume_arguments([f"ckpt_path={foreign}", "a=1"]) == [f"ckpt_path='{foreign}'", "a=1"]
    assert resume_arguments(["ckpt_path=null"]) == ["ckpt_path=null"]
    sweep = ["-m", f"ckpt_path={foreign}", "model.depth=3,4"]
    assert resume_arguments(sweep) == sweep
    assert run_dir_of_checkpoint(foreign) is None


def test_user_quoted_paths_are_understood(tmp_path: Path) -> None:
    run_dir = _run_folder(tmp_path, ["model.depth=3"])
    args = resume_arguments([f"ckpt_path='{run_dir / 'checkpoints' / 'last.ckpt'}'"])
    assert args[0] == "model.depth=3"


@pytest.mark.parametrize(
    ("contents", "removed"),
    [({".hydra", "train.log"}, True), ({".hydra"}, True), ({".hydra", "checkpoints"}, False)],
)
def test_only_unstarted_run_folders_are_removed(
    tmp_path: Path, contents: set, removed: bool
) -> None:
    run_dir = tmp_path / "run"
    for name in contents:
        (run_dir / name).mkdir(parents=True)
    discard_unstarted(run_dir)
    assert run_dir.exists() != removed


def test_runs_started_at_the_same_moment_get_their_own_folders(tmp_path: Path) -> None:
    """The same clock reading (array jobs, two machines on one disk) gives two folders: each
    is claimed by creating it, so the second becomes <time>-1."""
    moment = datetime(2026, 11, 26, 9, 30, 0, 123456)
    first, folder_a = claimed_folder_arguments(["model.depth=3"], tmp_path, moment)
    second, folder_b = claimed_folder_arguments(["model.depth=3"], tmp_path, moment)
    assert folder_a == tmp_path / "runs" / "2026-11-26" / "09-30-00-123456"
    assert folder_b == tmp_path / "runs" / "2026-11-26" / "09-30-00-123456-1"
    assert first[-1] == f"hydra.run.dir='{folder_a}'"
    assert second[-1] == f"hydra.run.dir='{folder_b}'"
    sweep, sweep_folder = claimed_folder_arguments(["-m", "model.depth=3,4"], tmp_path, moment)
    assert sweep_folder == tmp_path / "multirun" / "2026-11-26" / "09-30-00-123456"
    assert sweep[-1].startswith("hydra.sweep.dir=")
    given = ["hydra.run.dir=mine"]
    assert claimed_folder_arguments(given, tmp_path, moment) == (given, None)
    (folder_a / "train.log").write_text("started\n")
    release_if_unused(folder_a)  # a run began here: kept
    release_if_unused(folder_b)  # the command failed before its run began: removed
    assert folder_a.is_dir() and not folder_b.exists()
    release_if_unused(sweep_folder)  # and with it the empty multirun/<date>/ and multirun/
    assert not (tmp_path / "multirun").exists()
    folder_a.joinpath("train.log").unlink()
    folder_a.rmdir()  # a run whose config failed: discard_unstarted removed its folder
    release_if_unused(folder_a)  # its empty runs/<date>/ and runs/ go too
    assert not (tmp_path / "runs").exists()


def test_job_folder_names_are_one_folder_even_with_paths_in_the_overrides() -> None:
    assert short_name("0_data.root=/data/x,model.depth=3") == "0_data.root=_data_x,model.depth=3"
    long = short_name("1_data.root=/" + "a" * 300)
    assert "/" not in long and len(long) <= MAX_FOLDER_NAME
    assert long != short_name("1_data.root=_" + "a" * 300)  # the hash keeps them apart
