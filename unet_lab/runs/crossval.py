"""What ``unet-lab cv`` leaves in a sweep folder, and finding it again.

    <sweep>/                        the training sweep: one job folder per configuration x fold
    <sweep>/cv/cv.json              every configuration's per-fold and pooled scores, the best
    <sweep>/cv/summary.md           the same as tables, with the chosen postprocessing
    <sweep>/cv/dice_per_class.png   per-case Dice of every class over the out-of-fold predictions
    <sweep>/cv/<configuration>/ensemble.json   its fold checkpoints and postprocessing rules
    <sweep>/cv/<configuration>/oof/  its out-of-fold label maps (one .npz per case)

``predict``, ``eval`` and ``export`` take the sweep folder (the best configuration), its ``cv``
folder, or one configuration's folder as ``ckpt_path``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from unet_lab.errors import InputError

CV_DIR = "cv"
CV_FILE = "cv.json"
ENSEMBLE_FILE = "ensemble.json"


def write_ensemble(folder: Path, checkpoints: list[Path], postprocessing: dict[str, Any]) -> Path:
    """Writes ``folder/ensemble.json``: the checkpoints (relative to ``folder``, so the sweep
    folder can move) and the postprocessing rules (``Postprocessing.state_dict()``)."""
    folder.mkdir(parents=True, exist_ok=True)
    here = folder.resolve()
    relative = [Path(os.path.relpath(p.resolve(), here)).as_posix() for p in checkpoints]
    path = folder / ENSEMBLE_FILE
    record = {"checkpoints": relative, "postprocessing": postprocessing}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def ensemble_folder(path: Path) -> Path | None:
    """The folder holding the ``ensemble.json`` that ``path`` names: a configuration's folder
    itself, or, for a sweep folder or its ``cv`` folder, the best configuration's (as
    ``cv.json`` records it); None when ``path`` is none of these."""
    if (path / ENSEMBLE_FILE).is_file():
        return path
    for cv in (path / CV_DIR, path):
        record = cv / CV_FILE
        if record.is_file():
            best = json.loads(record.read_text()).get("best")
            if best is None:
                raise InputError(f"{record}: no configuration completed every fold")
            return cv / best
    return None


def read_ensemble(folder: Path) -> tuple[list[Path], dict[str, Any] | None]:
    """The checkpoints and postprocessing state of ``folder/ensemble.json``; a missing
    checkpoint raises :class:`InputError` naming it."""
    record = json.loads((folder / ENSEMBLE_FILE).read_text())
    checkpoints = [(folder / p).resolve() for p in record["checkpoints"]]
    for checkpoint in checkpoints:
        if not checkpoint.is_file():
            raise InputError(f"{folder / ENSEMBLE_FILE}: its checkpoint {checkpoint} is missing")
    return checkpoints, record.get("postprocessing")
