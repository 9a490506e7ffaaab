"""ISBI 2012 through ``unet-lab cv``: does the ensemble of the five fold networks, and the
postprocessing chosen on their out-of-fold predictions, beat a single fold network?

    python experiments/isbi2012/cv_ensemble.py                 # 5 folds (about 25 min on 2 CPUs)
    python experiments/isbi2012/cv_ensemble.py --workdir /tmp/isbi_cv   # keep (and resume) runs

It runs the command a user types,

    unet-lab cv experiment=isbi2012 data.root=ROOT data.test_fraction=0.2 logger=csv

which holds 6 of the 30 labelled slices out of every fold (the test split) and cross-validates
on the other 24. Reported, from that one sweep:

- out of fold (24 slices, each predicted by the fold network that did not train on it): pooled
  membrane Dice raw and after the postprocessing chosen on them (``cv/cv.json``);
- on the 6 held-out slices, which no network trained on: each fold network alone (mean ± sd
  over the five), the ensemble of the five, and the ensemble with the postprocessing; membrane
  Dice/IoU, and pixel and Rand error as the challenge scored them;
- the ensemble predicting the challenge's 30 unlabelled test slices with ``predict.py``.

Writes cv_ensemble.md and cv_ensemble.json here.
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from common import command_line, machine  # noqa: E402
from run import MEASURES, MEMBRANE, labelled_slice, score_membranes  # noqa: E402

from unet_lab.inference.models import load_model  # noqa: E402
from unet_lab.inference.trained import load_trained  # noqa: E402


def cross_validate(root: Path, workdir: Path, overrides: list[str]) -> tuple[Path, float | None]:
    """Runs ``unet-lab cv``, or continues the sweep already in ``workdir`` (its finished folds
    are not trained again); returns the sweep folder and the wall time (None: continued)."""
    arguments = [
        "experiment=isbi2012",
        f"data.root={root}",
        "data.test_fraction=0.2",
        "logger=csv",
        f"paths.log_dir={workdir}",
        *overrides,
    ]
    earlier = sorted((workdir / "multirun").glob("*/*/multirun.yaml"))
    if earlier:
        arguments.append(f"hydra.sweep.dir={earlier[-1].parent}")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "unet_lab.cli", "cv", *arguments],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if done.returncode != 0:
        sys.exit(f"unet-lab cv failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    (sweep,) = sorted((workdir / "multirun").glob("*/*/cv/cv.json"))
    return sweep.parent.parent, None if earlier else time.perf_counter() - started


def spread(records: list[dict], measure: str) -> str:
    values = [r[measure] for r in records]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared/data/isbi2012")
    parser.add_argument("--workdir", type=Path, help="keep the sweep here (default: temp)")
    parser.add_argument("--overrides", nargs="*", default=[], help="for every training run")
    args = parser.parse_args()
    root = args.root.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        sweep, wall = cross_validate(root, workdir, args.overrides)
        record = json.loads((sweep / "cv" / "cv.json").read_text())
        (configuration,) = record["configurations"]
        folds = [Path(f["run_dir"]) for _, f in sorted(configuration["folds"].items())]
        stems = json.loads((folds[0] / "split.json").read_text())["test"]
        slices = [labelled_slice(root, stem) for stem in stems]
        truths = [truth for _, truth in slices]

        singles = []
        for run_dir in folds:
            trained = load_trained(run_dir / "checkpoints" / "best.ckpt")
            membranes = [trained.probabilities(image)[MEMBRANE] for image, _ in slices]
            singles.append(score_membranes(membranes, truths))
        ensemble = load_model(sweep)
        probabilities = [ensemble.probabilities(image) for image, _ in slices]
        together = score_membranes([p[MEMBRANE] for p in probabilities], truths)
        cleaned = [(ensemble.labels(p) == MEMBRANE).astype(float) for p in probabilities]
        processed = score_membranes(cleaned, truths)

        output = workdir / "challenge_test"
        started = time.perf_counter()
        predicted = subprocess.run(
            [sys.executable, str(REPO / "predict.py"), f"ckpt_path={sweep}",
             f"input={root / 'test' / 'images'}", f"output={output}"],
            capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        if predicted.returncode != 0:
            sys.exit(f"predict.py failed:\n{predicted.stderr[-3000:]}")
        challenge = {
            "slices": len(list(output.glob("*.png"))),
            "seconds": round(time.perf_counter() - started, 1),
        }

    rules = (
        ensemble.postprocessing.describe(ensemble.class_names)
        if ensemble.postprocessing
        else "none"
    )
    pooled, pooled_processed = configuration["pooled"], configuration["pooled_postprocessed"]
    lines = [
        "# ISBI 2012: five fold networks, their ensemble and postprocessing (`unet-lab cv`)",
        "",
        f"Machine: {machine()}  ",
        f"Generated by `{command_line(__file__)}`"
        + f" on {time.strftime('%Y-%m-%d')}; "
        + (f"`unet-lab cv` took {wall / 60:.1f} min." if wall else "`unet-lab cv` continued "
           "a sweep trained earlier (--workdir).") ,
        "",
        "Command: `unet-lab cv experiment=isbi2012 data.root=ROOT data.test_fraction=0.2 "
        "logger=csv`: 6 of the 30 labelled slices held out of every fold (test), 5 folds over "
        "the other 24.",
        "",
        f"Postprocessing chosen on the out-of-fold predictions: {rules}.",
        "",
        "Out of fold (24 slices, each predicted by the one fold network that did not train on "
        "it), pooled membrane Dice:",
        "",
        "| | membrane Dice |",
        "|---|---|",
        f"| raw | {pooled['dice_membrane']:.4f} |",
        f"| postprocessed | {pooled_processed['dice_membrane']:.4f} |",
        "",
        f"On the {len(stems)} held-out test slices ({', '.join(stems)}), which no network "
        "trained on; Dice/IoU at argmax, pixel and Rand error as the challenge scored them "
        "(best over thresholds, `unet_lab/metrics/regions.py`):",
        "",
        "| model | membrane Dice | membrane IoU | pixel error | Rand error |",
        "|---|---|---|---|---|",
        "| one fold network (mean ± sd of 5) | "
        + " | ".join(spread(singles, m) for m in MEASURES) + " |",
        "| ensemble of the 5 | " + " | ".join(f"{together[m]:.4f}" for m in MEASURES) + " |",
        "| ensemble + postprocessing | "
        + " | ".join(f"{processed[m]:.4f}" for m in MEASURES) + " |",
        "",
        f"The ensemble predicted the challenge's {challenge['slices']} unlabelled test slices "
        f"with `python predict.py ckpt_path=<sweep> input=ROOT/test/images output=DIR` in "
        f"{challenge['seconds']:.0f} s.",
    ]  # fmt: skip
    table = "\n".join(lines) + "\n"
    print(table)
    (HERE / "cv_ensemble.md").write_text(table)
    results = {
        "machine": machine(),
        "overrides": args.overrides,
        "test_slices": stems,
        "postprocessing": configuration["postprocessing"],
        "out_of_fold": {"raw": pooled, "postprocessed": pooled_processed},
        "test": {
            "single_folds": singles,
            "ensemble": together,
            "ensemble_postprocessed": processed,
        },
        "challenge_test": challenge,
        "cv_seconds": round(wall, 1) if wall else None,
    }
    (HERE / "cv_ensemble.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
