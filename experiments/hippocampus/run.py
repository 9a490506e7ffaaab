"""unet-lab next to a MONAI peer recipe on real volumes: the Medical Segmentation Decathlon's
hippocampus MRI (Task04, the 200 labelled cases in ../shared/data/hippocampus), cross-validated
over the folds of unet-lab's 5-fold split, at equal optimizer steps.

Per fold, unet-lab is trained and predicts with the commands a user types:

    python train.py data=volumes data.root=.../hippocampus data.num_classes=3 data.folds=5 \\
        data.fold=F trainer.max_epochs=E ...
    python predict.py ckpt_path=<run>/checkpoints/best.ckpt input=<the fold's val cases> ...

and the MONAI peer (``monai_peer.py``: MONAI's transforms, residual UNet, DiceCELoss and
``sliding_window_inference``) trains on the same training cases for the same number of steps,
with the same patch, batch, optimizer, schedule and validation cadence (best checkpoint by
validation Dice, as unet-lab keeps). Both write label volumes in each validation case's file
geometry, scored here by one function: per-class Dice and HD95 in mm. Also reported: seconds per
training step (wall time of training with its validations; preprocessing apart), peak memory of
each training process, and peak memory and time of predicting a 512 x 512 x 300 volume with the
fold-0 networks. Writes results.md and results.json here (or --name).

    python experiments/hippocampus/run.py                      # 5 folds, 8 epochs (timed below)
    python experiments/hippocampus/run.py --folds 0 --epochs 2 --big 64 64 48 --name smoke
    python experiments/hippocampus/run.py --big-only      # the big volume alone: big_volume.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import command_line, machine, mean_sd, measured_run, publish  # noqa: E402

from unet_lab.metrics.surface import hd95_and_asd  # noqa: E402
from unet_lab.runs.folders import SPLIT_FILE  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "hippocampus"
CLASSES = ("anterior", "posterior")
PATCH = [40, 56, 40]  # D, H, W: the data=volumes default, covers a cropped case
BATCH = 2
FRAMEWORKS = ("unet-lab", "MONAI")


def image_file(data: Path, name: str) -> Path:
    (path,) = (data / "imagesTr").glob(f"{name}.nii*")
    return path


def train_unet_lab(options: argparse.Namespace, fold: int, work: Path) -> dict[str, Any]:
    run = work / f"unet_lab_{fold}"
    overrides = [
        "data=volumes",
        f"data.root={options.data}",
        "data.num_classes=3",
        "data.class_names=[background,anterior,posterior]",
        "data.folds=5",
        f"data.fold={fold}",
        f"data.cache_dir={work / 'cache'}",
        f"data.samples_per_epoch={options.samples_per_epoch}",
        f"data.patch_size=[{','.join(map(str, PATCH))}]",
        f"data.batch_size={BATCH}",
        f"trainer.max_epochs={options.epochs}",
        "logger=csv",
        f"hydra.run.dir={run}",
    ]
    _, peak, seconds = measured_run([str(REPO / "train.py"), *overrides], work)
    summary = json.loads((run / "metrics.json").read_text())
    split = json.loads((run / SPLIT_FILE).read_text())
    manifests = sorted((work / "cache").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    preprocessing = json.loads(manifests[-1].read_text())["seconds"] if fold == 0 else 0.0
    inputs = work / f"val_{fold}"
    inputs.mkdir()
    for name in split["val"]:
        source = image_file(options.data, name)
        (inputs / source.name).symlink_to(source)
    checkpoint = run / summary["best_checkpoint"]
    predictions = work / f"unet_lab_{fold}_predictions"
    measured_run(
        [str(REPO / "predict.py"), f"ckpt_path={checkpoint}", f"input={inputs}",
         f"output={predictions}", "window.overlap=0.5", "window.progress=false"],
        work,
    )  # fmt: skip
    steps = int(summary["global_step"])
    return {
        "steps": steps,
        "seconds_per_step": round((seconds - preprocessing) / steps, 3),
        "peak_memory_mib": round(peak),
        "precision": summary["precision"],
        "best_epoch": summary["best_epoch"],
        "checkpoint": str(checkpoint),
        "predictions": str(predictions),
        "split": {"train": split["train"], "val": split["val"]},
    }


def train_monai(
    options: argparse.Namespace, fold: int, split: dict[str, list[str]], steps: int, work: Path
) -> dict[str, Any]:
    output = work / f"monai_{fold}_predictions"
    output.mkdir()

    def case(name: str) -> dict[str, str]:
        image = image_file(options.data, name)
        return {"image": str(image), "label": str(options.data / "labelsTr" / image.name)}

    spec = {
        "train": [case(n) for n in split["train"]],
        "val": [case(n) for n in split["val"]],
        "patch_size": PATCH[::-1],  # MONAI's arrays are (x, y, z) in RAS: the reverse of D, H, W
        "batch_size": BATCH,
        "steps": steps,
        "validate_every": options.samples_per_epoch // BATCH,  # one unet-lab epoch
        "num_classes": 3,
        "seed": fold,
        "output": str(output),
    }
    spec_file, result_file = work / f"monai_{fold}.json", work / f"monai_{fold}_result.json"
    spec_file.write_text(json.dumps(spec))
    _, peak, _ = measured_run(
        [str(HERE / "monai_peer.py"), "train", str(spec_file), str(result_file)], work
    )
    result = json.loads(result_file.read_text())
    return {**result, "peak_memory_mib": round(peak), "predictions": str(output)}


def canonical(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A label volume's array and voxel size in the closest canonical (RAS) orientation."""
    volume = nib.as_closest_canonical(nib.load(path))
    return np.asarray(volume.dataobj).astype(np.int64), tuple(
        float(z) for z in volume.header.get_zooms()[:3]
    )


def score(predictions: Path, data: Path, names: list[str]) -> dict[str, float]:
    """Mean over the cases of each class's Dice and HD95 (mm), and their means over classes."""
    per_class: dict[str, list[float]] = {}
    for name in names:
        label_file = data / "labelsTr" / image_file(data, name).name
        truth, spacing = canonical(label_file)
        prediction, _ = canonical(predictions / label_file.name)
        if prediction.shape != truth.shape:
            raise SystemExit(
                f"{predictions / label_file.name}: shape {prediction.shape}, label {truth.shape}"
            )
        for value, cls in enumerate(CLASSES, start=1):
            p, t = prediction == value, truth == value
            dice = 2 * np.logical_and(p, t).sum() / max(1, p.sum() + t.sum())
            per_class.setdefault(f"dice_{cls}", []).append(float(dice))
            per_class.setdefault(f"hd95_{cls}", []).append(hd95_and_asd(p, t, spacing)[0])
    scores = {key: float(np.mean(values)) for key, values in per_class.items()}
    scores["dice"] = float(np.mean([scores[f"dice_{c}"] for c in CLASSES]))
    scores["hd95"] = float(np.mean([scores[f"hd95_{c}"] for c in CLASSES]))
    return scores


def big_volume(
    shape: list[int], work: Path, unet_lab: dict[str, Any], monai: dict[str, Any]
) -> dict[str, Any]:
    """Peak memory and time of predicting one ``shape`` (x, y, z) MRI-like volume at 1 mm."""
    rng = np.random.default_rng(0)
    volume = (rng.normal(1000, 200, shape)).astype(np.int16)  # every voxel non-zero: no crop
    path = work / "big.nii"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    del volume
    _, lab_peak, lab_seconds = measured_run(
        [str(REPO / "predict.py"), f"ckpt_path={unet_lab['checkpoint']}", f"input={path}",
         f"output={work / 'big_unet_lab'}", "window.overlap=0.25", "window.progress=false"],
        work,
    )  # fmt: skip
    spec_file, result_file = work / "big.json", work / "big_result.json"
    spec = {"input": str(path), "output": str(work / "big_monai.nii.gz"), "overlap": 0.25,
            "weights": str(Path(monai["predictions"]) / "best.pt"), "num_classes": 3,
            "patch_size": PATCH[::-1]}  # fmt: skip
    spec_file.write_text(json.dumps(spec))
    _, monai_peak, monai_seconds = measured_run(
        [str(HERE / "monai_peer.py"), "predict", str(spec_file), str(result_file)], work
    )
    return {
        "shape": shape,
        "unet-lab": {"peak_memory_mib": round(lab_peak), "seconds": round(lab_seconds, 1)},
        "MONAI": {"peak_memory_mib": round(monai_peak), "seconds": round(monai_seconds, 1)},
    }


def table(
    folds: list[dict[str, Any]], big: dict[str, Any] | None, options: argparse.Namespace
) -> list[str]:
    numbers = ", ".join(str(f["fold"]) for f in folds)
    lines = [
        f"# Hippocampus (MSD Task04): unet-lab and a MONAI peer, folds {numbers} of 5, "
        f"{folds[0]['unet-lab']['steps']} steps each",
        "",
        f"Command: `{command_line(__file__)}`  ",
        f"Machine: {machine()}",
        "",
        "| fold | framework | Dice anterior | Dice posterior | mean Dice | HD95 mm (mean) | "
        "s/step | peak training memory MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fold in folds:
        for name in FRAMEWORKS:
            run, s = fold[name], fold[name]["scores"]
            lines.append(
                f"| {fold['fold']} | {name} | {s['dice_anterior']:.4f} | "
                f"{s['dice_posterior']:.4f} | {s['dice']:.4f} | {s['hd95']:.2f} | "
                f"{run['seconds_per_step']} | {run['peak_memory_mib']} |"
            )
    for name in FRAMEWORKS:
        runs = [fold[name] for fold in folds]
        columns = {key: [r["scores"][key] for r in runs] for key in runs[0]["scores"]}
        seconds = statistics.median(r["seconds_per_step"] for r in runs)
        lines.append(
            f"| mean ± sd | {name} | {mean_sd(columns['dice_anterior'], 4)} | "
            f"{mean_sd(columns['dice_posterior'], 4)} | {mean_sd(columns['dice'], 4)} | "
            f"{mean_sd(columns['hd95'], 2)} | {seconds} (median) | "
            f"{max(r['peak_memory_mib'] for r in runs)} (max) |"
        )
    differences = [f["unet-lab"]["scores"]["dice"] - f["MONAI"]["scores"]["dice"] for f in folds]
    ratio = statistics.median(
        f["MONAI"]["seconds_per_step"] / f["unet-lab"]["seconds_per_step"] for f in folds
    )
    lines += [
        "",
        f"Mean Dice, unet-lab minus MONAI, paired by fold: {mean_sd(differences, 4)} "
        f"({sum(d > 0 for d in differences)} of {len(differences)} folds in unet-lab's favour). "
        f"Seconds per step, MONAI / unet-lab (median over folds): {ratio:.2f}.",
        "",
        "Both at equal settings: the fold's cases (unet-lab's split.json), patch "
        f"{PATCH} (D, H, W), batch {BATCH}, AdamW lr 1e-3, warm-up + cosine, fp32 "
        f"({folds[0]['unet-lab']['precision']}), validation every "
        f"{options.samples_per_epoch // BATCH} steps keeping the best; sliding window with "
        "Gaussian blending and overlap 0.5. Networks: "
        "unet-lab's 3D U-Net (conf/recipe/volumes_unet.yaml: width 16, depth 3, residual "
        "blocks, instance norm, deep supervision) and MONAI's residual UNet (channels 16-128, "
        "3 strides, 2 residual units). Scores over each fold's validation cases (40), in each "
        "file's own geometry (1 mm voxels), by one scoring function for both. Commonly quoted "
        "nnU-Net figures (5-fold CV, far more steps): Dice about 0.90 anterior, 0.89 posterior.",
    ]
    return lines + (["", *big_table(big)] if big else [])


def big_table(big: dict[str, Any]) -> list[str]:
    def ratio(key: str) -> float:
        return big["MONAI"][key] / big["unet-lab"][key]

    return [
        f"Predicting one {' x '.join(map(str, big['shape']))} volume (1 mm, int16 NIfTI) "
        "with the fold-0 network, sliding window of the patch size, overlap 0.25 "
        "(predict.py's default), 4 tiles per batch, in a process of its own:",
        "",
        "| framework | peak memory MiB | seconds |",
        "|---|---|---|",
        *[
            f"| {name} | {big[name]['peak_memory_mib']} | {big[name]['seconds']} |"
            for name in FRAMEWORKS
        ],
        "",
        f"MONAI / unet-lab: memory {ratio('peak_memory_mib'):.2f}, time {ratio('seconds'):.2f}.",
    ]


def big_only(options: argparse.Namespace) -> None:
    """Trains fold 0 for one short epoch with each framework, then measures the big volume."""
    options.epochs, options.samples_per_epoch = 1, 4 * BATCH
    with tempfile.TemporaryDirectory(prefix="unet_lab_hippocampus_") as folder:
        work = Path(folder)
        lab = train_unet_lab(options, 0, work)
        monai = train_monai(options, 0, lab["split"], lab["steps"], work)
        big = big_volume(options.big, work, lab, monai)
    lines = [
        "# Hippocampus: predicting one large volume, unet-lab and the MONAI peer",
        "",
        f"Command: `{command_line(__file__)}`  ",
        f"Machine: {machine()}",
        "",
        *big_table(big),
        "",
        f"The networks trained {lab['steps']} steps only: weights change neither memory nor time.",
    ]
    publish(HERE / (options.name or "big_volume"), lines, {"big_volume": big})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples-per-epoch", type=int, default=250)
    parser.add_argument(
        "--big", type=int, nargs=3, default=[512, 512, 300],
        help="x y z of the volume whose prediction is measured (0 0 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--big-only", action="store_true",
        help="only the big volume, with fold-0 networks of a few steps (weights change neither "
        "memory nor time); writes big_volume.md unless --name",
    )  # fmt: skip
    parser.add_argument("--name", default=None, help="results (big_volume with --big-only)")
    options = parser.parse_args()
    if options.big_only:
        big_only(options)
        return
    if not (options.data / "imagesTr").is_dir():
        raise SystemExit(f"{options.data}: no imagesTr/ (see ../shared/data/hippocampus/README.md)")
    folds, big = [], None
    with tempfile.TemporaryDirectory(prefix="unet_lab_hippocampus_") as folder:
        work = Path(folder)
        for fold in options.folds:
            lab = train_unet_lab(options, fold, work)
            monai = train_monai(options, fold, lab["split"], lab["steps"], work)
            for run in (lab, monai):
                run["scores"] = score(Path(run["predictions"]), options.data, lab["split"]["val"])
            folds.append({"fold": fold, "unet-lab": lab, "MONAI": monai})
            print(
                f"fold {fold}: unet-lab {lab['scores']['dice']:.4f}, "
                f"MONAI {monai['scores']['dice']:.4f}",
                flush=True,
            )
        if all(options.big):
            big = big_volume(options.big, work, folds[0]["unet-lab"], folds[0]["MONAI"])
    for fold in folds:
        for name in FRAMEWORKS:
            fold[name].pop("predictions")
    publish(
        HERE / (options.name or "results"),
        table(folds, big, options),
        {"epochs": options.epochs, "folds": folds, "big_volume": big},
    )


if __name__ == "__main__":
    main()
