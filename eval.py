"""Evaluate a checkpoint on its test split: `python eval.py ckpt_path=CKPT [split=val]`."""

from unet_lab.commands.evaluate import main

if __name__ == "__main__":
    main()
