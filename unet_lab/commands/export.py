"""``unet-lab export ckpt_path=CKPT [format=onnx|torchscript] [output=FILE]``: the network of a
checkpoint (or the ensemble of a cv folder or a list of checkpoints, as one model) as an ONNX
model (or a TorchScript module) with a JSON sidecar, checked against PyTorch
(``conf/export.yaml``). ``predict`` runs it when ``ckpt_path`` names the ``.onnx`` or
``.pt`` file."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from unet_lab.config.compose import compose_config
from unet_lab.errors import input_errors_exit
from unet_lab.inference.export import check_sizes, export, model_suffix, sidecar_path
from unet_lab.inference.models import load_model
from unet_lab.runs.folders import run_dir_of_checkpoint


def run(cfg: DictConfig) -> Path:
    """Exports ``cfg.ckpt_path`` as ``cfg`` says; returns the model file written."""
    suffix = model_suffix(cfg.format)
    trained = load_model(cfg.ckpt_path)
    if cfg.output:
        path = Path(cfg.output)
    elif len(trained.sources) > 1:  # an ensemble: export/ in the folder named, or here
        named = Path(cfg.ckpt_path) if isinstance(cfg.ckpt_path, str) else Path.cwd()
        path = named / "export" / f"cv_ensemble{suffix}"
    else:  # export/ in the checkpoint's run folder, or beside a checkpoint kept elsewhere
        checkpoint = Path(trained.sources[0])
        folder = run_dir_of_checkpoint(checkpoint) or checkpoint.parent
        path = folder / "export" / f"{checkpoint.stem}{suffix}"
    difference = export(
        trained,
        path,
        cfg.format,
        int(cfg.opset),
        int(cfg.tile_size),
        source=trained.sources[0] if len(trained.sources) == 1 else str(cfg.ckpt_path),
    )
    print(f"wrote {path} and {sidecar_path(path).name}")
    sizes = check_sizes(trained.net)
    print(f"{cfg.format} vs PyTorch on sizes {sizes}: max abs difference {difference:.2e}")
    return path


def main(args: Sequence[str] | None = None) -> None:
    overrides = list(sys.argv[1:] if args is None else args)
    with input_errors_exit():
        run(compose_config("export", overrides))
