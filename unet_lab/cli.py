"""The ``unet-lab`` command: ``unet-lab COMMAND [arguments]``, each command a ``main(args)`` in
:mod:`unet_lab.commands`, imported only when it runs."""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple


class Command(NamedTuple):
    """A ``unet-lab`` command: the module that runs it and its lines in the usage text."""

    module: str  # in unet_lab.commands, with a main(args) function
    help: str


COMMANDS = {
    "train": Command(
        "train",
        "train a model (same as `python train.py`); e.g. unet-lab train model.depth=5\n"
        "unet-lab train --help shows the config groups and every key",
    ),
    "eval": Command(
        "evaluate",
        "scores of a checkpoint on a split (same as `python eval.py`);\n"
        "e.g. unet-lab eval ckpt_path=runs/.../checkpoints/best.ckpt split=val",
    ),
    "predict": Command(
        "predict",
        "masks for new images of any size (same as `python predict.py`);\n"
        "e.g. unet-lab predict ckpt_path=... input=scans/ output=masks/",
    ),
    "export": Command(
        "export",
        "the network of a checkpoint as ONNX (or TorchScript), with a JSON sidecar;\n"
        "e.g. unet-lab export ckpt_path=runs/.../checkpoints/best.ckpt",
    ),
    "compare": Command(
        "compare",
        "one table (markdown, CSV) and validation curves for run or sweep folders;\n"
        "e.g. unet-lab compare multirun/2026-11-25/10-00-00-000000",
    ),
    "check-data": Command(
        "check_data",
        "read and check a data set and summarize it, with the same overrides as train;\n"
        "e.g. unet-lab check-data data=folder data.root=DIR data.num_classes=3",
    ),
    "show-aug": Command(
        "show_aug",
        "write a PNG grid of training images and masks as an augmentation changes them;\n"
        "e.g. unet-lab show-aug augmentation=heavy --output heavy.png",
    ),
    "autoplan": Command(
        "autoplan",
        "a recipe for your data from its fingerprint and this machine, as an experiment\n"
        "config with a reason per value; e.g. unet-lab autoplan data=folder data.root=DIR "
        "budget=30m",
    ),
    "cv": Command(
        "cv",
        "cross-validation: train every fold, choose postprocessing on out-of-fold\n"
        "predictions, write cv/summary.md and an ensemble for predict; e.g.\n"
        "unet-lab cv experiment=isbi2012 data.root=DIR (model=unet,unet_plusplus compares)",
    ),
    "plan": Command(
        "plan",
        "parameters, FLOPs and memory of a model on the data it would train on;\n"
        "e.g. unet-lab plan model=unet_plusplus model.depth=5",
    ),
}


def usage() -> str:
    """The usage text: every command with its help lines."""
    lines = ["usage: unet-lab COMMAND [hydra overrides]", "", "commands:"]
    for name, command in COMMANDS.items():
        first, *rest = command.help.splitlines()
        lines.append(f"  {name:<11} {first}")
        lines += [f"  {'':<11} {line}" for line in rest]
    return "\n".join(lines) + "\n"


def main() -> None:
    """``unet-lab COMMAND [arguments]``: runs the command's ``main`` on the arguments."""
    if len(sys.argv) < 2:
        print(usage(), file=sys.stderr)
        raise SystemExit(2)
    name, args = sys.argv[1], sys.argv[2:]
    if name in ("-h", "--help", "help"):
        print(usage())
        return
    if name not in COMMANDS:
        print(f"unet-lab: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(f"unet_lab.commands.{COMMANDS[name].module}")
    module.main(args)


if __name__ == "__main__":  # python -m unet_lab.cli
    main()
