"""Faults that must lose nothing: kills and full disks while checkpoints are written, damaged
checkpoint files."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, TINY_DATA, run_cli

from unet_lab.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError, save_atomically


def test_a_failed_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    save_atomically({"step": 1, "w": torch.ones(3)}, path)

    def disk_full(obj: object, file: object) -> None:
        file.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"last\.ckpt: No space left on device .*kept"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["step"] == 1  # the previous checkpoint, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left


WRITER = textwrap.dedent(
    """
    import sys, torch
    from unet_lab.checkpoint_io import save_atomically
    step = 0
    while True:
        step += 1
        weights = torch.full((2_000_000,), float(step))
        save_atomically({"step": step, "weights": weights}, sys.argv[1])
        print(step, flush=True)
    """
)


def test_kills_during_writes_never_leave_a_broken_checkpoint(tmp_path: Path) -> None:
    """SIGKILL a process that rewrites an 8 MB checkpoint in a loop: at random moments, and
    while a write is under way (its temporary file exists). Every time, the file is a complete
    checkpoint of some step."""
    path = tmp_path / "last.ckpt"
    rng = random.Random(0)
    steps = []
    for kill in range(4):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        writer.stdout.readline()  # one complete write first
        if kill % 2:
            deadline = time.monotonic() + 30
            while not list(tmp_path.glob(f".last.ckpt.{writer.pid}.tmp")):
                assert time.monotonic() < deadline, "the writer never started another write"
        else:
            time.sleep(rng.uniform(0.0, 0.3))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        checkpoint = torch.load(path)
        assert checkpoint["weights"].shape == (2_000_000,)
        assert bool((checkpoint["weights"] == checkpoint["step"]).all())
        steps.append(checkpoint["step"])
    assert all(step >= 1 for step in steps)
    # A killed writer leaves its temporary file; the next save clears it.
    save_atomically({"step": 0}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
def test_a_damaged_checkpoint_is_named_and_nothing_else_is_touched(tmp_path: Path) -> None:
    run_cli([*FAST, *TINY_DATA, "trainer.max_epochs=1", "test=false"], cwd=tmp_path)
    (run,) = (p.parent for p in tmp_path.glob("runs/*/*/metrics.json"))
    last = run / "checkpoints" / "last.ckpt"
    best = (run / "checkpoints" / "best.ckpt").read_bytes()
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a crash of another tool
    result = run_cli([f"ckpt_path={last}", "trainer.max_epochs=2"], cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert f"{last}: not a readable checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    assert (run / "checkpoints" / "best.ckpt").read_bytes() == best
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"
