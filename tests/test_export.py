"""`unet-lab export`: ONNX with dynamic sizes, verified against PyTorch, used by predict.py."""

import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
import torch
from conftest import FAST, TINY_DATA, compose_config

from unet_lab.errors import InputError
from unet_lab.export import load_exported
from unet_lab.export import main as export_main
from unet_lab.inference import load_trained
from unet_lab.predict import main as predict_main
from unet_lab.train import train


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    run = tmp_path_factory.mktemp("run")
    train(compose_config(run, [*FAST, *TINY_DATA, "data.normalization=dataset"]))
    checkpoint = run / "checkpoints" / "last.ckpt"
    export_main([f"ckpt_path={checkpoint}"])
    return checkpoint, run / "export" / "last.onnx"


@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (3, 3, 64, 29), (1, 3, 200, 121)])
def test_onnx_matches_pytorch_on_odd_non_square_sizes(exported, shape) -> None:
    checkpoint, model = exported
    net = load_trained(checkpoint).net
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    image = torch.randn(*shape)
    (logits,) = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        expected = net(image).numpy()
    difference = float(np.abs(logits - expected).max())
    print(f"{shape}: max abs difference {difference:.2e}")  # reported with pytest -s
    assert logits.shape == expected.shape and difference < 1e-4


def test_the_sidecar_says_how_to_use_the_model(exported) -> None:
    checkpoint, model = exported
    meta = json.loads(model.with_suffix(".json").read_text())
    trained = load_trained(checkpoint)
    assert meta["class_names"] == trained.class_names and meta["in_channels"] == 3
    assert meta["normalization"]["mode"] == "dataset" and len(meta["normalization"]["mean"]) == 3
    assert meta["size_multiple"] == 4 and meta["max_abs_difference_vs_pytorch"] < 1e-4


def test_predict_with_the_onnx_model_gives_the_checkpoints_masks(exported, tmp_path: Path) -> None:
    checkpoint, model = exported
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "scan.png"), rng.integers(0, 255, (90, 70, 3), np.uint8))
    for source, out in ((checkpoint, "from_ckpt"), (model, "from_onnx")):
        paths = [
            f"ckpt_path={source}",
            f"input={tmp_path / 'scan.png'}",
            f"output={tmp_path / out}",
        ]
        predict_main([*paths, "window.tile_size=32"])
    first = cv2.imread(str(tmp_path / "from_ckpt" / "scan.png"), cv2.IMREAD_UNCHANGED)
    second = cv2.imread(str(tmp_path / "from_onnx" / "scan.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(first, second)


def test_an_onnx_model_without_its_sidecar(exported, tmp_path: Path) -> None:
    _, model = exported
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(model.read_bytes())
    with pytest.raises(InputError, match=r"sidecar lone\.json is missing"):
        load_exported(lone)


def test_torchscript_takes_any_size(exported, tmp_path: Path) -> None:
    checkpoint, _ = exported
    export_main([f"ckpt_path={checkpoint}", "format=torchscript", f"output={tmp_path / 'm.pt'}"])
    module = torch.jit.load(str(tmp_path / "m.pt"))
    net = load_trained(checkpoint).net
    image = torch.randn(2, 3, 45, 70)
    with torch.no_grad():
        assert (module(image) - net(image)).abs().max() < 1e-4
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["format"] == "torchscript" and meta["max_abs_difference_vs_pytorch"] < 1e-4
