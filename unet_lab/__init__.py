"""unet-lab: config-driven U-Net segmentation experiments (Hydra + PyTorch Lightning)."""

import os

# albumentations asks PyPI for a newer version at import (up to 2 s, or a warning, offline).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


from unet_lab.data import SyntheticShapesDataModule
from unet_lab.inference import load_trained
from unet_lab.losses import CrossEntropyLoss, DiceCELoss, DiceLoss
from unet_lab.metrics import SegmentationScores
from unet_lab.models import UNet
from unet_lab.training import SegmentationModule, fit, train

__version__ = "0.2.0"

__all__ = [
    "CrossEntropyLoss",
    "DiceCELoss",
    "DiceLoss",
    "SegmentationModule",
    "SegmentationScores",
    "SyntheticShapesDataModule",
    "UNet",
    "fit",
    "load_trained",
    "train",
]
