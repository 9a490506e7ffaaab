"""The embedded default data set: procedurally generated textured shapes (see ``shapes``)."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np

from unet_lab.arguments import check_float, check_int
from unet_lab.data.datamodule import SPLITS, InMemoryDataModule, data_seed
from unet_lab.data.shapes import SHAPE_KINDS, render_shapes
from unet_lab.data.splits import split_sizes


class SyntheticShapesDataModule(InMemoryDataModule):
    """Textured shapes on noisy textured backgrounds; class = shape kind.

    Deterministic from ``seed``: the same arguments give the same images on every machine and in
    every process (``seed=None``: a seed drawn once, see :func:`data_seed`). ``num_classes``
    counts the background: 2 is binary (any shape is foreground), 3..6 use that many - 1 shape
    kinds.
    """

    def __init__(
        self,
        image_size: int = 96,
        in_channels: int = 3,
        num_classes: int = 4,
        train_size: int = 1024,
        val_size: int = 128,
        test_size: int = 128,
        max_objects: int = 6,
        noise: float = 0.08,
        seed: int | None = 0,
        batch_size: int = 4,
        num_workers: int | str = "auto",
        train_transform: A.Compose | None = None,
        eval_transform: A.Compose | None = None,
        normalization: str = "image",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(
            batch_size, num_workers, train_transform, eval_transform, normalization, mean, std
        )
        self.image_size = check_int("image_size", image_size, 8)
        self.train_input_size, self.train_input_size_key = image_size, "data.image_size"
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.num_classes = check_int("num_classes", num_classes, 2, len(SHAPE_KINDS) + 1)
        self.split_sizes = split_sizes(train_size, val_size, test_size)
        self.max_objects = check_int("max_objects", max_objects, 1)
        self.noise = check_float("noise", noise, 0.0)
        self.seed = data_seed(seed)

    @property
    def class_names(self) -> list[str]:
        if self.num_classes == 2:
            return ["background", "shape"]
        return ["background", *SHAPE_KINDS[: self.num_classes - 1]]

    def working_sizes(self, split: str) -> list[tuple[int, int]]:
        return [(self.image_size, self.image_size)] * self.split_sizes[split]  # not rendered

    def load_split(self, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        split_id = SPLITS.index(split)
        samples = [
            render_shapes(
                np.random.default_rng([self.seed, split_id, index]),
                self.image_size,
                self.in_channels,
                self.num_classes,
                self.max_objects,
                self.noise,
            )
            for index in range(self.split_sizes[split])
        ]
        return [image for image, _ in samples], [mask for _, mask in samples]
