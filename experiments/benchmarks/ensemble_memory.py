"""Does a fold ensemble's memory grow with its number of networks? Peak memory and time of
``predict.py`` on one large image with an ensemble of 1, 2, 3 and 5 networks
(``ckpt_path=[...]``), each run a process of its own.

    python experiments/benchmarks/ensemble_memory.py                   # 2048 x 2048 px
    python experiments/benchmarks/ensemble_memory.py --side 1024 --name ensemble_memory_quick

The networks are the default recipe's U-Net from a few training steps on the synthetic data
(weights do not change memory or time); the ensemble averages probabilities tile by tile, so
memory should hold one image's probabilities whatever the count, and time grow with it.
Writes ensemble_memory.md and .json here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import command_line, measured_run, provenance, publish  # noqa: E402

COUNTS = (1, 2, 3, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048, help="of the square image, px")
    parser.add_argument("--name", default="ensemble_memory")
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="unet_lab_ensemble_") as folder:
        work = Path(folder)
        checkpoints = []
        for seed in range(max(COUNTS)):
            run = work / f"net{seed}"
            measured_run(
                [str(REPO / "train.py"), "debug=fast", "logger=csv", "test=false",
                 f"seed={seed}", f"hydra.run.dir={run}"],
                work,
            )  # fmt: skip
            checkpoints.append(run / "checkpoints" / "best.ckpt")
        image = np.random.default_rng(0).integers(0, 256, (options.side, options.side, 3))
        cv2.imwrite(str(work / "large.png"), image.astype(np.uint8))
        for count in COUNTS:
            listed = ",".join(str(c) for c in checkpoints[:count])
            _, peak, seconds = measured_run(
                [str(REPO / "predict.py"), f"ckpt_path=[{listed}]", f"input={work / 'large.png'}",
                 f"output={work / f'out{count}'}", "window.progress=false"],
                work,
            )  # fmt: skip
            rows.append({"networks": count, "peak_memory_mib": round(peak), "seconds": seconds})
            print(json.dumps(rows[-1]), flush=True)
    first = rows[0]
    lines = [
        f"# Fold ensembles: predict.py memory and time on one {options.side} x {options.side} "
        "image against the number of networks",
        "",
        provenance(command_line(__file__)),
        "",
        "| networks | peak memory MiB | vs 1 network | seconds | vs 1 network |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['networks']} | {row['peak_memory_mib']} | "
            f"{row['peak_memory_mib'] / first['peak_memory_mib']:.2f} | {row['seconds']:.1f} | "
            f"{row['seconds'] / first['seconds']:.2f} |"
        )
    publish(HERE / options.name, lines, {"side": options.side, "rows": rows})


if __name__ == "__main__":
    main()
