"""``unet-lab compare DIR... [--output DIR] [--metric KEY]``: one table (``summary.md``,
``summary.csv``) and the validation curves (``curves.png``) of the runs in run or sweep folders."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from unet_lab.errors import InputError, input_errors_exit
from unet_lab.runs.compare import write_comparison
from unet_lab.runs.summary import SUMMARY_FILE


def main(args: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="unet-lab compare", description=__doc__)
    parser.add_argument("folders", nargs="+", type=Path, help="run folders or folders above them")
    parser.add_argument("--output", type=Path, help="where to write (default: the first folder)")
    parser.add_argument("--metric", default="val/dice", help="the curve to plot per epoch")
    options = parser.parse_args(list(args))
    output = options.output or options.folders[0]
    with input_errors_exit():
        written = write_comparison(options.folders, output, options.metric)
        if written is None:
            folders = ", ".join(str(folder) for folder in options.folders)
            raise InputError(f"no run folders (with {SUMMARY_FILE}) under {folders}")
    print(written.read_text())
