"""Out-of-fold predictions: every case predicted by the one fold network that did not train on
it, stored one file per case, and scored together (pooled) with or without postprocessing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unet_lab.crossval.folds import Configuration
from unet_lab.inference.evaluation import SplitScores, data_config, load_data, predicted_cases
from unet_lab.inference.postprocessing import Postprocessing
from unet_lab.inference.sliding_window import SlidingWindowPredictor
from unet_lab.inference.trained import load_trained
from unet_lab.inference.volumes import default_tile_size

OOF_DIR = "oof"


@dataclass
class OutOfFold:
    """A configuration's stored out-of-fold predictions (``folder/oof/<case>.npz``: predicted
    and true labels, spacing) and what scoring them needs."""

    folder: Path
    class_names: list[str]
    ignore_index: int | None
    include_background: bool

    def cases(self) -> Iterator[tuple[str, np.ndarray, np.ndarray, list[float] | None]]:
        """(name, prediction, truth, spacing in mm or None) per case, read one at a time."""
        for path in sorted((self.folder / OOF_DIR).glob("*.npz")):
            with np.load(path) as stored:
                spacing = stored["spacing"].tolist() if stored["spacing"].size else None
                yield path.stem, stored["prediction"], stored["truth"], spacing

    def scores(
        self, postprocessing: Postprocessing | None = None
    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Pooled scores over every case (Dice over all their pixels, HD95 and ASD averaged
        over cases) and one row per case, after ``postprocessing`` if given."""
        scores = SplitScores(self.class_names, self.ignore_index, self.include_background)
        for name, prediction, truth, spacing in self.cases():
            labels = postprocessing(prediction) if postprocessing else prediction
            scores.add(name, labels, truth, spacing)
        return scores.compute(), scores.rows


def predict_out_of_fold(
    configuration: Configuration, folder: Path, device: torch.device
) -> OutOfFold:
    """Predicts every fold's validation cases with that fold's best checkpoint, as its
    validation did (tiles and overlap of ``module.eval_*``, else the predict defaults), without
    postprocessing, and stores them in ``folder/oof/``. Cases already stored are kept (a
    re-run resumes)."""
    target = folder / OOF_DIR
    target.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {}
    for fold in sorted(configuration.runs):
        run = configuration.runs[fold]
        trained = load_trained(run.checkpoint)
        trained.net.to(device)
        module = trained.config.get("module", {})
        meta = {
            "class_names": trained.class_names,
            "ignore_index": module.get("ignore_index"),
            "include_background": bool(module.get("include_background", False)),
        }
        # The fold's cases are stored once per checkpoint: a retrained fold is predicted again.
        done = target / f".fold{fold}"
        stamp = f"{run.checkpoint.stat().st_mtime_ns} {run.checkpoint.stat().st_size}"
        if done.is_file() and done.read_text() == stamp:
            continue
        predictor = SlidingWindowPredictor(
            tile_size=module.get("eval_tile_size") or default_tile_size(trained),
            overlap=float(module.get("eval_overlap", 0.25)),
        )
        datamodule = load_data(data_config(trained.config, []))
        for case in predicted_cases(trained, datamodule, "val", predictor, device, False):
            np.savez_compressed(
                target / f"{case.name}.npz",
                prediction=case.prediction.astype(np.int32),
                truth=np.asarray(case.truth).astype(np.int32),
                spacing=np.asarray(case.spacing if case.spacing is not None else [], float),
            )
        done.write_text(stamp)
    return OutOfFold(folder, **meta)
