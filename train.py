"""Train a U-Net: `python train.py [hydra overrides]` (see README)."""

from unet_lab.commands.train import main

if __name__ == "__main__":
    main()
