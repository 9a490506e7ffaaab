"""Autoplan against the hand defaults and a MONAI peer recipe, at equal wall-time budget per
run, on 2D data sets: ISBI 2012 (the 30 labelled EM slices), hippocampus MRI as 2D slices (built
here from ../shared/data/hippocampus), fluorescence nuclei of the 2018 Data Science Bowl (the
labelled 512 x 512 image that the stardist wheel on PyPI carries, cut into 16 tiles), and
generated sets that stress the rules (tiny objects in large 16-bit images; many classes;
anisotropic 3D volumes in NIfTI, 4 x 0.8 x 0.8 mm).

Per set and fold, three recipes train through ``python train.py`` with ``+trainer.max_time``
set to the budget:

- defaults: only what says what the data is (``data=folder data.root=... data.num_classes=...``
  and the mask mapping);
- autoplan: ``unet-lab autoplan <the same> budget=B`` (planning time reported apart), then the
  printed command;
- MONAI peer: MONAI's BasicUNet with a MONAI tutorial's Adam (lr 1e-4), Dice loss, fp32,
  constant learning rate until the budget.

Reports validation Dice and IoU of the best checkpoint (mean over foreground classes; ± sd over
folds) and the plan chosen. Writes results.md and results.json here (or --name).

    python experiments/autoplan/run.py                                  # every set, 5 folds, 5 min
    python experiments/autoplan/run.py --sets tiny --folds 0 --minutes 0.5 --name smoke
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import (  # noqa: E402
    command_line,
    max_time_argument,
    mean_sd,
    measured_run,
    provenance,
    publish,
)

SHARED = REPO.parent / "shared" / "data"
MONAI = ["model=monai_basic_unet", "optimizer=adam", "optimizer.lr=1e-4", "scheduler=none",
         "loss=dice", "trainer.precision=32-true", "module.channels_last=false",
         "trainer.max_epochs=100000"]  # fmt: skip
RECIPES = ("defaults", "autoplan", "MONAI peer")
# BasicUNet pools 4 times and instance-normalizes its deepest maps, which fails at 1 x 1: inputs
# of at least 32 px. The folder module mirror-pads images smaller than the patch.
MONAI_MIN_PATCH = 32


def isbi2012(work: Path) -> list[str]:
    root = SHARED / "isbi2012" / "train"
    return [f"data.root={root}", "data.num_classes=2", "data.class_names=[cell,membrane]",
            "data.mask_values=[255,0]"]  # fmt: skip


def hippocampus2d(work: Path) -> list[str]:
    """Axial slices holding foreground, of the 200 hippocampus volumes (16-bit PNG)."""
    import nibabel as nib

    root = work / "hippocampus2d"
    if not root.exists():
        for folder in ("images", "masks"):
            (root / folder).mkdir(parents=True)
        for path in sorted((SHARED / "hippocampus" / "imagesTr").glob("*.nii.gz")):
            image = np.asarray(nib.load(path).dataobj, np.float64)
            label = np.asarray(nib.load(path.parent.parent / "labelsTr" / path.name).dataobj)
            scaled = (65535 * (image - image.min()) / max(1e-6, np.ptp(image))).astype(np.uint16)
            for z in range(0, label.shape[2], 4):  # every 4th slice with foreground
                if label[:, :, z].any():
                    name = f"{path.name.split('.')[0]}_{z:02d}.png"
                    cv2.imwrite(str(root / "images" / name), scaled[:, :, z])
                    cv2.imwrite(str(root / "masks" / name), label[:, :, z].astype(np.uint8))
    return [f"data.root={root}", "data.num_classes=3",
            "data.class_names=[background,anterior,posterior]"]  # fmt: skip


def nuclei(work: Path) -> list[str]:
    """Nuclei (binary) in 16 tiles of 128 x 128 of the 2018 Data Science Bowl fluorescence
    image that stardist 0.9.2 ships as test data (Caicedo et al., Nature Methods 2019): the
    wheel is downloaded with pip and only its two TIFFs are read; stardist is not installed."""
    import tifffile

    root = work / "nuclei"
    if root.exists():
        return [f"data.root={root}", "data.num_classes=2"]
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "stardist==0.9.2", "--no-deps",
                    "-q", "-d", str(wheels)], check=True)  # fmt: skip
    with zipfile.ZipFile(next(wheels.glob("stardist-0.9.2-*.whl"))) as wheel:
        image = tifffile.imread(io.BytesIO(wheel.read("stardist/data/images/img2d.tif")))
        labels = tifffile.imread(io.BytesIO(wheel.read("stardist/data/images/mask2d.tif")))
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    side = 128
    for y in range(0, image.shape[0], side):
        for x in range(0, image.shape[1], side):
            name = f"dsb_{y // side}{x // side}.png"
            tile = np.s_[y : y + side, x : x + side]
            cv2.imwrite(str(root / "images" / name), image[tile].astype(np.uint8))
            cv2.imwrite(str(root / "masks" / name), (labels[tile] > 0).astype(np.uint8))
    return [f"data.root={root}", "data.num_classes=2"]


def generated(root: Path, count: int, seed: int, make: Any) -> None:
    """``count`` pairs from ``make(rng) -> (image, mask)`` as PNG files in ``root``, once."""
    if root.exists():
        return
    rng = np.random.default_rng(seed)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for index in range(count):
        image, mask = make(rng)
        cv2.imwrite(str(root / "images" / f"{index:03d}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{index:03d}.png"), mask)


def tiny(work: Path) -> list[str]:
    """Tiny bright spots (3-6 px) on 16-bit 768 x 1024 images: rare, small objects."""

    def make(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image = rng.normal(20000, 3000, (768, 1024))
        mask = np.zeros((768, 1024), np.uint8)
        for _ in range(int(rng.integers(5, 15))):
            y, x, r = int(rng.integers(8, 760)), int(rng.integers(8, 1016)), rng.uniform(1.5, 3)
            cv2.circle(mask, (x, y), round(r), 1, -1)
        image[mask > 0] += 9000
        return image.clip(0, 65535).astype(np.uint16), mask

    generated(work / "tiny", 40, 0, make)
    return [f"data.root={work / 'tiny'}", "data.num_classes=2"]


def many_classes(work: Path) -> list[str]:
    """Eight classes of textured shapes of different sizes and shares on 256 x 256 images."""

    def make(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image = rng.normal(80, 20, (256, 256, 3))
        mask = np.zeros((256, 256), np.uint8)
        for label in range(1, 8):
            radius = 4 + 4 * label
            y, x = (int(v) for v in rng.integers(radius, 256 - radius, 2))
            cv2.circle(mask, (x, y), radius, label, -1)
        for label in range(1, 8):
            image[mask == label] += (25 * label, 200 - 25 * label, 12 * label)
        return image.clip(0, 255).astype(np.uint8), mask

    generated(work / "many_classes", 60, 1, make)
    return [f"data.root={work / 'many_classes'}", "data.num_classes=8"]


def anisotropic(work: Path) -> list[str]:
    """3D: ellipsoids, boxes and tubes sized in millimetres, in 24 NIfTI volumes of 20 x 80 x 80
    voxels of 4 x 0.8 x 0.8 mm (slices 5x thicker than the pixels are wide), stored as int16."""
    from unet_lab.data.volumes.io import write_volume
    from unet_lab.data.volumes.synthetic import render_solids

    root = work / "anisotropic"
    if not root.exists():
        rng = np.random.default_rng(2)
        spacing = (4.0, 0.8, 0.8)
        for index in range(24):
            image, labels = render_solids(rng, (20, 80, 80), spacing, 4, 4, 0.15)
            name = f"case_{index:03d}.nii.gz"
            affine = np.diag([*spacing, 1.0])
            write_volume(root / "imagesTr" / name, (200 * image[0] + 400).astype(np.int16), affine)
            write_volume(root / "labelsTr" / name, labels, affine)
    return ["data=volumes", f"data.root={root}", "data.num_classes=4",
            "data.class_names=[background,ellipsoid,box,tube]"]  # fmt: skip


SETS = {"isbi2012": isbi2012, "hippocampus2d": hippocampus2d, "nuclei": nuclei, "tiny": tiny,
        "many_classes": many_classes, "anisotropic": anisotropic}  # fmt: skip
# The MONAI peer on volumes: BasicUNet in 3D, validated through the same sliding window.
MONAI_3D = ["model.spatial_dims=3", "module.eval_tile_size=${data.patch_size}",
            "module.eval_overlap=0.5"]  # fmt: skip


def train(
    overrides: list[str], run: Path, work: Path, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Trains one recipe into ``run`` (a finished run there is read, not trained again)."""
    started = time.perf_counter()
    trained_now = not (run / "metrics.json").is_file()
    if trained_now:
        measured_run([str(REPO / "train.py"), *extra, *overrides, "logger=csv",
                      "callbacks.validation_images=null", "test=false", f"hydra.run.dir={run}"],
                     work)  # fmt: skip
    summary = json.loads((run / "metrics.json").read_text())
    scores = summary["val"]
    # One measure for every recipe: the mean over the classes after class 0 (the per-class
    # scores come in class order), whatever a recipe's module.include_background makes of
    # val/dice.
    foreground = [k.removeprefix("dice_") for k in scores if k.startswith("dice_")][1:]
    mean = {m: statistics.mean(scores[f"{m}_{n}"] for n in foreground) if foreground
            else scores[m] for m in ("dice", "iou")}  # fmt: skip
    return {**mean, "seconds": round(time.perf_counter() - started, 1),
            "steps": summary["global_step"], "trained_now": trained_now}  # fmt: skip


def monai_patch(data: list[str]) -> list[str]:
    """``data.patch_size`` for the MONAI peer: the folder module's default, but at least
    ``MONAI_MIN_PATCH``."""
    from unet_lab.config.compose import compose_train_config
    from unet_lab.data.folder import FolderDataModule
    from unet_lab.training.build import build_datamodule

    datamodule = build_datamodule(compose_train_config(data))
    assert isinstance(datamodule, FolderDataModule)
    patch = datamodule.patch_size
    return (
        [] if patch is None or patch >= MONAI_MIN_PATCH else [f"data.patch_size={MONAI_MIN_PATCH}"]
    )


def run_set(name: str, options: argparse.Namespace, work: Path) -> dict[str, Any]:
    given = SETS[name](work)
    volumes = "data=volumes" in given
    data = [*([] if volumes else ["data=folder"]), *given, "data.folds=5"]
    plans = work / "plans"
    planned = plans / f"auto_{name}.run.json"  # a plan made earlier in --workdir: reused
    if planned.is_file():
        output, planning = json.loads(planned.read_text())
    else:
        started = time.perf_counter()
        output, _, _ = measured_run(
            ["-m", "unet_lab.cli", "autoplan", *data, f"budget={options.minutes}m",
             "--output", str(plans), "--name", f"auto_{name}"],
            work,
        )  # fmt: skip
        planning = round(time.perf_counter() - started, 1)
        planned.write_text(json.dumps([output, planning]))
    chosen = [line.split("`")[1] for line in output.splitlines() if line.startswith("| `")]
    folds: dict[str, list[dict[str, Any]]] = {recipe: [] for recipe in RECIPES}
    budget = [f"+trainer.max_time={max_time_argument(options.minutes)}"]
    # the same for every fold: the data is read once
    monai_extra = MONAI_3D if volumes else monai_patch(data)
    fold_numbers = list(range(5)) if name in options.all_folds else options.folds
    for fold in fold_numbers:
        tag = f"{name}_{fold}"
        base = [*data, f"data.fold={fold}", *budget]
        folds["defaults"].append(train(base, work / f"defaults_{tag}", work))
        folds["autoplan"].append(
            train(
                [f"experiment=auto_{name}", f"data.fold={fold}", *budget],
                work / f"auto_{tag}",
                work,
                ("--config-dir", str(plans)),
            )
        )
        monai = [*base, *MONAI, *monai_extra]
        folds["MONAI peer"].append(train(monai, work / f"monai_{tag}", work))
        print(f"{name} fold {fold}: " + ", ".join(
            f"{r} {folds[r][-1]['dice']:.4f}" for r in RECIPES), flush=True)  # fmt: skip
    return {"plan": chosen, "planning_seconds": planning, "folds": folds,
            "fold_numbers": fold_numbers}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--all-folds", nargs="*", choices=list(SETS), default=["isbi2012"],
                        help="sets that run all 5 folds whatever --folds says")  # fmt: skip
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per run")
    parser.add_argument("--name", default="results")
    parser.add_argument("--workdir", type=Path, help="keep the runs here; finished ones are reused")
    options = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="unet_lab_autoplan_") as folder:
        work = (options.workdir or Path(folder)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        for name in options.sets:
            results[name] = run_set(name, options, work)
    lines = [
        f"# Autoplan against the defaults and a MONAI peer, {options.minutes:g} min per run",
        "",
        provenance(command_line(__file__)),
        "",
        "| set | folds | recipe | val Dice | val IoU | steps (median) | Dice vs defaults |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        reference = [f["dice"] for f in result["folds"]["defaults"]]
        for recipe in RECIPES:
            runs = result["folds"][recipe]
            dice = [r["dice"] for r in runs]
            gain = statistics.mean(d - r for d, r in zip(dice, reference, strict=True))
            lines.append(
                f"| {name} | {len(runs)} | {recipe} | {mean_sd(dice)} | "
                f"{mean_sd([r['iou'] for r in runs])} | "
                f"{statistics.median(r['steps'] for r in runs)} | {gain:+.4f} |"
            )
    lines += ["", "Plans chosen (planning time apart from the budget):", ""]
    for name, result in results.items():
        lines.append(f"- {name} ({result['planning_seconds']} s): " + ", ".join(
            f"`{c}`" for c in result["plan"]))  # fmt: skip
    runs = [r for result in results.values() for f in result["folds"].values() for r in f]
    earlier = sum(not r["trained_now"] for r in runs)
    lines += ["", "Folds: " + "; ".join(f"{name} {result['fold_numbers']}" for name, result in
              results.items()) + " of 5. Dice and IoU: validation, best checkpoint, mean over "
              "the classes after class 0 for every recipe (per-class scores of metrics.json), "
              "whatever its `module.include_background`."]  # fmt: skip
    if earlier:
        lines += ["", f"{earlier} of {len(runs)} runs were read from `--workdir`, trained by an "
                  "earlier invocation (results.json marks them `trained_now: false`)."]  # fmt: skip
    publish(HERE / options.name, lines, {"minutes": options.minutes, "results": results})


if __name__ == "__main__":
    main()
