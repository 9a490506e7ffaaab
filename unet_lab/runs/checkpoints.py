"""Checkpoint files: what unet-lab stores in them, writing them so that a crash, a kill or a
full disk cannot leave one half-written, and reading them with errors that name the file.

Lightning writes a checkpoint through a temporary file in the system's temp folder and then
moves it; across file systems (a ``/tmp`` in memory, runs on a disk or a network share) that
move is a copy into the final name, and a kill during it leaves a truncated ``last.ckpt``.
:class:`AtomicCheckpointIO` writes the temporary file beside the target, flushes it to disk and
renames it over the target in one step, so ``last.ckpt`` is always the previous complete
checkpoint or the new complete one. Reading a damaged file fails with its name.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from unet_lab.errors import InputError, RunFault, first_line

# What a unet-lab checkpoint holds beside Lightning's state: the run's resolved config, and what
# the data decided (input channels, output channels, class names, normalization with its
# statistics, working resolution), so that evaluation and prediction need only the checkpoint.
CONFIG_KEY = "unet_lab_config"
DATA_KEY = "unet_lab_data"


class CheckpointWriteError(RunFault):
    """A checkpoint could not be written (full disk, no permission); the previous one is kept."""


class DamagedCheckpointError(InputError):
    """A checkpoint file cannot be read (truncated, damaged, not a checkpoint)."""


def save_atomically(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` into ``path`` through a temporary file in the same folder, flushed to
    disk and renamed over ``path`` (atomic on POSIX file systems)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        kept = " (the previous checkpoint is kept)" if target.exists() else ""
        raise CheckpointWriteError(
            f"could not write the checkpoint {target}: {exc.strerror or exc}{kept}"
        ) from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def _sync_folder(folder: Path) -> None:
    """Makes the rename itself durable (no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def named_load_errors(path: str | os.PathLike, load: Callable[[], Any]) -> Any:
    """Runs ``load`` (reading the checkpoint ``path``); a missing, truncated or damaged file
    raises :class:`DamagedCheckpointError` naming it, and one holding pickled objects other than
    tensors and plain values (code could run while loading it) an :class:`InputError`."""
    if not Path(path).is_file():
        raise DamagedCheckpointError(f"checkpoint not found: {path}")
    try:
        return load()
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        if "Unsupported global" in str(exc):  # a class or function to call: code
            raise InputError(
                f"{path}: refused: the checkpoint holds objects other than tensors and plain "
                "values, and loading them could run code"
            ) from exc
        raise DamagedCheckpointError(
            f"{path}: not a readable checkpoint (truncated or damaged?): {first_line(exc)}"
        ) from exc


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The content of a unet-lab checkpoint, on the CPU, loading tensors and plain values only
    (no pickled code). Raises :class:`InputError` naming the file when it is missing, damaged,
    refused, or not written by unet-lab (no :data:`DATA_KEY`)."""
    state = named_load_errors(path, lambda: torch.load(path, map_location="cpu", weights_only=True))
    if not isinstance(state, dict) or DATA_KEY not in state:
        raise InputError(f"{path}: not a unet-lab checkpoint (no {DATA_KEY})")
    return state


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with :func:`save_atomically` and named read errors."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        save_atomically(checkpoint, path)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        load = super().load_checkpoint
        return named_load_errors(path, lambda: load(path, map_location, weights_only))
