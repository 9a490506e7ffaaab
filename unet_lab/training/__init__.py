"""Training: a run built from its config (:func:`build`), trained as a list of steps
(:func:`train`), the LightningModule, callbacks, loggers, precision, schedulers, and the DDP
launcher; :func:`fit` runs the train command from Python."""

from unet_lab.training.app import fit
from unet_lab.training.build import Experiment, build
from unet_lab.training.module import SegmentationModule
from unet_lab.training.run import train

__all__ = ["Experiment", "SegmentationModule", "build", "fit", "train"]
