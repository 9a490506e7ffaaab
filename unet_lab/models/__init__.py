"""Segmentation networks."""

from unet_lab.models.peers import MonaiBasicUNet
from unet_lab.models.unet import UNet, level_channels
from unet_lab.models.unet_paper import UNetPaper, valid_input_sizes
from unet_lab.models.unet_plusplus import UNetPlusPlus

__all__ = [
    "MonaiBasicUNet",
    "UNet",
    "UNetPaper",
    "UNetPlusPlus",
    "level_channels",
    "valid_input_sizes",
]
