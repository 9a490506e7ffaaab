"""Precision and memory format on the synthetic default: does bf16-mixed with channels_last
(the default where ``trainer.precision=auto`` finds fast bf16) train as well as fp32, and how
much faster is it?

    .venv/bin/python experiments/benchmarks/precision.py                 # 3 seeds, 4 epochs
    .venv/bin/python experiments/benchmarks/precision.py --seeds 0 1 2 3 4 --epochs 16

Every setting trains ``python train.py`` (the default recipe) with the same seeds, so the
settings are paired per seed (same data, same initial weights). Reports per setting the median
best validation Dice and test Dice over seeds, the largest paired difference from fp32 next to
fp32's own spread over seeds (the noise), and the median run time with its ratio to fp32.
Writes precision.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import command_line, provenance, publish  # noqa: E402

# name -> overrides; fp32 is the reference of the differences and ratios.
SETTINGS = {
    "fp32": ["trainer.precision=32-true", "module.channels_last=false"],
    "fp32+cl": ["trainer.precision=32-true", "module.channels_last=true"],
    "bf16": ["trainer.precision=bf16-mixed", "module.channels_last=false"],
    "bf16+cl": ["trainer.precision=bf16-mixed", "module.channels_last=true"],
}
LABELS = {
    "fp32": "fp32",
    "fp32+cl": "fp32 + channels_last",
    "bf16": "bf16-mixed",
    "bf16+cl": "bf16-mixed + channels_last (default)",
}


def train(overrides: list[str], workdir: Path) -> dict:
    """One run of the default recipe; its metrics.json."""
    command = [
        sys.executable,
        str(REPO / "train.py"),
        *overrides,
        f"paths.log_dir={workdir}",
        "logger=csv",
        "callbacks.validation_images=null",
        "trainer.enable_progress_bar=false",
    ]
    subprocess.run(command, check=True, cwd=workdir, capture_output=True, text=True)
    (summary,) = workdir.glob("runs/*/*/metrics.json")
    result = json.loads(summary.read_text())
    summary.rename(workdir / f"metrics-{len(list(workdir.glob('metrics-*')))}.json")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--name", default="precision", help="output file stem")
    parser.add_argument("--overrides", nargs="*", default=[], help="for every run")
    args = parser.parse_args()

    names = ["fp32", *(n for n in args.settings if n != "fp32")]  # fp32: the reference
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:  # settings side by side within each seed
            for name in names:
                overrides = SETTINGS[name]
                workdir = Path(tmp) / f"{name}-{seed}"
                workdir.mkdir()
                run = [
                    *overrides,
                    f"seed={seed}",
                    f"trainer.max_epochs={args.epochs}",
                    *args.overrides,
                ]
                summary = train(run, workdir)
                runs[name].append(
                    {
                        "seed": seed,
                        "val_dice": summary["val"]["dice"],
                        "test_dice": summary["test"]["dice"],
                        "duration_s": summary["duration_s"],
                        "precision": summary["precision"],
                    }
                )
                print(f"seed {seed} {name}: {runs[name][-1]}", flush=True)

    reference = runs["fp32"]
    noise = max(r["val_dice"] for r in reference) - min(r["val_dice"] for r in reference)
    rows = []
    for name in names:
        results = runs[name]
        differences = [
            r["val_dice"] - f["val_dice"] for r, f in zip(results, reference, strict=True)
        ]
        rows.append(
            {
                "setting": LABELS[name],
                "val_dice_median": statistics.median(r["val_dice"] for r in results),
                "test_dice_median": statistics.median(r["test_dice"] for r in results),
                "val_dice_paired_difference_max": max(differences, key=abs),
                "duration_s_median": statistics.median(r["duration_s"] for r in results),
                "runs": results,
            }
        )
    fp32_time = rows[0]["duration_s_median"]
    for row in rows:
        row["speed_vs_fp32"] = fp32_time / row["duration_s_median"]

    command = command_line(__file__)
    lines = [
        f"# Precision and memory format: the synthetic default, {args.epochs} epochs, "
        f"seeds {args.seeds}",
        "",
        provenance(command),
        "",
        "| setting | val Dice (median) | test Dice (median) | largest paired val Dice "
        "difference from fp32 | run time (median, s) | speed vs fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['setting']} | {row['val_dice_median']:.4f} | {row['test_dice_median']:.4f} "
            f"| {row['val_dice_paired_difference_max']:+.4f} | {row['duration_s_median']:.0f} "
            f"| {row['speed_vs_fp32']:.2f}x |"
        )
    lines += [
        "",
        f"Noise: fp32's own best val Dice spans {noise:.4f} over the seeds. Run time is the whole "
        "run (training, validation every epoch, test), median over seeds.",
    ]
    publish(
        HERE / f"{args.name}",
        lines,
        {"command": command, "fp32_val_dice_range": noise, "rows": rows},
    )


if __name__ == "__main__":
    main()
