"""The data module shared by every volume data set: patches for training, whole cases for
validation and test, DataLoader workers seeded like the 2D ones."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, get_worker_info

from unet_lab.arguments import InvalidArgumentError, check_float, check_int
from unet_lab.data.augmentation import stream_seed
from unet_lab.data.datamodule import (
    check_workers,
    loader_workers,
    on_gpu,
    process_rank,
    worker_seed,
)
from unet_lab.data.files import DataError
from unet_lab.data.normalization import Normalizer
from unet_lab.data.regions import Regions
from unet_lab.data.volumes.patches import PatchDataset, VolumeCase, WholeVolumeDataset

Transform = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def check_patch_size(patch_size: Sequence[int] | int) -> tuple[int, int, int]:
    """``patch_size`` as ``(D, H, W)``: three sides of at least 4 voxels (one int: a cube)."""
    sides = [patch_size] * 3 if isinstance(patch_size, int) else list(patch_size)
    if len(sides) != 3:
        raise InvalidArgumentError("patch_size", patch_size, "three sides [D, H, W] or one int")
    return tuple(check_int("patch_size", int(side), 4) for side in sides)  # type: ignore[return-value]


class VolumeDataModule(pl.LightningDataModule):
    """Serves volume cases: ``samples_per_epoch`` random patches per training epoch, whole
    cases (batch 1) for validation and test. Subclasses provide the cases per split.

    Args:
        patch_size: ``(D, H, W)`` voxels of a training patch.
        batch_size: patches per training batch.
        samples_per_epoch: training patches per epoch.
        foreground_oversample: share of patches centred on a foreground voxel (nnU-Net: 0.33).
        num_workers: DataLoader workers, or ``auto`` (see :func:`auto_workers`).
        train_transform: 3D augmentation of training patches
            (:func:`unet_lab.data.volumes.augmentation.compose3d`).
        eval_transform: accepted for symmetry with the image data modules; evaluation sees the
            cases as they are.
        seed: the seed of the patch draws.
    """

    spatial_dims = 3
    train_input_size_key = "data.patch_size"
    scale = 1.0  # volumes are resampled to the target spacing instead (preprocessing)
    regions: Regions | None = None  # overlapping classes (data.regions); None: exclusive

    def __init__(
        self,
        patch_size: Sequence[int] | int,
        batch_size: int = 2,
        samples_per_epoch: int = 250,
        foreground_oversample: float = 0.33,
        num_workers: int | str = "auto",
        train_transform: Transform | None = None,
        eval_transform: Any = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.patch_size = check_patch_size(patch_size)
        self.train_input_size = self.patch_size
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.samples_per_epoch = check_int("samples_per_epoch", samples_per_epoch, 1)
        self.foreground_oversample = check_float(
            "foreground_oversample", foreground_oversample, 0.0, 1.0
        )
        self.num_workers = check_workers(num_workers)
        self.train_transform = train_transform
        self.seed = seed
        # Normalization happens once, in preprocessing: the network sees the cases as cached.
        self.normalizer = Normalizer("none")
        self.datasets: dict[str, Dataset] = {}

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """One name per class."""

    @property
    @abstractmethod
    def in_channels(self) -> int:
        """Channels of every case."""

    @property
    @abstractmethod
    def voxel_spacing(self) -> tuple[float, float, float]:
        """``(D, H, W)`` mm of the voxels the network sees (after resampling)."""

    @abstractmethod
    def cases(self, split: str) -> list[VolumeCase]:
        """The preprocessed cases of ``split`` (``train``, ``val``, ``test``)."""

    @abstractmethod
    def has_split(self, split: str) -> bool:
        """Whether the data has this split."""

    def split_record(self) -> dict[str, Any] | None:
        """Which cases went into which split (``split.json``); None for generated data."""
        return None

    def inference_facts(self) -> dict[str, Any]:
        """What a checkpoint needs beyond the network to predict new data like this."""
        return {"spatial_dims": 3}

    def load_split(self, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Images ``(C, D, H, W)`` and labels ``(D, H, W)`` of a split, as cached."""
        cases = self.cases(split)
        return [np.asarray(c.image) for c in cases], [np.asarray(c.label) for c in cases]

    def working_sizes(self, split: str) -> list[tuple[int, ...]]:
        """``(D, H, W)`` of each case of a split."""
        return [case.shape for case in self.cases(split)]

    def setup(self, stage: str | None = None) -> None:
        if "train" not in self.datasets:
            patches = PatchDataset(
                self.cases("train"),
                self.patch_size,
                self.samples_per_epoch,
                self.foreground_oversample,
                self.train_transform,
                self.seed,
            )
            if rank := process_rank(self.trainer):  # DDP: each process draws its own patches
                patches.reseed(stream_seed(self.seed, rank))
            self.datasets["train"] = patches
        for split in ("val", "test"):
            if split not in self.datasets and self.has_split(split):
                self.datasets[split] = WholeVolumeDataset(self.cases(split))

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints by Lightning (rank 0's): where the patch draws stand, so a
        resumed run draws the patches the unbroken run would have (exactly with one process
        and ``num_workers=0``; workers draw from seeds that the torch generator in the
        checkpoint gives them)."""
        dataset = self.datasets.get("train")
        if not isinstance(dataset, PatchDataset):
            return {}
        step = int(self.trainer.global_step) if self.trainer is not None else 0
        return {"patches": dataset.state_dict(), "step": step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restored by Lightning on resume, after :meth:`setup`. The checkpoint holds rank 0's
        draws; another DDP rank continues from a stream of its own, seeded from the rank and
        the checkpoint's step."""
        self.setup("fit")
        if "patches" not in state:  # a checkpoint from before 0.2
            return
        patches = cast(PatchDataset, self.datasets["train"])
        if rank := process_rank(self.trainer):
            patches.reseed(stream_seed(self.seed, rank, int(state.get("step", 0))))
        else:
            patches.load_state_dict(state["patches"])

    def train_dataloader(self) -> DataLoader:
        workers = loader_workers(self.num_workers, self.trainer)
        return DataLoader(
            self.datasets["train"],
            batch_size=self.batch_size,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=partial(_seed_patch_worker, rank=process_rank(self.trainer))
            if workers > 0
            else None,
            pin_memory=on_gpu(self.trainer),
        )

    def _evaluation_loader(self, split: str) -> DataLoader:
        dataset = self.datasets[split]
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:  # each case on exactly one rank
            if len(dataset) < trainer.world_size:  # type: ignore[arg-type]
                raise DataError(
                    f"the {split} split has {len(dataset)} case(s) for {trainer.world_size} "  # type: ignore[arg-type]
                    "processes: each needs at least one (more cases, or fewer devices)"
                )
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(dataset, batch_size=1, sampler=sampler, pin_memory=on_gpu(self.trainer))

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader("test")


def _seed_patch_worker(worker_id: int, rank: int = 0) -> None:
    """A DataLoader worker draws its own patches and augmentations (from its torch seed and
    its process's rank, :func:`~unet_lab.data.datamodule.worker_seed`)."""
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, PatchDataset):
        info.dataset.reseed(worker_seed(info.seed, rank))
