"""`python predict.py`: masks for new images of any size from a checkpoint alone."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import FAST, REPO, TINY_DATA, compose_config

from unet_lab.commands.predict import input_files, main
from unet_lab.errors import InputError
from unet_lab.training import train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    train(compose_config(run, [*FAST, *TINY_DATA]))
    return run / "checkpoints" / "last.ckpt"


def _images(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (height, width) in enumerate(sizes):
        cv2.imwrite(
            str(folder / f"scan{i}.png"), rng.integers(0, 255, (height, width, 3), np.uint8)
        )
    return folder


def test_a_folder_of_images_larger_than_the_tile(checkpoint: Path, tmp_path: Path) -> None:
    scans = _images(tmp_path / "scans", [(150, 230), (33, 47)])
    out = tmp_path / "masks"
    paths = [f"ckpt_path={checkpoint}", f"input={scans}", f"output={out}"]
    main([*paths, "window.tile_size=64", "overlay=true", "probabilities=true"])
    for name, size in (("scan0", (150, 230)), ("scan1", (33, 47))):
        labels = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == size and labels.dtype == np.uint8 and labels.max() < 4
        assert cv2.imread(str(out / f"{name}_overlay.png")).shape == (*size, 3)
        probs = np.load(out / f"{name}_probs.npy")
        assert probs.shape == (4, *size) and np.allclose(probs.sum(0), 1, atol=1e-2)
        assert (probs.argmax(0) == labels).mean() > 0.99  # float16 ties aside


def test_inputs_by_file_and_glob(tmp_path: Path) -> None:
    scans = _images(tmp_path / "scans", [(20, 20), (20, 20)])
    (scans / "notes.txt").write_text("not an image")
    assert input_files(str(scans / "scan1.png")) == [scans / "scan1.png"]
    assert input_files(str(scans / "*")) == [scans / "scan0.png", scans / "scan1.png"]
    with pytest.raises(InputError, match="no images"):
        input_files(str(tmp_path / "nothing" / "*.png"))


def test_the_command_line_as_a_user_types_it(checkpoint: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    scans = _images(tmp_path / "scans", [(70, 90)])
    result = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), f"ckpt_path={checkpoint}",
         f"input={scans}", "output=masks", "tta=true"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "scan0.png ->" in result.stdout and (tmp_path / "masks" / "scan0.png").exists()
    missing = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), f"ckpt_path={tmp_path / 'no.ckpt'}",
         f"input={scans}", "output=masks"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 2
    assert f"checkpoint not found: {tmp_path / 'no.ckpt'}" in missing.stderr
