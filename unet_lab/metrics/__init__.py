"""What runs report: overlap scores from a confusion matrix (Dice, IoU, accuracy), surface
distances (HD95, ASD), and the Rand error of boundary maps (ISBI 2012)."""

from unet_lab.metrics.regions import boundary_rand_error
from unet_lab.metrics.scores import SegmentationScores, scores_from_confusion
from unet_lab.metrics.surface import SurfaceDistances

__all__ = ["SegmentationScores", "SurfaceDistances", "boundary_rand_error", "scores_from_confusion"]
