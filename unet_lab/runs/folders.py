"""Run folders: where a run lives, claimed so that no two runs share one, and what
belongs to it (its checkpoints, its Hydra record)."""

from __future__ import annotations

import itertools
import shutil
from datetime import datetime
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from unet_lab.errors import unreadable_override

CHECKPOINT_DIR = "checkpoints"
HYDRA_DIR = ".hydra"
# Which files went into which split (folder data): written by the run on rank 0.
SPLIT_FILE = "split.json"
MULTIRUN_FLAGS = ("-m", "--multirun")
# What Hydra and the logging set-up write into a run folder before training starts.
_START_FILES = {HYDRA_DIR, "train.log"}


def run_dir_of_checkpoint(ckpt_path: str | Path) -> Path | None:
    """The run folder holding ``ckpt_path`` (``<run>/checkpoints/x.ckpt``), or None for a
    checkpoint kept elsewhere."""
    path = Path(ckpt_path).expanduser().resolve()
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else None


# Hydra's command-line flags that take the next argument as their value.
VALUE_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
               "--experimental-rerun", "--package", "-p")  # fmt: skip


def overrides_only(args: list[str]) -> list[str]:
    """The Hydra overrides among command-line ``args``: without flags (``-m``,
    ``--config-dir DIR``) and their values."""
    overrides, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in VALUE_FLAGS
        else:
            overrides.append(arg)
    return overrides


def override_key(override: str) -> str:
    """The key of a Hydra override (``+model.depth=3`` -> ``model.depth``)."""
    try:
        parsed = OverridesParser.create().parse_override(override)
    except HydraException as exc:
        raise unreadable_override(override, exc) from exc
    return parsed.get_key_element().lstrip("+~")


def quoted(value: str) -> str:
    """A Hydra override value that keeps ``=``, ``,`` and quotes (sweep folder names have them)."""
    if value[:1] in ("'", '"') or value == "null":
        return value
    return "'" + value.replace("'", "\\'") + "'"


def unquote(value: str) -> str:
    """``value`` without the quotes :func:`quoted` put around it."""
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] in ("'", '"') else value


def run_folder_argument(args: list[str], key: str = "hydra.run.dir") -> Path | None:
    """The folder that ``hydra.run.dir=...`` in ``args`` gives a single run (or, with
    ``key="hydra.sweep.dir"``, a sweep), if any."""
    for arg in reversed(args):
        name, _, value = arg.partition("=")
        if name.lstrip("+") == key:
            return Path(unquote(value))
    return None


def claimed_folder_arguments(
    args: list[str], log_dir: Path, now: datetime | None = None
) -> tuple[list[str], Path | None]:
    """Gives a new run (or sweep) its own folder, ``runs/<date>/<time>`` as Hydra would name
    it, but claimed by creating it: runs started at the same moment (array jobs, a script's
    loop, two machines on a shared disk) read the same clock, and the second of them gets
    ``<time>-1`` instead of sharing the folder. Returns the arguments with the folder for
    Hydra, and the folder (None where the command gives its own)."""
    multirun = any(a in MULTIRUN_FLAGS for a in args)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if any(override_key(a) == key for a in overrides_only(args)):
        return args, None
    now = now or datetime.now()
    parent = log_dir / ("multirun" if multirun else "runs") / now.strftime("%Y-%m-%d")
    parent.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%H-%M-%S-%f")
    for attempt in itertools.count():
        folder = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            folder.mkdir()  # atomic: exactly one process creates it
        except FileExistsError:
            continue
        return [*args, f"{key}={quoted(str(folder))}"], folder
    raise AssertionError("unreachable")


def release_if_unused(folder: Path | None) -> None:
    """Removes a claimed folder that stayed empty or was discarded (the command failed before
    the run began), and its date and ``runs`` folders if that leaves them empty."""
    if folder is None or (folder.is_dir() and any(folder.iterdir())):
        return
    for empty in (folder, folder.parent, folder.parent.parent):
        try:
            empty.rmdir()
        except FileNotFoundError:  # discarded already (discard_unstarted)
            continue
        except OSError:  # not empty: another run's folder is there
            return


def discard_unstarted(run_dir: Path) -> None:
    """Removes a run folder that holds only what was written before training could start."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= _START_FILES:
        shutil.rmtree(run_dir)
