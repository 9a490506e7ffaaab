"""The ``unet-lab`` command: ``unet-lab train [overrides]``."""

from __future__ import annotations

import sys

USAGE = """usage: unet-lab COMMAND [hydra overrides]

commands:
  train    train a model (same as `python train.py`); e.g. unet-lab train model.depth=5
           unet-lab train --help shows the config groups and every key
"""


def main() -> None:
    if len(sys.argv) < 2:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    if sys.argv[1] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, args = sys.argv[1], sys.argv[2:]
    if command == "train":
        from unet_lab.train import main as train_main

        train_main(args)
        return
    print(f"unet-lab: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    raise SystemExit(2)
