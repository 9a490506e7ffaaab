"""``unet-lab cv [--connectivity full|face] [--device D] OVERRIDES``: cross-validation as one
command. Trains every fold of one configuration, or of several (``model=unet,unet_plusplus``),
as a sweep (any launcher; re-running the same command continues it), predicts each case with the
fold network that did not train on it, chooses connected-component postprocessing on those
out-of-fold predictions, and writes ``<sweep>/cv/``: ``summary.md``, ``cv.json``, a box plot of
per-case Dice per class, and per configuration an ensemble folder that ``predict``, ``eval`` and
``export`` take as ``ckpt_path``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from unet_lab.crossval.folds import fold_count, sweep_arguments
from unet_lab.crossval.summary import summarize
from unet_lab.errors import input_errors_exit
from unet_lab.inference.postprocessing import CONNECTIVITIES
from unet_lab.inference.trained import pick_device
from unet_lab.runs.crossval import CV_FILE
from unet_lab.training.app import run_sweep
from unet_lab.training.run import quiet_third_party


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(
        prog="unet-lab cv",
        description="Train every fold, pick postprocessing on out-of-fold predictions, "
        "summarize. Other arguments are training overrides (as for unet-lab train).",
    )
    parse.add_argument(
        "--connectivity",
        choices=CONNECTIVITIES,
        default="full",
        help="which neighbours connect a component (face: sides only)",
    )
    parse.add_argument("--device", default="auto", help="for the out-of-fold predictions")
    return parse


def run(args: Sequence[str]) -> Path:
    """Runs the cross-validation ``args`` ask for; returns the sweep folder."""
    options, overrides = parser().parse_known_args(list(args))
    with input_errors_exit():
        folds = fold_count(overrides)
        device = pick_device(options.device)
    sweep_dir = run_sweep(sweep_arguments(overrides, folds))
    quiet_third_party()
    with input_errors_exit():
        cv, best = summarize(sweep_dir, folds, options.connectivity, device)
    print((cv / "summary.md").read_text())
    print(f"wrote {cv / 'summary.md'}, {cv / CV_FILE} and the box plot")
    if best is None:
        print("no configuration completed every fold: no ensemble; re-run the command to go on")
        raise SystemExit(1)
    print(
        "predict with the ensemble of its folds (and their postprocessing):\n"
        f"  python predict.py ckpt_path={sweep_dir} input=IMAGES output=DIR"
    )
    return sweep_dir


def main(args: Sequence[str] | None = None) -> None:
    run(list(sys.argv[1:] if args is None else args))
