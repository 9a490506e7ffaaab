"""Segmentation networks."""

from unet_lab.models.peers import MonaiBasicUNet
from unet_lab.models.unet import UNet, level_channels

__all__ = ["MonaiBasicUNet", "UNet", "level_channels"]
