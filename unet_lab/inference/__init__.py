"""A trained network back from its checkpoint (or an exported model), and its predictions:
whole images or a sliding window, with test-time augmentation, at each image's own size."""

from unet_lab.inference.sliding_window import SlidingWindowPredictor
from unet_lab.inference.trained import (
    TrainedNetwork,
    class_probabilities,
    load_trained,
    probabilities,
)

__all__ = [
    "SlidingWindowPredictor",
    "TrainedNetwork",
    "class_probabilities",
    "load_trained",
    "probabilities",
]
