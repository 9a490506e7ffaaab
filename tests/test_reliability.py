"""Faults that must lose nothing: kills and full disks while checkpoints or logs are written,
damaged checkpoint files, stops by signal, W&B that cannot start online."""

from __future__ import annotations

import csv
import datetime
import errno
import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, REPO, TINY_DATA, compose_config, run_cli
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from unet_lab.errors import InputError, RunFault, one_line
from unet_lab.runs.checkpoints import AtomicCheckpointIO, CheckpointWriteError, save_atomically
from unet_lab.training import train


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
    from unet_lab.runs.checkpoints import save_atomically
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


def _default_sigint() -> None:
    """A process inherits an ignored SIGINT (pytest-xdist workers ignore it) and Python then
    keeps ignoring it; a user's terminal delivers it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_default_sigint,
    )


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_saves_where_it_was_and_the_same_command_continues(
    stop: signal.Signals, tmp_path: Path
) -> None:
    """SIGTERM (SLURM's preemption) or Ctrl-C mid-epoch: last.ckpt holds the step reached, the
    run is recorded as interrupted, and re-running the command (resume=auto, the default)
    continues it to the end, each epoch once in its CSV."""
    command = [*FAST, *TINY_DATA, "trainer.max_epochs=4", "trainer.limit_train_batches=40",
               "data.train_size=320", "test=false", "hydra.run.dir=run"]  # fmt: skip
    process = _start(command, tmp_path)
    metrics = tmp_path / "run" / "csv" / "metrics.csv"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and "train/loss_step" in metrics.read_text()):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr
        time.sleep(0.2)
    process.send_signal(stop)
    stderr, _ = process.communicate(timeout=120)  # stdout and stderr together
    assert process.returncode == 128 + stop  # a scheduler sees the job did not finish
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["status"] == "interrupted", stderr
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == summary["global_step"] > 0
    assert f"from which the run continues (ckpt_path={tmp_path / 'run' / 'checkpoints'}" in stderr

    result = run_cli(command, cwd=tmp_path)
    assert "continuing" in result.stderr + result.stdout
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["status"] == "completed"
    assert summary["epochs_completed"] == 4
    rows = csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open())
    assert [int(r["epoch"]) for r in rows if r.get("train/loss_epoch")] == [0, 1, 2, 3]


@pytest.mark.slow
def test_resume_false_never_overwrites_a_run(tmp_path: Path) -> None:
    command = [*FAST, *TINY_DATA, "trainer.max_epochs=1", "test=false", "hydra.run.dir=run"]
    run_cli(command, cwd=tmp_path)
    before = (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes()
    again = run_cli(command, cwd=tmp_path)  # resume=auto: completed, so skipped
    assert "already completed, skipped" in again.stderr + again.stdout
    refused = run_cli([*command, "resume=false"], cwd=tmp_path, check=False)
    assert refused.returncode == 2
    assert "already holds a run" in refused.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes() == before


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_killed_and_resumed_training_ends_with_the_weights_of_an_unbroken_run(
    tmp_path: Path,
) -> None:
    """SIGKILL at random moments after an epoch was saved (3 times), each time re-running the
    same command, which continues from last.ckpt (resume=auto): the run ends at the same epoch
    and step with bit-identical weights to a run never stopped. Deterministic settings: fp32,
    deterministic algorithms, the light augmentation seeded; the random generators (torch,
    numpy, Python, the augmentation's) travel in the checkpoint."""
    common = [*FAST, *TINY_DATA, "data.train_size=160", "trainer.limit_train_batches=20",
              "trainer.max_epochs=6", "trainer.precision=32-true", "trainer.deterministic=true",
              "augmentation=light", "test=false"]  # fmt: skip
    run_cli([*common, "hydra.run.dir=unbroken"], cwd=tmp_path)
    command = [*common, "hydra.run.dir=killed"]
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    rng = random.Random(1)
    kills_mid_run = 0
    for _ in range(3):
        saved = last.stat().st_mtime if last.exists() else 0.0
        process = _start(command, tmp_path)
        deadline = time.monotonic() + 240
        while (last.stat().st_mtime if last.exists() else 0.0) == saved:  # an epoch of its own
            if process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.5))  # then anywhere in the next epoch (or its checkpoint)
        kills_mid_run += process.poll() is None
        process.kill()
        process.communicate()
    assert kills_mid_run >= 2
    run_cli(command, cwd=tmp_path)  # whatever is left
    unbroken = json.loads((tmp_path / "unbroken" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert resumed["status"] == "completed"
    assert (resumed["epochs_completed"], resumed["global_step"]) == (
        unbroken["epochs_completed"],
        unbroken["global_step"],
    )
    expected, actual = _weights(tmp_path / "unbroken"), _weights(tmp_path / "killed")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert resumed["val"]["dice"] == unbroken["val"]["dice"]


class _FakeWandbServer:
    """A W&B server on localhost that refuses the key (401), does not know the entity (404),
    or accepts connections and never answers (hang)."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        if behaviour == "hang":
            self.socket = socket.socket()
            self.socket.bind(("127.0.0.1", 0))
            self.socket.listen(64)
            self.port = self.socket.getsockname()[1]
            return
        code, message = (
            (401, "user is not logged in")
            if behaviour == "bad key"
            else (404, "entity nobody not found")
        )

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"errors": [{"message": message}]}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.behaviour == "hang":
            self.socket.close()
        else:
            self.server.shutdown()


# train.py started by a process that runs W&B itself (a notebook, a script): the child inherits
# the parent's service (WANDB_SERVICE), which the failed online run leaves holding the run's id.
FROM_A_WANDB_PROCESS = (
    "import subprocess, sys, wandb; wandb.setup(); "
    "sys.exit(subprocess.run(sys.argv[1:]).returncode)"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("behaviour", "parent"),
    [("bad key", None), ("unknown entity", None), ("hang", None), ("bad key", "wandb")],
)
def test_a_misconfigured_wandb_falls_back_to_offline(
    tmp_path: Path, behaviour: str, parent: str | None
) -> None:
    """Credentials and a server that answers the connection, so the run starts online; the
    online start fails (bounded by init_timeout) and the run trains, logging offline."""
    server = _FakeWandbServer(behaviour)
    env = {
        **os.environ,
        "WANDB_BASE_URL": f"http://127.0.0.1:{server.port}",
        "WANDB_API_KEY": "k" * 40,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("WANDB_MODE", None)
    args = [*FAST, *TINY_DATA, "logger=default", "logger.wandb.init_timeout=3"]
    if behaviour == "unknown entity":
        args.append("logger.wandb.entity=nobody")
    command = [sys.executable, str(REPO / "train.py"), *args, "hydra.run.dir=run"]
    if parent == "wandb":
        command = [sys.executable, "-c", FROM_A_WANDB_PROCESS, *command]
    try:
        result = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=240
        )
    finally:
        server.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the online run did not start" in result.stderr + result.stdout
    assert "logging offline instead" in result.stderr + result.stdout
    run = tmp_path / "run"
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, sorted(p.name for p in (run / "wandb").iterdir())
    assert (run / "csv" / "metrics.csv").is_file()


@pytest.mark.parametrize("writing", ["log", "checkpoint"])
def test_a_full_disk_stops_the_run_clearly_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writing: str
) -> None:
    """The disk fills up in epoch 2 (of 3), while the CSV log or the checkpoint is written:
    the run stops with one message naming the file, and epoch 1's last.ckpt stays whole."""
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"

    def full_after_first_checkpoint(original):
        def write(*args, **kwargs):
            if last.is_file():
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(*args, **kwargs)

        return write

    if writing == "log":
        monkeypatch.setattr(
            ExperimentWriter, "save", full_after_first_checkpoint(ExperimentWriter.save)
        )
    else:
        monkeypatch.setattr(torch, "save", full_after_first_checkpoint(torch.save))
    cfg = compose_config(run, [*FAST, *TINY_DATA, "trainer.max_epochs=3"])
    with pytest.raises(RunFault) as stopped:
        train(cfg)
    monkeypatch.undo()
    message = one_line(stopped.value)
    assert message is not None and "No space left on device" in message
    named = "metrics.csv" if writing == "log" else ".ckpt"
    assert named in message and f"the last complete checkpoint {last} is kept" in message
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["epoch"] == 0  # epoch 1's, complete
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"


KILLERS = textwrap.dedent(
    """
    import os
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Checkpoint

    class BeforeCheckpoint(pl.Callback):
        # epoch 1's rows of steps are written, its checkpoint is not
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1 and not os.environ.get("NO_KILL"):
                os._exit(9)

    class AfterCheckpoint(Checkpoint):
        # checkpoint callbacks run last, in order: epoch 1's checkpoint is written, its
        # training-scores row is not (Lightning logs it after the checkpoint callbacks)
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1 and not os.environ.get("NO_KILL"):
                os._exit(9)
    """
)


def _csv_rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "csv" / "metrics.csv").open()))


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["BeforeCheckpoint", "AfterCheckpoint"])
def test_a_kill_at_an_epoch_end_leaves_the_log_as_an_unbroken_runs(
    tmp_path: Path, moment: str
) -> None:
    """SIGKILL-like exits at the two sides of epoch 1's checkpoint, then the same command: the
    CSV log ends equal to an unbroken run's, every training row once (rows logged after the
    checkpoint are dropped on resume; an epoch row the kill prevented is logged from the
    checkpoint), and last.ckpt was the latest epoch even though val/dice did not improve."""
    (tmp_path / "killers.py").write_text(KILLERS)
    common = [*FAST, *TINY_DATA, "trainer.max_epochs=3", "trainer.limit_train_batches=2",
              "trainer.deterministic=true", "test=false"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    command = [sys.executable, str(REPO / "train.py"), *common, "hydra.run.dir=killed",
               f"+callbacks.killer._target_=killers.{moment}"]  # fmt: skip
    killed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert killed.returncode == 9
    saved = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["epoch"] == (1 if moment == "AfterCheckpoint" else 0)
    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={**env, "NO_KILL": "1"})  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run_cli([*common, "hydra.run.dir=unbroken"], cwd=tmp_path)

    def training_log(run: str) -> list[tuple[str, ...]]:
        rows = _csv_rows(tmp_path / run)
        return [(r["epoch"], r["step"], r["train/loss_step"], r["train/loss_epoch"],
                 r["train/dice"], r["val/dice"]) for r in rows]  # fmt: skip

    assert training_log("killed") == training_log("unbroken")


def test_resuming_reads_checkpoints_with_the_same_named_errors(tmp_path: Path) -> None:
    """Lightning's resume reads through AtomicCheckpointIO: a missing, damaged or code-holding
    checkpoint gives the same one-line errors as eval and predict."""
    io = AtomicCheckpointIO()
    with pytest.raises(InputError, match=r"checkpoint not found: .*none\.ckpt"):
        io.load_checkpoint(tmp_path / "none.ckpt")
    (tmp_path / "damaged.ckpt").write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(InputError, match=r"damaged.ckpt: not a readable checkpoint \(truncated"):
        io.load_checkpoint(tmp_path / "damaged.ckpt")
    torch.save({"made": datetime.datetime(2026, 1, 1)}, tmp_path / "code.ckpt")  # a global
    with pytest.raises(InputError, match=r"code\.ckpt: refused: .* could run code"):
        io.load_checkpoint(tmp_path / "code.ckpt", weights_only=True)
