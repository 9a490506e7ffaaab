"""Segmentation networks."""

from unet_lab.models.unet import UNet, level_channels

__all__ = ["UNet", "level_channels"]
