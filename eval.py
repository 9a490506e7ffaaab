"""Evaluate a checkpoint on its test split: `python eval.py ckpt_path=CKPT [split=val]`."""

from unet_lab.evaluate import main

if __name__ == "__main__":
    main()
