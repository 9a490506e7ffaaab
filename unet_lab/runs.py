"""Run folders: resuming one in place, and its summary file ``metrics.json``."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

CHECKPOINT_DIR = "checkpoints"
HYDRA_DIR = ".hydra"
SUMMARY_FILE = "metrics.json"
_MULTIRUN_FLAGS = ("-m", "--multirun")
# What Hydra and the logging set-up write into a run folder before training starts.
_START_FILES = {HYDRA_DIR, "train.log"}


def run_dir_of_checkpoint(ckpt_path: str | Path) -> Path | None:
    """The unet-lab run folder holding ``ckpt_path`` (``<run>/checkpoints/x.ckpt``), if any."""
    path = Path(ckpt_path).expanduser().resolve()
    run_dir = path.parent.parent
    if path.parent.name == CHECKPOINT_DIR and (run_dir / HYDRA_DIR / "overrides.yaml").exists():
        return run_dir
    return None


def saved_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of the run's latest start (first start or last resume)."""
    starts = [run_dir / HYDRA_DIR, *sorted((run_dir / HYDRA_DIR).glob("resume-*"))]
    return list(yaml.safe_load((starts[-1] / "overrides.yaml").read_text()) or [])


def _override_key(override: str) -> str:
    return OverridesParser.create().parse_override(override).get_key_element().lstrip("+~")


def quoted(value: str) -> str:
    """A Hydra override value that keeps ``=``, ``,`` and quotes (sweep folder names have them)."""
    if value[:1] in ("'", '"') or value == "null":
        return value
    return "'" + value.replace("'", "\\'") + "'"


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] in ("'", '"') else value


def run_folder_argument(args: list[str]) -> Path | None:
    """The folder that ``hydra.run.dir=...`` in ``args`` gives a single run, if any."""
    for arg in reversed(args):
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "hydra.run.dir":
            return Path(_unquote(value))
    return None


def _is_ckpt_path(arg: str) -> bool:
    return arg.split("=", 1)[0].lstrip("+") == "ckpt_path"


def resume_arguments(args: list[str]) -> list[str]:
    """Rewrites command-line overrides so that ``ckpt_path=<run>/checkpoints/last.ckpt``
    resumes that run in its own folder, with its own overrides (the new ones win).

    The checkpoint path is quoted for Hydra, so paths of sweep jobs (``model.depth=3,...``)
    work as typed. Checkpoints outside a run folder start a new run; sweeps are left as they are.
    """
    if any(a in _MULTIRUN_FLAGS for a in args):
        return args
    args = [
        f"{a.split('=', 1)[0]}={quoted(a.split('=', 1)[1])}" if _is_ckpt_path(a) else a
        for a in args
    ]
    ckpts = [_unquote(a.split("=", 1)[1]) for a in args if _is_ckpt_path(a)]
    run_dir = run_dir_of_checkpoint(ckpts[-1]) if ckpts else None
    if run_dir is None:
        return args
    overrides = [a for a in args if not a.startswith("-")]
    given = {_override_key(a) for a in overrides}
    earlier = [o for o in saved_overrides(run_dir) if _override_key(o) not in given | {"ckpt_path"}]
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    placement = [f"hydra.output_subdir={HYDRA_DIR}/resume-{stamp}"]
    if not any(key.startswith("hydra.run.dir") for key in given):
        placement.append(f"hydra.run.dir={quoted(str(run_dir))}")
    return earlier + args + placement


def claimed_folder_arguments(
    args: list[str], log_dir: Path, now: datetime | None = None
) -> tuple[list[str], Path | None]:
    """Gives a new run (or sweep) its own folder, ``runs/<date>/<time>`` as Hydra would name
    it, but claimed by creating it: runs started at the same moment (array jobs, a script's
    loop, two machines on a shared disk) read the same clock, and the second of them gets
    ``<time>-1`` instead of sharing the folder. Returns the arguments with the folder for
    Hydra, and the folder (None where the command gives its own)."""
    multirun = any(a in _MULTIRUN_FLAGS for a in args)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if any(_override_key(a) == key for a in args if not a.startswith("-")):
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
    """Removes a claimed folder that stayed empty (the command failed before the run began),
    and its date and ``runs`` folders if that leaves them empty."""
    if folder is None or not folder.is_dir() or any(folder.iterdir()):
        return
    for empty in (folder, folder.parent, folder.parent.parent):
        try:
            empty.rmdir()
        except OSError:  # not empty: another run's folder is there
            return


def _is_resume_true(arg: str) -> bool:
    key, _, value = arg.partition("=")
    return key.lstrip("+") == "resume" and value.lower() == "true"


def sweep_resume_arguments(args: list[str], log_dir: Path) -> list[str]:
    """For ``-m ... resume=true``: points Hydra at the newest earlier sweep folder under
    ``log_dir/multirun`` started with the same overrides (``resume`` aside), so that its
    finished jobs are skipped and its unfinished ones continue (see ``train``). Without such
    a folder the sweep starts anew."""
    if not any(a in _MULTIRUN_FLAGS for a in args) or not any(map(_is_resume_true, args)):
        return args
    if any(_override_key(a) == "hydra.sweep.dir" for a in args if not a.startswith("-")):
        return args
    wanted = sorted(a for a in args if not a.startswith("-") and _override_key(a) != "resume")
    records = sorted(
        (log_dir / "multirun").glob("*/*/multirun.yaml"), key=lambda p: p.stat().st_mtime
    )
    for record in reversed(records):
        task = yaml.safe_load(record.read_text())["hydra"]["overrides"]["task"]
        if sorted(t for t in task if _override_key(t) != "resume") == wanted:
            return [*args, f"hydra.sweep.dir={quoted(str(record.parent))}"]
    print(
        f"resume=true: no earlier sweep with these overrides in {log_dir / 'multirun'}: a new one"
    )
    return args


def finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a run folder whose run completed, else None."""
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") == "completed" else None


def discard_unstarted(run_dir: Path) -> None:
    """Removes a run folder that holds only what was written before training could start."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= _START_FILES:
        shutil.rmtree(run_dir)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Writes ``metrics.json`` (non-finite scores such as NaN for absent classes become null)."""
    path = run_dir / SUMMARY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(summary), indent=2) + "\n")
    tmp.replace(path)
    return path
