"""Lightning data module over in-memory splits; subclasses say how a split is loaded."""

from __future__ import annotations

import logging
import os
import random
import secrets
from abc import abstractmethod
from collections.abc import Sequence
from functools import partial
from typing import Any, cast

import albumentations as A
import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Sampler, get_worker_info

from unet_lab.arguments import check_int
from unet_lab.data.augmentation import seed_pipeline, stream_seed
from unet_lab.data.batch_augmentation import BatchAugmentation
from unet_lab.data.dataset import SegmentationArrayDataset
from unet_lab.data.normalization import Normalizer
from unet_lab.data.regions import Regions

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


class InMemoryDataModule(pl.LightningDataModule):
    """Loads each split once into memory and serves it through DataLoaders.

    ``train_transform`` is applied to training samples, ``eval_transform`` to validation and test
    samples (usually nothing, so evaluation sees the data as it is). ``normalization``,
    ``mean`` and ``std`` configure the :class:`Normalizer`; ``dataset`` statistics come from the
    training split, computed once. ``num_workers="auto"``: see :func:`auto_workers`. Subclasses
    set ``in_channels`` and ``seed``.
    """

    in_channels: int
    # The seed that made or split the data (drawn once when the config gives none).
    seed: int
    # Images are 2D (H, W): the network's model.spatial_dims must match.
    spatial_dims = 2
    # Side of the square training inputs (None: it varies), and the key that sets it.
    train_input_size: int | None = None
    train_input_size_key = "data.patch_size"
    # Factor of the working resolution (``data.scale``): training, and validation while
    # fitting, see the images resampled by it; the final validation and the test score the
    # network's resampled-back predictions at each image's own size. Subclasses may set it.
    scale: float = 1.0
    # Overlapping classes as regions of the label maps (data.regions); None: exclusive classes.
    regions: Regions | None = None

    def __init__(
        self,
        batch_size: int,
        num_workers: int | str = "auto",
        train_transform: A.Compose | None = None,
        eval_transform: A.Compose | None = None,
        normalization: str = "image",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalizer = Normalizer(normalization, mean, std)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_workers(num_workers)
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.datasets: dict[str, SegmentationArrayDataset] = {}
        # Training samples per epoch (None: one per image); subclasses may set it.
        self.samples_per_epoch: int | None = None
        self.device_augmentation: BatchAugmentation | None = None
        # The seed of the train augmentation as composed, before a DDP rank reseeds it.
        self._augmentation_seed: int | None = None

    def augment_on_device(self, augmentation: BatchAugmentation) -> None:
        """Runs ``augmentation`` on each training batch once it is on the training device,
        instead of augmenting per sample in the loader (``train_transform`` then holds only
        what makes the samples, such as patch crops): training images reach the device in
        [0, 1] and are normalized there, after augmenting. Call before :meth:`setup`."""
        self.device_augmentation = augmentation

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if self.device_augmentation is None or trainer is None or not trainer.training:
            return batch
        image, mask = self.device_augmentation(
            batch["image"], batch["mask"], trainer.global_rank, trainer.current_epoch
        )
        return {**batch, "image": self.normalizer.batch(image), "mask": mask}

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """One name per class; ``len(class_names)`` is the number of classes."""

    @abstractmethod
    def load_split(self, split: str) -> tuple[Sequence[np.ndarray], Sequence[np.ndarray]]:
        """Images (H, W, C) and label masks (H, W) of one split."""

    def working_split(self, split: str) -> tuple[Sequence[np.ndarray], Sequence[np.ndarray]]:
        """Images and masks of one split at the working resolution (``scale``)."""
        return self.load_split(split)

    def working_sizes(self, split: str) -> list[tuple[int, int]]:
        """``(height, width)`` of each image of one split at the working resolution."""
        return [(int(i.shape[0]), int(i.shape[1])) for i in self.working_split(split)[0]]

    def setup(self, stage: str | None = None) -> None:
        if self.normalizer.needs_fit:
            self.normalizer.fit(self.working_split("train")[0])
        for split in _STAGE_SPLITS.get(stage or "", SPLITS):
            key = self._dataset_key(split, stage or "fit")
            if key not in self.datasets:
                if split == "train":
                    self._seed_train_transform_for_rank()
                transform = self.train_transform if split == "train" else self.eval_transform
                on_device = split == "train" and self.device_augmentation is not None
                native = key != split
                images, masks = self.load_split(split) if native else self.working_split(split)
                self.datasets[key] = SegmentationArrayDataset(
                    images,
                    masks,
                    transform,
                    Normalizer("none") if on_device else self.normalizer,
                    length=self.samples_per_epoch if split == "train" else None,
                    image_scale=self.scale if native else 1.0,
                )

    def _seed_train_transform_for_rank(self) -> None:
        """Under DDP every process composes the same seeded pipeline: the ranks after the
        first reseed theirs from (seed, rank), so that they do not apply the same sequence of
        augmentations to their different images (rank 0 draws as a single process does)."""
        if isinstance(self.train_transform, A.BaseCompose):
            self._augmentation_seed = getattr(self.train_transform, "seed", None)
        self._reseed_train_transform()

    def _reseed_train_transform(self, *keys: int) -> None:
        rank = process_rank(self.trainer)
        if rank and self._augmentation_seed is not None:
            pipeline = cast(A.BaseCompose, self.train_transform)
            seed_pipeline(pipeline, stream_seed(self._augmentation_seed, rank, *keys))

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints by Lightning (rank 0's): the step, from which the other DDP
        ranks reseed their augmentation on resume (rank 0's generator state is in the
        checkpoint too, :class:`~unet_lab.training.callbacks.RandomStateInCheckpoint`)."""
        return {"step": int(self.trainer.global_step)} if self.trainer is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restored by Lightning on resume, after :meth:`setup`: a DDP rank after the first
        continues on an augmentation stream of its own, seeded from the rank and the step."""
        self._reseed_train_transform(int(state.get("step", 0)))

    def _dataset_key(self, split: str, stage: str) -> str:
        """``split``, or ``<split>:native`` for the splits scored at the images' own size when
        the working resolution differs: the test, and validation outside fitting (the final
        validation of the best checkpoint). Their images are resampled to the working
        resolution, their masks are not (the module resamples its predictions to them)."""
        if self.scale != 1 and (split == "test" or (split == "val" and stage == "validate")):
            return f"{split}:native"
        return split

    def _stage(self) -> str:
        """The trainer's current stage (``fit``, ``validate``, ``test``); ``fit`` without one."""
        trainer = self.trainer
        return "fit" if trainer is None or trainer.state.fn is None else str(trainer.state.fn.value)

    def has_split(self, split: str) -> bool:
        """Whether the data has this split (data sets without test labels have no test split)."""
        return True

    def split_record(self) -> dict[str, Any] | None:
        """Which files went into which split, for the run folder's ``split.json``; None for
        data made from a seed alone (nothing to record beyond the config)."""
        return None

    def eval_batch_size(self) -> int:
        """Batch size for validation and test."""
        return self.batch_size

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[self._dataset_key(split, self._stage())]
        sampler = None if shuffle else self._evaluation_sampler(dataset)
        workers = loader_workers(self.num_workers, self.trainer)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if shuffle else self.eval_batch_size(),
            shuffle=shuffle,
            sampler=sampler,
            drop_last=shuffle and len(dataset) > self.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=partial(seed_worker, rank=process_rank(self.trainer))
            if workers > 0
            else None,
            pin_memory=on_gpu(self.trainer),
        )

    def _evaluation_sampler(self, dataset: SegmentationArrayDataset) -> Sampler | None:
        """Under DDP, each validation/test image on exactly one rank (Lightning's default
        sampler pads the ranks to equal length with repeats, which would count images twice
        in the scores)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return None
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def check_workers(num_workers: int | str) -> int | str:
    """``num_workers`` as given: ``auto``, or a count of 0 or more."""
    return "auto" if num_workers == "auto" else check_int("num_workers", num_workers, 0)


def on_gpu(trainer: pl.Trainer | None) -> bool:
    """Whether ``trainer`` runs on a CUDA device."""
    return trainer is not None and trainer.strategy.root_device.type == "cuda"


def process_rank(trainer: pl.Trainer | None) -> int:
    """The global rank of this process under ``trainer`` (0 without one)."""
    return int(trainer.global_rank) if trainer is not None else 0


def loader_workers(num_workers: int | str, trainer: pl.Trainer | None) -> int:
    """DataLoader workers: the count given, or for ``auto`` :func:`auto_workers` for the
    trainer's device and processes."""
    if isinstance(num_workers, int):
        return num_workers
    processes = trainer.num_devices if trainer is not None else 1
    return auto_workers(on_gpu(trainer), processes)


def auto_workers(on_gpu: bool, processes: int = 1) -> int:
    """DataLoader workers for ``num_workers=auto``, from the CPUs each of this machine's
    ``processes`` has: on a GPU, all but one of them (up to 8) prepare batches while the GPU
    computes; on a CPU the model's own operations already use every core, so loading stays in
    the training process unless there are more than 4 CPUs per process (then a quarter, up to
    4, for the augmentation)."""
    cpus = max(1, len(os.sched_getaffinity(0)) // max(1, processes))
    if on_gpu:
        return min(8, cpus - 1)
    return 0 if cpus <= 4 else min(4, cpus // 4)


def data_seed(seed: int | None) -> int:
    """The seed of the data (its images or its split): ``seed``, or for an unseeded run
    (``seed=null``) one drawn from OS entropy, once per data module. It is logged, and the
    training build writes it into the run's config, so that the other DDP ranks, checkpoints
    and evaluation make the same data again."""
    if seed is not None:
        return check_int("seed", seed, 0)
    drawn = secrets.randbits(32)
    log.info(
        "data.seed=null: drew the data seed %d (data.seed=%d makes this data again)", drawn, drawn
    )
    return drawn


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """DataLoader workers: each seeds Python, numpy and its copy of the augmentation from its
    own torch seed (derived from the run's seed), so workers neither repeat each other's
    augmentations nor draw from unseeded entropy. ``rank``: the DDP process's global rank;
    every rank's torch generator is seeded alike, so its workers' torch seeds repeat those of
    rank 0, and the ranks after it mix their rank in (:func:`worker_seed`)."""
    info = get_worker_info()
    if info is None:
        return
    seed = worker_seed(info.seed, rank)
    random.seed(seed)
    np.random.seed(seed)
    transform = getattr(info.dataset, "transform", None)
    if isinstance(transform, A.BaseCompose):
        seed_pipeline(transform, seed)
    elif transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def worker_seed(torch_seed: int, rank: int) -> int:
    """The 32-bit seed of a DataLoader worker from its torch seed and its process's rank
    (rank 0: the torch seed itself, as without DDP)."""
    return stream_seed(torch_seed, rank) if rank else torch_seed % 2**32
