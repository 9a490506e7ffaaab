"""Data modules, datasets and augmentation pipelines."""

from unet_lab.data.augmentation import compose
from unet_lab.data.datamodule import InMemoryDataModule
from unet_lab.data.dataset import SegmentationArrayDataset
from unet_lab.data.files import DataError
from unet_lab.data.folder import FolderDataModule
from unet_lab.data.synthetic import SyntheticShapesDataModule
from unet_lab.data.transforms import CoarseGridElastic

__all__ = [
    "CoarseGridElastic",
    "DataError",
    "FolderDataModule",
    "InMemoryDataModule",
    "SegmentationArrayDataset",
    "SyntheticShapesDataModule",
    "compose",
]
