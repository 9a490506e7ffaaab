"""unet-lab: config-driven U-Net segmentation experiments (Hydra + PyTorch Lightning)."""

from unet_lab.data import SyntheticShapesDataModule
from unet_lab.losses import CrossEntropyLoss, DiceCELoss, DiceLoss
from unet_lab.metrics import SegmentationScores
from unet_lab.models import UNet
from unet_lab.module import SegmentationModule

__version__ = "0.1.0"

__all__ = [
    "CrossEntropyLoss",
    "DiceCELoss",
    "DiceLoss",
    "SegmentationModule",
    "SegmentationScores",
    "SyntheticShapesDataModule",
    "UNet",
]
