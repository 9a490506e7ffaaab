"""Shared fixtures: a clean W&B environment, composed configs, a CLI runner and the wheel."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from unet_lab.config.compose import compose_train_config

REPO = Path(__file__).resolve().parents[1]

# Small synthetic data: generated in a fraction of a second.
TINY_DATA = [
    "data.image_size=32",
    "data.train_size=32",
    "data.val_size=8",
    "data.test_size=8",
    "data.batch_size=8",
]
# Tiny generated volumes (data=synthetic3d).
TINY_VOLUMES = [
    "data.volume_shape=[8,16,16]",
    "data.patch_size=[8,16,16]",
    "data.train_size=4",
    "data.val_size=2",
    "data.test_size=2",
    "data.samples_per_epoch=4",
]
# A tiny but complete setup: trains in a couple of seconds.
SMALL_UNET = ["model.depth=2", "model.width=8"]
FAST = ["debug=fast", "logger=csv", "callbacks.validation_images=null", *SMALL_UNET]


@pytest.fixture(autouse=True, scope="session")
def _no_wandb_account() -> Iterator[None]:
    """Tests run as a user without W&B credentials (whatever this machine has)."""
    saved = {k: os.environ.get(k) for k in ("WANDB_API_KEY", "WANDB_MODE", "NETRC")}
    os.environ.pop("WANDB_API_KEY", None)
    os.environ.pop("WANDB_MODE", None)
    os.environ["NETRC"] = os.devnull
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel`` builds from this source tree, once per test session. Built from
    a copy of what the build reads (pyproject.toml, README.md, unet_lab/, conf/), so that no
    ``build/`` folder of an earlier build adds files that the package lists would leave out."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("unet_lab", "conf"):
        caches = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(REPO / name, source / name, ignore=caches)
    dist = tmp_path_factory.mktemp("dist")
    # The installed setuptools if there is one (no download); else pip's isolated build.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation]
    subprocess.run([*command, "-w", str(dist), str(source)], check=True, capture_output=True)
    (built,) = dist.glob("unet_lab-*.whl")
    return built


def compose_config(output_dir: Path, overrides: list[str] | None = None) -> DictConfig:
    """The training config as `python train.py` composes it, writing into ``output_dir``."""
    return compose_train_config([f"paths.output_dir={output_dir}", *(overrides or [])])


def run_cli(
    args: list[str], cwd: Path, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Runs ``python train.py ARGS`` (the real shim) in ``cwd`` as a user would."""
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"train.py {' '.join(args)} exited {result.returncode}\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def run_unet_lab(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs ``python -m unet_lab.cli ARGS`` (``unet-lab``) in ``cwd``; the caller checks it."""
    return subprocess.run(
        [sys.executable, "-m", "unet_lab.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
