"""unet-lab's Hydra configs; importable as ``unet_lab.conf`` so installed copies find them."""
