"""Time to quality: wall-clock time until the validation Dice first reaches a target, for
unet-lab's default recipe and for the recipes peers typically train with, each through
``python train.py`` on the same data (the synthetic default, or ISBI 2012 patches).

    .venv/bin/python experiments/benchmarks/time_to_quality.py                      # synthetic
    .venv/bin/python experiments/benchmarks/time_to_quality.py --task isbi2012 \\
        --root ../shared/data/isbi2012
    .venv/bin/python experiments/benchmarks/time_to_quality.py --quick              # 64 px

Recipes: unet-lab's default, as ``python train.py`` runs it (its epochs and its warm-up + cosine
schedule, which spans them), and the same with ``module.compile=true`` (or, with ``--recipes``,
in fp32: the precision default's accuracy check at full length); milesial/Pytorch-UNet's
(its 64-wide U-Net with transposed convolutions, RMSprop lr 1e-5, momentum 0.999, Dice +
cross-entropy, fp32); a MONAI tutorial's (BasicUNet, Adam lr 1e-4, Dice loss, fp32). The peers'
recipes have a constant learning rate, so they train until the budget. Every recipe stops at
``--minutes`` of training (``trainer.max_time``) and logs ``time/elapsed_s`` (wall time since
fitting began: compilation included, process start and data generation not) with every
validation. ``--stop-at-target`` ends each run at the highest target (quick looks). Writes
time_to_quality[_<task>].{md,json}.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import command_line, max_time_argument, provenance, publish  # noqa: E402

FP32 = ["trainer.precision=32-true", "module.channels_last=false"]
UNTIL_BUDGET = "trainer.max_epochs=100000"  # constant learning rate: train until --minutes
# name -> (label in the table, overrides of `python train.py`)
RECIPES = {
    "unet-lab": ("unet-lab default", []),
    "unet-lab-compile": ("unet-lab default + module.compile=true", ["module.compile=true"]),
    "unet-lab-fp32": ("unet-lab default in fp32 (32-true, no channels_last)", FP32),
    "milesial": ("milesial/Pytorch-UNet (RMSprop, 64 wide, fp32)", [
        "model.width=64", "model.up_mode=transpose", "optimizer=rmsprop", "scheduler=none",
        "loss=dice_ce", *FP32, UNTIL_BUDGET,
    ]),
    "monai": ("MONAI BasicUNet + Adam (fp32)", [
        "model=monai_basic_unet", "optimizer=adam", "optimizer.lr=1e-4", "scheduler=none",
        "loss=dice", *FP32, UNTIL_BUDGET,
    ]),
}  # fmt: skip
DEFAULT_RECIPES = ["unet-lab", "unet-lab-compile", "milesial", "monai"]
# task -> (overrides, val Dice levels to time): levels the default recipe passes early, midway
# and late in its own run (its final scores: 0.94 synthetic, 0.82 ISBI fold 0)
TASKS = {
    "synthetic": ([], [0.5, 0.8, 0.9]),
    "isbi2012": (["experiment=isbi2012", "data.fold=0"], [0.7, 0.75, 0.8]),
}
QUICK = ["data.image_size=64"]  # --quick: the same task at a quarter of the pixels
QUICK_HELP = (
    "unet-lab vs MONAI on 64 px images (data.image_size=64), 1.5 minutes each, the two lower "
    "levels, each run stopped at the higher (replaces --minutes and --recipes)"
)
Curve = list[tuple[float, float]]


def curve(run_dir: Path) -> Curve:
    """(elapsed seconds, val Dice) per validation of one run, from its CSV log."""
    (metrics,) = run_dir.glob("runs/*/*/csv/metrics.csv")
    rows = csv.DictReader(metrics.open())
    return [
        (float(r["time/elapsed_s"]), float(r["val/dice"]))
        for r in rows
        if r.get("time/elapsed_s") and r.get("val/dice")
    ]


def seconds_to(points: Curve, target: float) -> float | None:
    """Elapsed seconds at the first validation with val Dice >= ``target`` (None: never)."""
    return next((t for t, dice in points if dice >= target), None)


def run_recipe(command: list[str], workdir: Path) -> tuple[Curve, str | None]:
    """Trains one recipe; its validation curve, or why it has none."""
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        reason = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1])
        return [], f"exit {done.returncode}: {reason}"
    points = curve(workdir)
    return points, None if points else "no validation logged"


def _cell(seconds: float | None, reference: float | None, trained: float) -> str:
    """Seconds to a level and their multiple of the reference recipe's; for a run that ended
    without reaching it, a lower bound on the multiple."""
    if reference is None:
        return "not reached" if seconds is None else f"{seconds:.0f}"
    if seconds is None:
        return f"not reached (> {trained / reference:.1f}x)"
    return f"{seconds:.0f} ({seconds / reference:.2f}x)"


def table(rows: list[dict], targets: list[float]) -> list[str]:
    """The markdown rows: one per recipe; the first that ran is the reference of the ratios."""
    reference = next((row for row in rows if not row["error"]), None)
    header = [
        "| recipe | " + " | ".join(f"seconds to Dice >= {t:g}" for t in targets)
        + " | best val Dice | seconds at last validation | validations |",
        "|---|" + "---|" * (len(targets) + 3),
    ]  # fmt: skip
    lines = [
        f"In brackets, the multiple of {reference['recipe']}'s time." if reference else "",
        "",
        *header,
    ]
    for row in rows:
        if row["error"]:
            error = row["error"].replace("|", "\\|")
            lines.append(f"| {row['recipe']} | failed: {error} |" + " |" * (len(targets) + 2))
            continue
        trained = row["seconds_trained"]
        cells = [
            _cell(row["seconds_to"][str(t)], reference["seconds_to"][str(t)], trained)
            for t in targets
        ]
        lines.append(
            f"| {row['recipe']} | {' | '.join(cells)} | {row['best_dice']:.4f} | {trained:.0f} | "
            f"{len(row['curve'])} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=list(TASKS), default="synthetic")
    parser.add_argument("--root", help="the ISBI 2012 folder (--task isbi2012)")
    parser.add_argument(
        "--targets", type=float, nargs="+", help="val Dice levels (default: per task)"
    )
    parser.add_argument("--minutes", type=float, default=15, help="wall-time budget per recipe")
    parser.add_argument("--quick", action="store_true", help=QUICK_HELP)
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=DEFAULT_RECIPES)
    parser.add_argument(
        "--stop-at-target", action="store_true", help="end each run at the highest level"
    )
    parser.add_argument("--overrides", nargs="*", default=[], help="for every recipe")
    parser.add_argument("--name", help="output file stem")
    args = parser.parse_args()
    task_overrides, targets = TASKS[args.task]
    if args.quick:
        args.minutes, args.recipes, args.stop_at_target = 1.5, ["unet-lab", "monai"], True
        targets = targets[:2]
        task_overrides = [*task_overrides, *QUICK]
    targets = sorted(args.targets or targets)
    if args.task == "isbi2012":
        if not args.root:
            parser.error("--task isbi2012 needs --root")
        task_overrides = [*task_overrides, f"data.root={Path(args.root).resolve()}"]
    stop = (
        ["+callbacks.stop_at_target._target_=pytorch_lightning.callbacks.EarlyStopping",
         "+callbacks.stop_at_target.monitor=val/dice", "+callbacks.stop_at_target.mode=max",
         f"+callbacks.stop_at_target.stopping_threshold={targets[-1]}",
         "+callbacks.stop_at_target.patience=100000"]
        if args.stop_at_target else []
    )  # fmt: skip

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            label, overrides = RECIPES[recipe]
            workdir = Path(tmp) / recipe
            workdir.mkdir()
            train = [
                sys.executable, str(REPO / "train.py"), *task_overrides, *overrides,
                f"++trainer.max_time={max_time_argument(args.minutes)}", *stop, "test=false",
                "logger=csv", "callbacks.validation_images=null",
                "trainer.enable_progress_bar=false", f"paths.log_dir={workdir}", *args.overrides,
            ]  # fmt: skip
            points, error = run_recipe(train, workdir)
            rows.append(
                {"recipe": label, "overrides": overrides, "error": error,
                 "seconds_to": {str(t): seconds_to(points, t) for t in targets},
                 "seconds_trained": points[-1][0] if points else None,
                 "best_dice": max((dice for _, dice in points), default=None), "curve": points}
            )  # fmt: skip
            print(label, rows[-1]["seconds_to"], error or "", flush=True)

    command = command_line(__file__)
    lines = [
        f"# Time to quality on {args.task}: wall time to a validation Dice",
        "",
        provenance(command),
        f"Budget {args.minutes:g} minutes of training per recipe"
        + (", each stopped at the highest level" if args.stop_at_target else "")
        + "; validation every epoch. Seconds count from the start of fitting (compilation"
        " included).",
        *table(rows, targets),
    ]
    stem = args.name or ("time_to_quality" + ("" if args.task == "synthetic" else f"_{args.task}"))
    publish(HERE / stem, lines, {"command": command, "targets": targets, "rows": rows})


if __name__ == "__main__":
    main()
