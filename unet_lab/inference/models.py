"""The model a ``ckpt_path`` names, for ``predict``, ``eval`` and ``export``: one checkpoint, a
list of checkpoints (an ensemble), a run folder (its best checkpoint), the folder of a
cross-validation (its best configuration's folds, with their postprocessing) or an exported
model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unet_lab.errors import InputError
from unet_lab.inference.ensemble import load_ensemble
from unet_lab.inference.export import load_exported
from unet_lab.inference.postprocessing import Postprocessing
from unet_lab.inference.trained import TrainedNetwork, load_trained
from unet_lab.runs.crossval import ensemble_folder, read_ensemble
from unet_lab.runs.folders import CHECKPOINT_DIR


def load_model(spec: str | Path | Sequence[str | Path]) -> TrainedNetwork:
    """The network(s) ``spec`` names (see the module docstring); several networks become one
    :class:`~unet_lab.inference.ensemble.Ensemble`. A path that is none of these raises
    :class:`InputError` naming it."""
    if not isinstance(spec, str | Path):
        paths = list(spec)
        return load_ensemble(paths) if len(paths) != 1 else load_model(paths[0])
    path = Path(spec).expanduser()
    if path.is_dir():
        folder = ensemble_folder(path)
        if folder is not None:
            checkpoints, state = read_ensemble(folder)
            trained = load_ensemble(checkpoints)
            trained.postprocessing = Postprocessing.from_state_dict(state) if state else None
            return trained
        best = path / CHECKPOINT_DIR / "best.ckpt"
        if best.is_file():
            return load_trained(best)
        raise InputError(
            f"ckpt_path={spec}: a folder without checkpoints/best.ckpt (a run) or cv/cv.json "
            "(a cross-validation)"
        )
    if path.suffix in (".onnx", ".pt"):
        return load_exported(path)
    return load_trained(path)


def describe(trained: TrainedNetwork) -> str:
    """What was loaded, for the commands' output: the checkpoint, or the ensemble's size."""
    if len(trained.sources) > 1:
        return f"an ensemble of {len(trained.sources)} networks"
    return trained.sources[0] if trained.sources else "the model"
