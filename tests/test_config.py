"""Every config composes and builds; YAML files list their class's arguments; bad keys and
values fail before training with one line that names the key."""

import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    FAST,
    REPO,
    SMALL_UNET,
    TINY_DATA,
    TINY_VOLUMES,
    compose_config,
    run_cli,
)
from folders import write_dataset, write_volume_dataset
from hydra import compose, initialize_config_module
from hydra.utils import get_class
from omegaconf import OmegaConf

from unet_lab.config.compose import CONFIG_MODULE
from unet_lab.errors import ConfigError, one_line
from unet_lab.training import build
from unet_lab.training.build import build_datamodule

CONF = REPO / "conf"
# Groups whose options are whole run set-ups rather than swappable parts.
SKIP_GROUPS = {"hydra", "paths", "debug", "experiment"}
GPU_TRAINERS = {"gpu", "ddp", "multinode"}
VOLUME_PATCH = ["data.patch_size=[8,16,16]", "data.samples_per_epoch=4"]
OPTIONS = sorted(
    (path.parent.name, path.stem)
    for path in CONF.glob("*/*.yaml")
    if path.parent.name not in SKIP_GROUPS
)


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_builds(group: str, option: str, tmp_path: Path) -> None:
    on_cpu: list[str] = []
    if group == "trainer" and option in GPU_TRAINERS and not torch.cuda.is_available():
        # Everything of the preset but the device: the same trainer on CPU processes.
        on_cpu = ["trainer.accelerator=cpu"]
        if option != "gpu":
            on_cpu += ["trainer.devices=2", "trainer.sync_batchnorm=false"]
    regions = (group, option) == ("loss", "regions")  # overlapping regions of a folder's labels
    folder = (
        write_dataset(tmp_path / "data", num_classes=3 if regions else 2)
        if option == "folder" or regions
        else None
    )
    data = [f"data.root={folder}"] if folder else TINY_DATA
    if option in ("synthetic3d", "synthetic3d_unet") or option.startswith("volume_"):
        data = ["data=synthetic3d", *TINY_VOLUMES]
    elif option in ("volumes", "volumes_unet"):
        root = write_volume_dataset(tmp_path / "volumes")
        data = ["data=volumes", f"data.root={root}", "data.num_classes=3", *VOLUME_PATCH]
        data.append(f"data.cache_dir={tmp_path / 'cache'}")
    if (group, option) == ("loss", "bce"):
        data = [*data, "data.num_classes=2"]  # a single-output loss needs binary data
    if regions:
        data = [*data, "data=folder", "data.num_classes=3", "data.regions={a:[1,2],b:[2]}"]
    fast = [o for o in FAST if o not in SMALL_UNET] if group == "model" else FAST
    experiment = build(compose_config(tmp_path, [*fast, f"{group}={option}", *data, *on_cpu]))
    assert experiment.trainer.max_epochs == 2


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_builds(name: str, tmp_path: Path) -> None:
    overrides = [*FAST, f"experiment={name}"]
    if compose_config(tmp_path, overrides).data._target_.endswith("FolderDataModule"):
        # An experiment on a folder data set: a small binary one ({0, 255} masks), 10 images.
        root = write_dataset(tmp_path / "data", count=10, channels=1, num_classes=2, mask_scale=255)
        overrides.append(f"data.root={root}")
    else:
        overrides += TINY_DATA
    build(compose_config(tmp_path, overrides))


@pytest.mark.parametrize("data", ["synthetic", "folder"])
def test_an_unseeded_run_draws_one_data_seed_that_its_config_carries(
    data: str, tmp_path: Path
) -> None:
    """``seed=null`` leaves a run unseeded (train.yaml), but its data still needs a seed (the
    synthetic images, the folder split): one is drawn once and written into the resolved config,
    from which the other DDP ranks are built (``distributed.run_rank``) and which checkpoints
    carry, so that they all see the same data."""
    overrides = [*TINY_DATA, "logger=csv", "seed=null"]
    if data == "folder":
        root = write_dataset(tmp_path / "data", count=10, num_classes=2)
        overrides = ["logger=csv", "seed=null", "data=folder", f"data.root={root}"]
    experiment = build(compose_config(tmp_path / "run", overrides))
    seed = experiment.datamodule.seed
    assert isinstance(seed, int) and experiment.config["data"]["seed"] == seed
    rank = build(OmegaConf.create(experiment.config)).datamodule  # as another rank builds it
    for split in ("train", "val"):
        ours, theirs = experiment.datamodule.load_split(split), rank.load_split(split)
        pairs = zip([*ours[0], *ours[1]], [*theirs[0], *theirs[1]], strict=True)
        assert all(np.array_equal(a, b) for a, b in pairs), split
    assert build(compose_config(tmp_path / "other", overrides)).datamodule.seed != seed
    if data == "folder":  # split.json (written by the run) names the seed that drew the split
        saved = experiment.datamodule.split_record()
        assert saved["seed"] == seed
        assert saved["val"] == [stem for stem, _, _ in experiment.datamodule.split["val"]]


# Arguments that the training code passes itself instead of reading them from the YAML file.
INJECTED = {
    "model": {"in_channels", "num_classes"},
    "data": {"train_transform", "eval_transform"},
    "loss": set(),
    "module": {"net", "loss", "optimizer", "scheduler", "class_names", "regions"},
}
TARGET_FILES = [
    *sorted(CONF.glob("model/*.yaml")),
    *sorted(CONF.glob("data/*.yaml")),
    *sorted(CONF.glob("loss/*.yaml")),
]


@pytest.mark.parametrize("path", TARGET_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_yaml_lists_every_constructor_argument(path: Path, tmp_path: Path) -> None:
    """So every argument can be overridden without a `+` and the file documents them all
    (itself or through the option it extends, e.g. attention_unet extends unet)."""
    group = path.parent.name
    node = compose_config(tmp_path, [f"{group}={path.stem}"])[group]
    _assert_lists_arguments(node, group, f"{group}/{path.name}")


def test_module_section_lists_every_argument() -> None:
    node = OmegaConf.load(CONF / "train.yaml").module
    _assert_lists_arguments(node, "module", "train.yaml:module")


def _assert_lists_arguments(node, group: str, where: str) -> None:
    params = inspect.signature(get_class(node._target_)).parameters
    expected = set(params) - INJECTED[group]
    listed = {k for k in node if not k.startswith("_")}
    assert listed == expected, f"{where}: missing {expected - listed}, unknown {listed - expected}"


# Bad configs: (overrides, texts the one-line error must contain; the first is the key).
BAD_CONFIGS = [
    # unknown keys and groups
    ("model.dpeth=4", ["model.dpeth", "did you mean 'model.depth'", "up_mode"]),
    ("+model.colour=1", ["model.colour", "not an argument of model"]),
    ("+augmentation.train.transforms.hflip.angle=3", ["augmentation.train.transforms.hflip"]),
    ("colour=red", ["colour", "unknown config key"]),
    ("model=unet3", ["model/unet3", "unet_paper"]),
    # wrong types
    ("model.depth=four", ["model.depth", "an integer"]),
    ("data.batch_size=2.5", ["data.batch_size", "an integer"]),
    ("trainer.max_epochs=ten", ["trainer.max_epochs", "an integer"]),
    ("module.channels_last=yes", ["module.channels_last", "true or false"]),
    ("seed=abc", ["seed", "an integer or null"]),
    ("test=maybe", ["test", "true or false"]),
    ("resume=maybe", ["resume", "one of auto or true or false"]),
    ("+optimizer.betas=[0.9]", ["optimizer.betas", "a list of 2"]),
    ("loss.ignore_index=void", ["(set by ${loss.ignore_index})", "an integer or null"]),
    # out of range
    ("model.depth=0", ["model.depth", "an integer in 1..7"]),
    ("model.up_mode=cubic", ["model.up_mode", "transpose, bilinear, nearest"]),
    ("model.dropout=1.5", ["model.dropout", "0.0..1.0"]),
    ("model.spacing=[1,2,3]", ["model.spacing", "2 positive sizes"]),
    ("loss.smooth=-1", ["loss.smooth", ">= 0.0"]),
    ("data.num_classes=12", ["data.num_classes", "2..6"]),
    ("data.normalization=zscore", ["data.normalization", "image, dataset, fixed, none"]),
    ("optimizer.lr=-0.1", ["optimizer.lr", ">= 0"]),
    ("+optimizer.betas=[1.5,0.9]", ["optimizer.betas", "Invalid beta"]),
    ("scheduler.warmup_fraction=2", ["scheduler.warmup_fraction", "0.0..1.0"]),
    ("trainer.max_epochs=-5", ["trainer.max_epochs", ">= -1"]),
    ("trainer.accumulate_grad_batches=0", ["trainer.accumulate_grad_batches", ">= 1"]),
    ("trainer.precision=fp8", ["trainer.precision", "bf16-mixed"]),
    ("trainer.devices=0", ["trainer", "devices=0"]),
    ("seed=-3", ["seed", "0..4294967295"]),
    ("augmentation.train.transforms.hflip.p=2", ["augmentation.train.transforms.hflip.p"]),
    ("module.eval_overlap=1.5", ["module.eval_overlap", "0.0..0.95"]),
    ("module.boundary_class=9", ["module.boundary_class", "0..3"]),
    ("optimized_mode=maximum", ["optimized_mode", "max, min"]),
    # choices that do not fit together
    ("model.depth=6", ["model.depth=6", "too deep for 32 px", "data.image_size", "depth<=5"]),
    (
        "model=unet_paper model.context=none model.depth=2 model.width=4",
        ["data.image_size=32", "valid sizes are 44 + 4k"],
    ),
    ("optimized_metric=val/dicee", ["optimized_metric", "val/dice, val/iou"]),
    ("model.spatial_dims=3", ["model.spatial_dims=3", "2D images", "model.spatial_dims=2"]),
    ("loss=bce", ["loss=bce", "4 classes"]),
    ("augmentation=volume_light", ["augmentation.train", "for volumes", "augmentation=none"]),
    # an override Hydra's grammar cannot read, and a module path from before 0.2
    ("data.mask_name={id}_x", ["data.mask_name={id}_x", "quote a value"]),
    (
        "+callbacks.old._target_=unet_lab.callbacks.ElapsedTime",
        ["callbacks.old._target_", "cannot be imported", "docs/changes.md"],
    ),
]


def test_volumes_refuse_an_image_augmentation_and_take_none(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, ["data=synthetic3d", "augmentation=light"])
    with pytest.raises(ConfigError, match=r"augmentation\.train is a pipeline for 2D images"):
        build_datamodule(cfg, augment=True)
    cfg = compose_config(tmp_path, ["data=synthetic3d", "augmentation=none"])
    assert build_datamodule(cfg, augment=True).train_transform is None


@pytest.mark.parametrize(("overrides", "expected"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_fails_before_training_naming_the_key(
    overrides: str, expected: list[str], tmp_path: Path
) -> None:
    """Each bad config fails while composing or building (nothing trained yet), with a
    one-line message that names the key."""
    with pytest.raises(Exception) as failure:
        build(compose_config(tmp_path, [*TINY_DATA, "logger=csv", *overrides.split()]))
    message = one_line(failure.value)
    assert message is not None, f"no one-line message for {failure.value!r}"
    assert "\n" not in message
    for text in expected:
        assert text in message


@pytest.mark.parametrize(
    "override",
    [
        "model.dpeth=4",
        "trainer.max_epochs=ten",
        "optimizer.lr=-0.1",
        "model.depth=6",
        "data.mask_name={id}_x",
    ],
)
def test_bad_config_on_the_command_line_exits_with_one_line(override: str, tmp_path: Path) -> None:
    result = run_cli([*TINY_DATA, "logger=csv", override], cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert override.split("=")[0] in errors[0]
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("runs/*/*")), "a failed start left a run folder behind"


def test_full_traceback_behind_the_debug_switch(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "optimizer.lr=-0.1", *TINY_DATA],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
        timeout=300,
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "optimizer.lr" in result.stderr


# Each launcher as the README uses it: overrides, the launcher class, and the values it composes
# to (the resources a job gets; for SLURM, how long before the time limit SIGTERM comes, which
# the run turns into a checkpoint).
LAUNCHERS = {
    "joblib": (
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"],
        "JoblibLauncher",
        {"n_jobs": 3, "prefer": "processes", "timeout": None},
    ),
    "submitit_local": (
        ["hydra/launcher=submitit_local"],
        "LocalLauncher",
        {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": None, "timeout_min": 60},
    ),
    "submitit_slurm": (
        [
            "hydra/launcher=submitit_slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.gpus_per_node=1",
            "hydra.launcher.timeout_min=240",
        ],
        "SlurmLauncher",
        {
            "partition": "gpu",
            "nodes": 1,
            "tasks_per_node": 1,
            "gpus_per_node": 1,
            "cpus_per_task": None,
            "timeout_min": 240,
            "signal_delay_s": 120,
        },
    ),
    "slurm_ddp": (  # one task and one GPU per device, on trainer.num_nodes nodes
        [
            "hydra/launcher=slurm_ddp",
            "trainer=multinode",
            "trainer.num_nodes=2",
            "trainer.devices=4",
            "hydra.launcher.timeout_min=720",
        ],
        "SlurmLauncher",
        {
            "nodes": 2,
            "tasks_per_node": 4,
            "gpus_per_node": 4,
            "cpus_per_task": 8,
            "mem_gb": None,
            "timeout_min": 720,
            "signal_delay_s": 120,
        },
    ),
}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launcher_configs_compose(launcher: str) -> None:
    overrides, target, expected = LAUNCHERS[launcher]
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose("train", overrides, return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    assert {key: cfg.hydra.launcher[key] for key in expected} == expected


# slurm_ddp's GPUs and tasks per node, which SLURM needs as numbers, from what the user gave.
SLURM_DDP_RESOURCES = {
    "trainer=ddp (all GPUs), the number given to the launcher": (
        ["trainer=ddp", "hydra.launcher.gpus_per_node=4"],
        {"nodes": 1, "gpus_per_node": 4, "tasks_per_node": 4},
    ),
    "trainer=ddp with a number of devices": (
        ["trainer=ddp", "trainer.devices=2"],
        {"nodes": 1, "gpus_per_node": 2, "tasks_per_node": 2},
    ),
    "trainer=ddp with devices by index": (
        ["trainer=ddp", "trainer.devices=[0,1,2]"],
        {"nodes": 1, "gpus_per_node": 3, "tasks_per_node": 3},
    ),
    "trainer=multinode, both given and equal": (
        ["trainer=multinode", "trainer.devices=8", "hydra.launcher.gpus_per_node=8"],
        {"nodes": 2, "gpus_per_node": 8, "tasks_per_node": 8},
    ),
}


@pytest.mark.parametrize("overrides", SLURM_DDP_RESOURCES.values(), ids=SLURM_DDP_RESOURCES)
def test_slurm_ddp_submits_numbers_of_gpus_and_tasks(overrides) -> None:
    args, expected = overrides
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=slurm_ddp", *args], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)  # as Hydra hands it over
    assert {key: launcher[key] for key in expected} == expected


SLURM_DDP_REFUSED = {
    "trainer=ddp alone (devices -1)": (
        ["trainer=ddp"],
        "hydra.launcher.gpus_per_node: hydra/launcher=slurm_ddp needs the number of GPUs per "
        "node and trainer.devices=-1 does not give it; set hydra.launcher.gpus_per_node=N",
    ),
    "devices auto": (["trainer=ddp", "trainer.devices=auto"], "trainer.devices=auto does not"),
    "devices that differ from the launcher's GPUs": (
        ["trainer=ddp", "trainer.devices=2", "hydra.launcher.gpus_per_node=4"],
        "trainer.devices=2 does not match hydra.launcher.gpus_per_node=4",
    ),
    "no GPUs": (
        ["trainer=ddp", "hydra.launcher.gpus_per_node=0"],
        "hydra.launcher.gpus_per_node=0 is not valid: expected the number of GPUs per node",
    ),
}


@pytest.mark.parametrize("case", SLURM_DDP_REFUSED.values(), ids=SLURM_DDP_REFUSED)
def test_slurm_ddp_refuses_what_slurm_cannot_allocate(case) -> None:
    args, message = case
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=slurm_ddp", *args], return_hydra_config=True)
    with pytest.raises(Exception) as raised:
        OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert message in (one_line(raised.value) or "")


def test_slurm_ddp_with_all_gpus_stops_before_submitting(tmp_path: Path) -> None:
    """The command line: one line naming the key, exit code 2, and nothing submitted (no sweep
    folder; before the fix submitit was asked for -1 tasks per node)."""
    args = ["-m", "hydra/launcher=slurm_ddp", "trainer=ddp", "hydra.launcher.partition=gpu"]
    result = run_cli(args, cwd=tmp_path, check=False, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[0].startswith("error: hydra.launcher.gpus_per_node: hydra/launcher=slurm_ddp")
    assert not (tmp_path / "multirun").exists() and not list(tmp_path.rglob(".submitit"))
