"""ISBI 2012 (the U-Net paper's data): k-fold cross-validation of unet-lab's recipe and of MONAI's
BasicUNet trained the same way, scored as the challenge scored the paper.

    .venv/bin/python experiments/isbi2012/run.py                       # 5 folds, both models
    .venv/bin/python experiments/isbi2012/run.py --folds 0 --models unet
    .venv/bin/python experiments/isbi2012/run.py --root /data/isbi2012 \
        --overrides trainer.max_epochs=40

For each model and fold it runs the command a user types,
``python train.py experiment=isbi2012 data.root=ROOT data.fold=K [model=...]``, then loads the best
checkpoint and predicts the fold's six held-out slices whole, without and with test-time
averaging over the eight flips/rotations. Scores per fold: membrane Dice and IoU (argmax), pixel
error and foreground-restricted Rand error (best over the challenge's thresholds, see
``unet_lab.metrics.regions``). Writes results.md and results.json here; ``--workdir`` keeps the
run folders, and finished runs found there are scored again instead of retrained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from unet_lab.data.files import read_image, read_mask
from unet_lab.inference.trained import load_trained
from unet_lab.metrics.regions import best_over_thresholds

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import machine  # noqa: E402

# model name -> overrides that make it (the peer runs in its fastest memory format here)
MODELS = {
    "unet": [],
    "monai_basic_unet": ["model=monai_basic_unet", "module.channels_last=false"],
}
MEMBRANE = 1  # class index of the membrane in experiment=isbi2012 (mask value 0)
# The paper's Table 1 (hidden test labels, 7-rotation averaging), as quoted in the data README.
PAPER = [
    ("U-Net paper (test labels, hidden)", 0.0611, 0.0382),
    ("runner-up in the data README", 0.0584, 0.0305),
]
MEASURES = ("dice", "iou", "pixel_error", "rand_error")


def train_fold(model: str, fold: int, root: Path, overrides: list[str], workdir: Path) -> dict:
    """Trains one fold (or finds it trained in ``workdir``); returns the run summary."""
    log_dir = workdir / model / f"fold{fold}"
    done = sorted(log_dir.glob("runs/*/*/metrics.json"))
    if done:
        summary = json.loads(done[-1].read_text())
        if summary.get("status") == "completed":
            return summary
    arguments = [
        "experiment=isbi2012",
        f"data.root={root}",
        f"data.fold={fold}",
        *MODELS[model],
        "logger=csv",
        f"paths.log_dir={log_dir}",
        *overrides,
    ]
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *arguments], capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"training {model} fold {fold} failed:\n{result.stderr[-3000:]}")
    (summary_file,) = log_dir.glob("runs/*/*/metrics.json")
    summary = json.loads(summary_file.read_text())
    summary["command"] = " ".join(["python train.py", *arguments])
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def score_membranes(membranes: list[np.ndarray], truths: list[np.ndarray]) -> dict:
    """Membrane Dice and IoU at 0.5, and the challenge's pixel and Rand errors (best over
    thresholds), of membrane probabilities (or 0/1 maps) against true membrane masks."""
    overlap = false_positive = false_negative = 0
    for membrane, truth in zip(membranes, truths, strict=True):
        predicted = membrane > 0.5
        overlap += int(np.count_nonzero(predicted & truth))
        false_positive += int(np.count_nonzero(predicted & ~truth))
        false_negative += int(np.count_nonzero(~predicted & truth))
    boundary = best_over_thresholds(membranes, truths)
    return {
        "dice": 2 * overlap / (2 * overlap + false_positive + false_negative),
        "iou": overlap / (overlap + false_positive + false_negative),
        "pixel_error": boundary.pixel_error,
        "pixel_threshold": boundary.pixel_threshold,
        "rand_error": boundary.rand_error,
        "rand_threshold": boundary.rand_threshold,
    }


def labelled_slice(root: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """A labelled training slice and its membrane mask (mask value 0)."""
    (image,) = (root / "train" / "images").glob(f"{stem}.*")
    (mask,) = (root / "train" / "masks").glob(f"{stem}.*")
    return read_image(image), read_mask(mask) == 0


def score_fold(summary: dict, root: Path, tta: bool) -> dict:
    """Scores the best checkpoint on its fold's held-out slices, predicted whole."""
    run_dir = Path(summary["run_dir"])
    trained = load_trained(run_dir / summary["best_checkpoint"])
    stems = json.loads((run_dir / "split.json").read_text())["val"]
    slices = [labelled_slice(root, stem) for stem in stems]
    membranes = [trained.probabilities(image, tta)[MEMBRANE] for image, _ in slices]
    return {**score_membranes(membranes, [truth for _, truth in slices]), "slices": stems}


def _row(label: str, rows: list[dict], wall: str, parameters: str) -> str:
    cells = []
    for measure in MEASURES:
        values = [r[measure] for r in rows]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        cells.append(f"{statistics.mean(values):.4f} ± {spread:.4f}")
    return f"| {label} | {' | '.join(cells)} | {wall} | {parameters} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared/data/isbi2012")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--overrides", nargs="*", default=[], help="for every training run")
    parser.add_argument("--workdir", type=Path, help="keep run folders here (default: temp)")
    parser.add_argument("--name", default="results", help="output file stem")
    args = parser.parse_args()
    root = args.root.resolve()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        results: dict[str, list[dict]] = {model: [] for model in args.models}
        for fold in args.folds:  # fold by fold, so a partial run still compares like with like
            for model in args.models:
                summary = train_fold(model, fold, root, args.overrides, workdir)
                record = {
                    "fold": fold,
                    "command": summary.get("command"),
                    "wall_s": summary.get("wall_s", summary.get("duration_s")),
                    "epochs": summary["epochs_completed"],
                    "steps": summary["global_step"],
                    "parameters": summary["model"]["parameters"],
                    "precision": summary["precision"],
                    "plain": score_fold(summary, root, tta=False),
                    "tta": score_fold(summary, root, tta=True),
                }
                results[model].append(record)
                print(json.dumps({"model": model, **record}), flush=True)

    header = (
        "| model | membrane Dice | membrane IoU | pixel error | Rand error | "
        "train s/fold (median) | parameters |"
    )
    lines = [
        "# ISBI 2012, 5-fold cross-validation over the 30 labelled slices\n",
        f"Machine: {machine()}  ",
        f"Generated by `python experiments/isbi2012/run.py {' '.join(sys.argv[1:])}`".rstrip()
        + f" on {time.strftime('%Y-%m-%d')}; folds {args.folds}.\n",
        "Mean ± standard deviation over the folds; each fold scores its 6 held-out slices,",
        "predicted whole (512×512). Dice/IoU of the membrane class at argmax; pixel and Rand",
        "error as the ISBI 2012 challenge scored them (best over thresholds 0.0-0.9, Rand error",
        "foreground-restricted; `unet_lab/metrics/regions.py`). TTA: the mean over the 8",
        "flips/rotations.",
        "",
        header,
        "|---|---|---|---|---|---|---|",
    ]
    for model, records in results.items():
        wall = f"{statistics.median(r['wall_s'] for r in records):.0f}"
        parameters = f"{records[0]['parameters'] / 1e6:.2f} M"
        for mode in ("plain", "tta"):
            label = f"{model}{' + TTA' if mode == 'tta' else ''}"
            lines.append(_row(label, [r[mode] for r in records], wall, parameters))
    for label, pixel_error, rand_error in PAPER:
        lines.append(f"| {label} | | | {pixel_error} | {rand_error} | | |")
    lines += ["", "Commands (one per fold; `data.fold=K`):", ""]
    for model, records in results.items():
        lines.append(f"- {model}: `{records[0]['command']}`")
    lines += [
        "",
        "The paper's figures are on the challenge's hidden test labels (trained on all 30",
        "slices); ours are cross-validated on the 30 labelled slices, so they are comparable in",
        "kind, not in value.",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    (HERE / f"{args.name}.md").write_text(table)
    (HERE / f"{args.name}.json").write_text(
        json.dumps({"machine": machine(), "overrides": args.overrides, "models": results}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
