"""Augmentations that albumentations does not have."""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

from unet_lab.arguments import check_float, check_int


class CoarseGridElastic(A.DualTransform):
    """The U-Net paper's elastic deformation (Ronneberger et al., 2015, section 3.1).

    Random displacement vectors on a coarse ``grid`` x ``grid`` lattice, each component drawn
    from a Gaussian with ``sigma`` pixels standard deviation, interpolated bicubically to every
    pixel. The image is resampled bilinearly, the mask with nearest neighbours (labels stay
    exact); borders are mirrored.
    """

    def __init__(self, grid: int = 3, sigma: float = 10.0, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.grid = check_int("grid", grid, 2)
        self.sigma = check_float("sigma", sigma, 0.0)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict:
        height, width = params["shape"][:2]
        coarse = self.random_generator.normal(0.0, self.sigma, (self.grid, self.grid, 2))
        field = cv2.resize(
            coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
        )
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        return {"map_x": xs + field[..., 0], "map_y": ys + field[..., 1]}

    def _remap(
        self, array: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, order: int
    ) -> np.ndarray:
        out = cv2.remap(array, map_x, map_y, order, borderMode=cv2.BORDER_REFLECT_101)
        return out.reshape(array.shape)

    def apply(
        self, img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, **params: Any
    ) -> np.ndarray:
        return self._remap(img, map_x, map_y, cv2.INTER_LINEAR)

    def apply_to_mask(
        self, mask: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, **params: Any
    ) -> np.ndarray:
        return self._remap(mask, map_x, map_y, cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("grid", "sigma")
