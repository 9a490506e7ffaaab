"""Multi-process (DDP) training that behaves the same in single runs and in Hydra sweeps.

Lightning's own launcher starts ranks 1..N-1 by re-running the script with its command line;
under ``-m`` each of them would start a sweep of its own (Lightning issue #11300), and lazy
``${now:...}`` folders would differ per process. Instead, rank 0 of a job starts the other
local ranks itself (the rank entry point it is given, in a new Python process) with the
job's *resolved* config (one run folder, fixed once) and the usual ``MASTER_ADDR``,
``MASTER_PORT``, ``WORLD_SIZE``, ``NODE_RANK`` and ``LOCAL_RANK`` variables, like torchrun
does; Lightning then sees processes created externally and only connects them.

Where a scheduler already starts one process per device (SLURM tasks, torchrun), nothing is
started here: Lightning's cluster environment reads their ranks.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch.distributed
from lightning_fabric.plugins.environments.lightning import find_free_network_port
from omegaconf import OmegaConf
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from pytorch_lightning.utilities import rank_zero_only

from unet_lab.errors import ConfigError

log = logging.getLogger(__name__)
# What a local rank > 0 runs: imports the entry point's module and calls it with the config file.
_RANK_PROGRAM = (
    "import importlib, sys; module, name = sys.argv[1].split(':'); "
    "getattr(importlib.import_module(module), name)(sys.argv[2])"
)
_RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK")


def is_rank_zero() -> bool:
    """Whether this process is rank 0 (or the only one), as Lightning reads it from the
    environment (torchrun, SLURM, our own launch)."""
    return getattr(rank_zero_only, "rank", 0) == 0


def processes_to_start(trainer: pl.Trainer) -> int:
    """How many processes this job must start itself: the trainer's local process count for a
    DDP run that no scheduler started, else 0 (one device, ``ddp_spawn``, SLURM, torchrun)."""
    launcher = getattr(trainer.strategy, "launcher", None)
    if not isinstance(launcher, _SubprocessScriptLauncher):
        return 0
    if launcher.cluster_environment.creates_processes_externally:
        return 0
    if trainer.num_nodes > 1:
        raise ConfigError(
            f"trainer.num_nodes={trainer.num_nodes}: several nodes need their processes started "
            "by SLURM (hydra/launcher=slurm_ddp) or torchrun; see docs/scaling-out.md"
        )
    return int(launcher.num_processes)


@contextmanager
def local_ranks(
    trainer: pl.Trainer, config: Mapping[str, Any], entry: Callable[[str], None]
) -> Iterator[None]:
    """Within the block this process is rank 0 of a DDP group whose other local ranks run
    ``entry(config_file)`` in child processes, ``config_file`` holding ``config`` (the resolved
    training config); without DDP, nothing.

    Args:
        trainer: the job's trainer; its strategy says how many local processes to start.
        config: the resolved config every rank trains.
        entry: a module-level function (importable by its module and name) that trains the
            config file it is given in a rank process.
    """
    processes = processes_to_start(trainer)
    if processes <= 1:
        yield
        return
    variables = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(find_free_network_port()),
        "WORLD_SIZE": str(processes),
        "NODE_RANK": "0",
    }
    saved = {name: os.environ.get(name) for name in _RANK_VARIABLES}
    if entry.__module__ == "__main__" or "." in entry.__qualname__:
        raise ValueError(f"{entry.__qualname__}: a rank entry point must be a module's function")
    target = f"{entry.__module__}:{entry.__qualname__}"
    with tempfile.TemporaryDirectory(prefix="unet_lab_ranks_") as folder:
        config_file = Path(folder) / "config.yaml"
        OmegaConf.save(OmegaConf.create(dict(config)), config_file)
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _RANK_PROGRAM, target, str(config_file)],
                env={**os.environ, **variables, "LOCAL_RANK": str(rank)},
            )
            for rank in range(1, processes)
        ]
        log.info("DDP: started %d more local processes (ranks 1-%d)", processes - 1, processes - 1)
        os.environ.update(variables, LOCAL_RANK="0")
        watcher = _Watcher(children)
        watcher.start()
        try:
            yield
        finally:
            watcher.stop()
            for child in children:
                _wait_or_kill(child)
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def shared_run_folder_arguments(args: list[str]) -> list[str]:
    """Adds ``hydra.run.dir`` when torchrun or ``srun`` runs this command once per process:
    every process must write into one run folder, but each would otherwise name its own from
    its start time. The folder is named from the torchrun rendezvous id or the SLURM job id,
    which all processes of the run share."""
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None:
        launcher, run_id = "torchrun", os.environ["TORCHELASTIC_RUN_ID"]
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        launcher, run_id = "slurm", os.environ.get("SLURM_JOB_ID", "none")
    else:
        return args
    if any(a in ("-m", "--multirun") for a in args):
        raise ConfigError(
            f"-m sweeps cannot run inside {launcher}'s processes: sweep with "
            "hydra/launcher=slurm_ddp, or with trainer=ddp on one machine"
        )
    if any(a.split("=", 1)[0].lstrip("+") == "hydra.run.dir" for a in args):
        return args
    if run_id == "none":
        raise ConfigError(
            f"under {launcher} give every process the same hydra.run.dir=DIR "
            "(or a torchrun --rdzv-id) so that they share one run folder"
        )
    return [*args, f"hydra.run.dir=${{paths.log_dir}}/runs/{launcher}-{run_id}"]


def _wait_or_kill(child: subprocess.Popen, timeout: float = 60) -> None:
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("DDP: rank process %d did not exit; killing it", child.pid)
        child.kill()
        child.wait()


class _Watcher(threading.Thread):
    """Stops the job when a rank process dies: rank 0 would otherwise wait for it in a
    collective until the timeout (as Lightning's own launcher does, it kills the job)."""

    def __init__(self, children: list[subprocess.Popen], period: float = 2.0) -> None:
        super().__init__(daemon=True, name="unet-lab-rank-watcher")
        self.children = children
        self.period = period
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        while not self._stopped.wait(self.period):
            failed = [c for c in self.children if c.poll() not in (None, 0)]
            if failed and not self._stopped.is_set():
                codes = ", ".join(f"pid {c.pid} exited {c.returncode}" for c in failed)
                log.error("DDP: a rank process failed (%s); stopping the job", codes)
                for child in self.children:
                    if child.poll() is None:
                        child.kill()
                time.sleep(0.5)
                os.kill(os.getpid(), signal.SIGKILL)
