"""Time to quality: wall-clock time until the validation Dice first reaches a target, for
unet-lab's default recipe and for the recipes peers typically train with, each through
``python train.py`` on the same data (the synthetic default, or ISBI 2012 patches).

    .venv/bin/python experiments/benchmarks/time_to_quality.py                      # synthetic
    .venv/bin/python experiments/benchmarks/time_to_quality.py --task isbi2012 \\
        --root ../shared/data/isbi2012
    .venv/bin/python experiments/benchmarks/time_to_quality.py --quick

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
from common import command_line, provenance, publish  # noqa: E402

FP32 = ["trainer.precision=32-true", "module.channels_last=false"]
UNTIL_BUDGET = "trainer.max_epochs=100000"  # constant learning rate: train until --minutes
RECIPES = {
    "unet-lab": [],
    "unet-lab-compile": ["module.compile=true"],
    "unet-lab-fp32": FP32,
    "milesial": [
        "model.width=64", "model.up_mode=transpose", "optimizer=rmsprop", "scheduler=none",
        "loss=dice_ce", *FP32, UNTIL_BUDGET,
    ],
    "monai": [
        "model=monai_basic_unet", "optimizer=adam", "optimizer.lr=1e-4", "scheduler=none",
        "loss=dice", *FP32, UNTIL_BUDGET,
    ],
}  # fmt: skip
DEFAULT_RECIPES = ["unet-lab", "unet-lab-compile", "milesial", "monai"]
LABELS = {
    "unet-lab": "unet-lab default",
    "unet-lab-compile": "unet-lab default + module.compile=true",
    "unet-lab-fp32": "unet-lab default in fp32 (32-true, no channels_last)",
    "milesial": "milesial/Pytorch-UNet (RMSprop, 64 wide, fp32)",
    "monai": "MONAI BasicUNet + Adam (fp32)",
}
# task -> (overrides, val Dice levels to time): levels the default recipe passes early, midway
# and late in its own run (its final scores: 0.94 synthetic, 0.82 ISBI fold 0)
TASKS = {
    "synthetic": ([], [0.5, 0.8, 0.9]),
    "isbi2012": (["experiment=isbi2012", "data.fold=0"], [0.7, 0.75, 0.8]),
}
QUICK_HELP = "2.5 minutes per recipe, unet-lab vs MONAI, the two lower targets, stop at the higher"


def curve(run_dir: Path) -> list[tuple[float, float]]:
    """(elapsed seconds, val Dice) per validation of one run, from its CSV log."""
    (metrics,) = run_dir.glob("runs/*/*/csv/metrics.csv")
    rows = csv.DictReader(metrics.open())
    return [
        (float(r["time/elapsed_s"]), float(r["val/dice"]))
        for r in rows
        if r.get("time/elapsed_s") and r.get("val/dice")
    ]


def seconds_to(points: list[tuple[float, float]], target: float) -> float | None:
    """Elapsed seconds at the first validation with val Dice >= ``target`` (None: never)."""
    return next((t for t, dice in points if dice >= target), None)


def _cell(seconds: float | None, reference: float | None, trained: float) -> str:
    """Seconds to a target and how many times the first recipe's time that is ("not reached"
    with a lower bound on the ratio when the run ended first)."""
    if seconds is None:
        bound = f" (> {trained / reference:.1f}x)" if reference else ""
        return f"not reached{bound}"
    return f"{seconds:.0f}" + (f" ({seconds / reference:.2f}x)" if reference else "")


def run_recipe(command: list[str], workdir: Path) -> tuple[list[tuple[float, float]], str | None]:
    """Trains one recipe; its validation curve, and the error's last line if it failed."""
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        return [], f"exit {done.returncode}: {lines[-1]}"
    return curve(workdir), None


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
        "--stop-at-target", action="store_true", help="end each run at the highest target"
    )
    parser.add_argument("--overrides", nargs="*", default=[], help="for every recipe")
    parser.add_argument("--name", help="output file stem")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.recipes, args.stop_at_target = 2.5, ["unet-lab", "monai"], True
    task_overrides, default_targets = TASKS[args.task]
    if args.quick:
        default_targets = default_targets[:2]
    targets = sorted(args.targets or default_targets)
    if args.task == "isbi2012":
        if not args.root:
            parser.error("--task isbi2012 needs --root")
        task_overrides = [*task_overrides, f"data.root={Path(args.root).resolve()}"]
    minutes, seconds = divmod(round(args.minutes * 60), 60)
    budget = f"'00:{minutes // 60:02d}:{minutes % 60:02d}:{seconds:02d}'"  # Lightning's DD:HH:MM:SS
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
            workdir = Path(tmp) / str(len(rows))
            workdir.mkdir()
            command = [
                sys.executable, str(REPO / "train.py"), *task_overrides, *RECIPES[recipe],
                f"++trainer.max_time={budget}", *stop, "test=false",
                "logger=csv", "callbacks.validation_images=null",
                "trainer.enable_progress_bar=false", f"paths.log_dir={workdir}", *args.overrides,
            ]  # fmt: skip
            points, error = run_recipe(command, workdir)
            rows.append(
                {"recipe": LABELS[recipe], "overrides": RECIPES[recipe], "error": error,
                 "seconds_to": {str(t): seconds_to(points, t) for t in targets},
                 "seconds_trained": points[-1][0] if points else None,
                 "best_dice": max((d for _, d in points), default=None), "curve": points}
            )  # fmt: skip
            print(rows[-1]["recipe"], rows[-1]["seconds_to"], rows[-1]["best_dice"], error or "")

    command = command_line(__file__)
    first = rows[0]
    lines = [
        f"# Time to quality on {args.task}: wall time to a validation Dice",
        "",
        provenance(command),
        f"Budget {args.minutes:g} minutes of training per recipe"
        + (", each stopped at the highest target" if args.stop_at_target else "")
        + "; validation every epoch. Seconds count from the start of fitting (compilation"
        f" included); in brackets, the multiple of {first['recipe']}'s time.",
        "",
        "| recipe | "
        + " | ".join(f"seconds to Dice >= {t:g}" for t in targets)
        + " | best val Dice | seconds trained | validations |",
        "|---|" + "---|" * (len(targets) + 3),
    ]
    for row in rows:
        if row["error"]:
            lines.append(f"| {row['recipe']} | failed: {row['error']} |")
            continue
        cells = [
            _cell(row["seconds_to"][str(t)], first["seconds_to"][str(t)], row["seconds_trained"])
            for t in targets
        ]
        lines.append(
            f"| {row['recipe']} | {' | '.join(cells)} | {row['best_dice']:.4f} | "
            f"{row['seconds_trained']:.0f} | {len(row['curve'])} |"
        )
    stem = args.name or ("time_to_quality" + ("" if args.task == "synthetic" else f"_{args.task}"))
    publish(HERE / stem, lines, {"command": command, "targets": targets, "rows": rows})


if __name__ == "__main__":
    main()
