"""Time to quality: wall-clock time until the validation Dice first reaches a target, for
unet-lab's default recipe and for the recipes peers typically train with, each through
``python train.py`` on the same data (the synthetic default, or ISBI 2012 patches).

    .venv/bin/python experiments/benchmarks/time_to_quality.py                      # synthetic
    .venv/bin/python experiments/benchmarks/time_to_quality.py --task isbi2012 \\
        --root ../shared/data/isbi2012
    .venv/bin/python experiments/benchmarks/time_to_quality.py --quick              # 3 minutes each

Recipes: unet-lab's default; milesial/Pytorch-UNet's (its 64-wide U-Net with transposed
convolutions, RMSprop lr 1e-5, momentum 0.999, Dice + cross-entropy, fp32); a MONAI tutorial's
(BasicUNet, Adam lr 1e-4, Dice loss, fp32). Each trains at most ``--minutes`` of wall time
(``trainer.max_time``) and logs ``time/elapsed_s`` with every validation. Writes
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
RECIPES = {
    "unet-lab": [],
    "milesial": [
        "model.width=64", "model.up_mode=transpose", "optimizer=rmsprop", "scheduler=none",
        "loss=dice_ce", *FP32,
    ],
    "monai": [
        "model=monai_basic_unet", "optimizer=adam", "optimizer.lr=1e-4", "scheduler=none",
        "loss=dice", *FP32,
    ],
}  # fmt: skip
LABELS = {
    "unet-lab": "unet-lab default",
    "milesial": "milesial/Pytorch-UNet (RMSprop, 64 wide, fp32)",
    "monai": "MONAI BasicUNet + Adam (fp32)",
}
TASKS = {"synthetic": ([], 0.8), "isbi2012": (["experiment=isbi2012", "data.fold=0"], 0.8)}


def curve(run_dir: Path) -> list[tuple[float, float]]:
    """(elapsed seconds, val Dice) per validation of one run, from its CSV log."""
    (metrics,) = run_dir.glob("runs/*/*/csv/metrics.csv")
    rows = csv.DictReader(metrics.open())
    return [
        (float(r["time/elapsed_s"]), float(r["val/dice"]))
        for r in rows
        if r.get("time/elapsed_s") and r.get("val/dice")
    ]


def _number(value: float | None, spec: str, missing: str) -> str:
    return missing if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=list(TASKS), default="synthetic")
    parser.add_argument("--root", help="the ISBI 2012 folder (--task isbi2012)")
    parser.add_argument("--target", type=float, help="val Dice to reach (default: per task)")
    parser.add_argument("--minutes", type=float, default=20, help="wall-time budget per recipe")
    parser.add_argument("--quick", action="store_true", help="3 minutes per recipe")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--overrides", nargs="*", default=[], help="for every recipe")
    parser.add_argument("--name", help="output file stem")
    args = parser.parse_args()
    if args.quick:
        args.minutes = 3
    task_overrides, default_target = TASKS[args.task]
    target = args.target if args.target is not None else default_target
    if args.task == "isbi2012":
        if not args.root:
            parser.error("--task isbi2012 needs --root")
        task_overrides = [*task_overrides, f"data.root={Path(args.root).resolve()}"]
    minutes, seconds = divmod(round(args.minutes * 60), 60)
    budget = f"'00:{minutes // 60:02d}:{minutes % 60:02d}:{seconds:02d}'"  # Lightning's DD:HH:MM:SS

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            workdir = Path(tmp) / str(len(rows))
            workdir.mkdir()
            command = [
                sys.executable, str(REPO / "train.py"), *task_overrides, *RECIPES[recipe],
                f"++trainer.max_time={budget}", "trainer.max_epochs=1000", "test=false",
                "logger=csv", "callbacks.validation_images=null",
                "trainer.enable_progress_bar=false", f"paths.log_dir={workdir}", *args.overrides,
            ]  # fmt: skip
            subprocess.run(command, check=True, cwd=workdir, capture_output=True, text=True)
            points = curve(workdir)
            reached = next(((t, d) for t, d in points if d >= target), None)
            rows.append(
                {"recipe": LABELS[recipe], "overrides": RECIPES[recipe],
                 "seconds_to_target": reached[0] if reached else None,
                 "validations": len(points), "best_dice": max((d for _, d in points), default=None),
                 "curve": points}
            )  # fmt: skip
            print(rows[-1]["recipe"], rows[-1]["seconds_to_target"], rows[-1]["best_dice"])

    command = command_line(__file__)
    lines = [
        f"# Time to quality on {args.task}: wall time to val Dice >= {target}",
        "",
        provenance(command),
        f"Budget {args.minutes:g} minutes of training per recipe; validation every epoch.",
        "",
        "| recipe | seconds to target | best val Dice in budget | validations |",
        "|---|---|---|---|",
        *(
            f"| {r['recipe']} | {_number(r['seconds_to_target'], '.0f', 'not reached')} | "
            f"{_number(r['best_dice'], '.4f', '-')} | {r['validations']} |"
            for r in rows
        ),
    ]
    stem = args.name or ("time_to_quality" + ("" if args.task == "synthetic" else f"_{args.task}"))
    publish(HERE / stem, lines, {"command": command, "target": target, "rows": rows})


if __name__ == "__main__":
    main()
