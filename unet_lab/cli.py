"""The ``unet-lab`` command: ``unet-lab train|eval|predict|check-data|show-aug|plan ...``."""

from __future__ import annotations

import sys

USAGE = """usage: unet-lab COMMAND [hydra overrides]

commands:
  train       train a model (same as `python train.py`); e.g. unet-lab train model.depth=5
              unet-lab train --help shows the config groups and every key
  eval        scores of a checkpoint on a split (same as `python eval.py`);
              e.g. unet-lab eval ckpt_path=runs/.../checkpoints/best.ckpt split=val
  predict     masks for new images of any size (same as `python predict.py`);
              e.g. unet-lab predict ckpt_path=... input=scans/ output=masks/
  export      the network of a checkpoint as ONNX, with a JSON sidecar;
              e.g. unet-lab export ckpt_path=runs/.../checkpoints/best.ckpt
  compare     one table (markdown, CSV) and validation curves for run or sweep folders;
              e.g. unet-lab compare multirun/2026-11-25/10-00-00-000000
  check-data  read and check a data set and summarize it, with the same overrides as train;
              e.g. unet-lab check-data data=folder data.root=DIR data.num_classes=3
  show-aug    write a PNG grid of training images and masks as an augmentation changes them;
              e.g. unet-lab show-aug augmentation=heavy --output heavy.png
  plan        parameters, FLOPs and memory of a model on the data it would train on;
              e.g. unet-lab plan model=unet_plusplus model.depth=5
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
    if command == "eval":
        from unet_lab.evaluate import main as eval_main

        eval_main(args)
        return
    if command == "predict":
        from unet_lab.predict import main as predict_main

        predict_main(args)
        return
    if command == "export":
        from unet_lab.export import main as export_main

        export_main(args)
        return
    if command == "compare":
        from unet_lab.compare import main as compare_main

        compare_main(args)
        return
    if command == "check-data":
        from unet_lab.check_data import main as check_data_main

        check_data_main(args)
        return
    if command == "show-aug":
        from unet_lab.show_aug import main as show_aug_main

        show_aug_main(args)
        return
    if command == "plan":
        from unet_lab.plan import main as plan_main

        plan_main(args)
        return
    print(f"unet-lab: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    raise SystemExit(2)
