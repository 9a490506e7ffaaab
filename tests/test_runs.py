"""Resume arguments and run-folder housekeeping, without training."""

from pathlib import Path

import pytest

from unet_lab.runs import discard_unstarted, resume_arguments, run_dir_of_checkpoint


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
