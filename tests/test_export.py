"""`unet-lab export`: ONNX with dynamic sizes, verified against PyTorch, used by predict.py."""

import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
import torch
from conftest import FAST, REPO, SMALL_UNET, TINY_DATA, compose_config

from unet_lab.commands.export import main as export_main
from unet_lab.commands.predict import main as predict_main
from unet_lab.errors import InputError
from unet_lab.inference.export import FORMATS, load_exported
from unet_lab.inference.trained import load_trained
from unet_lab.training import train


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
    assert meta["size_multiple"] == [4, 4] and meta["max_abs_difference_vs_pytorch"] < 1e-4


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


# Every model of conf/model/, tiny: a checkpoint as train.py writes it, after one training step.
MODELS = {
    "unet": SMALL_UNET,
    "unet_plusplus": ["model=unet_plusplus", *SMALL_UNET],
    "attention_unet": ["model=attention_unet", *SMALL_UNET],
    "unet_paper": ["model=unet_paper", "model.depth=2", "model.width=4"],
    "monai_basic_unet": ["model=monai_basic_unet", "model.features=[8,8,16,16,32,8]"],
}
# ... and the raw 2015 network, which takes valid sizes only (44 + 4k at depth 2; output 40 px
# smaller): exported at 64 px, run on 56 px tiles (16 px out) as its checkpoint is.
EXPORTED = {
    **MODELS,
    "unet_paper_raw": [*MODELS["unet_paper"], "model.context=none", "data.image_size=48"],
}
TILE_SIZE = {"unet_paper_raw": 56}  # others: 48
# Input sizes (batch, channels, height, width) for comparing logits; the raw network's are valid.
SHAPES = {"unet_paper_raw": [(2, 3, 56, 60), (1, 3, 48, 76)]}  # others:
OTHER_SHAPES = [(2, 3, 48, 40), (1, 3, 37, 75)]
ONE_STEP = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def test_the_export_tests_cover_every_model_config() -> None:
    assert set(MODELS) == {path.stem for path in (REPO / "conf" / "model").glob("*.yaml")}


def _predict(model: Path, scan: Path, out: Path, tile_size: int) -> np.ndarray:
    """The class probabilities (float16 file) that predict.py writes for ``scan``."""
    predict_main(
        [f"ckpt_path={model}", f"input={scan}", f"output={out}", f"window.tile_size={tile_size}",
         "probabilities=true", "device=cpu"]
    )  # fmt: skip
    return np.load(out / f"{scan.stem}_probs.npy").astype(np.float32)


@pytest.fixture(scope="module", params=list(EXPORTED))
def model_checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory
) -> tuple[str, Path, Path, np.ndarray]:
    """(name, checkpoint, a 75 x 37 scan, the checkpoint's predict.py probabilities for it)."""
    run = tmp_path_factory.mktemp(request.param)
    fast = [o for o in FAST if o not in SMALL_UNET]
    train(compose_config(run, [*fast, *TINY_DATA, *ONE_STEP, *EXPORTED[request.param]]))
    checkpoint = run / "checkpoints" / "last.ckpt"
    scan = run / "scan.png"
    cv2.imwrite(str(scan), np.random.default_rng(0).integers(0, 255, (75, 37, 3), np.uint8))
    tile_size = TILE_SIZE.get(request.param, 48)
    return request.param, checkpoint, scan, _predict(checkpoint, scan, run / "masks", tile_size)


@pytest.mark.parametrize("form", list(FORMATS))
def test_every_model_exports_and_predicts_like_its_checkpoint(
    model_checkpoint: tuple[str, Path, Path, np.ndarray], form: str, tmp_path: Path
) -> None:
    """Exported at 64 x 64 (export's example size), then run by predict.py through the sliding
    window on tiles of 48 x 40 (75 x 37 px, tile_size 48; 48 x 37 for MONAI, 56 x 56 for the raw
    network): the exported graph must take other sizes and give the checkpoint's
    probabilities."""
    name, checkpoint, scan, expected_probs = model_checkpoint
    model = tmp_path / f"model{FORMATS[form]}"
    export_main([f"ckpt_path={checkpoint}", f"format={form}", f"output={model}"])
    assert json.loads(model.with_suffix(".json").read_text())["format"] == form
    # The exported network as predict.py loads it, against the checkpoint's, on other sizes.
    # After one step the logits vary little over an image: the difference is measured
    # against that spread.
    exported, net = load_exported(model).net, load_trained(checkpoint).net
    for shape in SHAPES.get(name, OTHER_SHAPES):
        image = torch.randn(*shape)
        with torch.no_grad():
            logits, expected = exported(image), net(image)
        spread = (expected.amax(dim=(2, 3)) - expected.amin(dim=(2, 3))).min()
        assert logits.shape == expected.shape
        assert (logits - expected).abs().max() < 1e-3 * spread
    if name == "unet_paper_raw":  # refused with the valid sizes, as the checkpoint's network is
        with pytest.raises(
            InputError, match=r"valid sizes only: 44 \+ 4k px, not 50 \(nearest: 48, 52"
        ):
            exported(torch.randn(1, 3, 56, 50))
    # predict.py with the exported model: the checkpoint's probabilities.
    probs = _predict(model, scan, tmp_path / "masks", TILE_SIZE.get(name, 48))
    assert expected_probs.shape == probs.shape == (4, 75, 37)
    assert np.abs(probs - expected_probs).max() < 1e-3  # float16 files: 2.4e-4 apart below 0.5
