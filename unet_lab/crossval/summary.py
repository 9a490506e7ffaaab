"""A finished cv sweep summarized: out-of-fold predictions of every complete configuration,
their pooled scores, postprocessing chosen on them, each configuration's ensemble folder, and
the reports (``cv.json``, ``summary.md``, the box plot)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from unet_lab.crossval.folds import read_sweep
from unet_lab.crossval.out_of_fold import predict_out_of_fold
from unet_lab.crossval.postprocessing import choose_postprocessing
from unet_lab.crossval.report import BOX_PLOT, SUMMARY, Result, best_result, box_plot, markdown
from unet_lab.crossval.report import record as cv_record
from unet_lab.inference.postprocessing import Postprocessing
from unet_lab.metrics.scores import first_scored_class
from unet_lab.runs.crossval import CV_DIR, CV_FILE, write_ensemble
from unet_lab.runs.summary import finite_values

log = logging.getLogger("unet_lab")


def summarize(
    sweep_dir: Path, folds: int, connectivity: str = "full", device: str | torch.device = "cpu"
) -> tuple[Path, Result | None]:
    """Writes ``sweep_dir/cv/`` for a sweep of ``folds`` folds per configuration; returns the
    cv folder and the best configuration's result (None when none completed every fold)."""
    cv = sweep_dir / CV_DIR
    results = []
    metric, mode = "val/dice", "max"
    for configuration in read_sweep(sweep_dir):
        result = Result(configuration, folds)
        results.append(result)
        if not result.complete:
            log.warning("cv: %s lacks folds %s", configuration.name, configuration.missing(folds))
            continue
        first = configuration.runs[0].summary["optimized_metric"]
        metric, mode = first["name"], first["mode"]
        folder = cv / configuration.slug
        checkpoints = [configuration.runs[k].checkpoint for k in range(folds)]
        if configuration.runs[0].regions:
            # Out-of-fold label maps and component rules are for exclusive classes.
            log.info("cv: %s trains overlapping regions: no out-of-fold scores", configuration.name)
            write_ensemble(folder, checkpoints, Postprocessing().state_dict())
            continue
        log.info("cv: out-of-fold predictions of %s", configuration.name)
        oof = predict_out_of_fold(configuration, folder, torch.device(device))
        result.class_names = oof.class_names
        result.pooled, result.rows = oof.scores()
        result.postprocessing, result.trials = choose_postprocessing(
            ((prediction, truth) for _, prediction, truth, _ in oof.cases()),
            oof.class_names,
            oof.ignore_index,
            connectivity,
        )
        result.processed, _ = oof.scores(result.postprocessing)
        write_ensemble(folder, checkpoints, result.postprocessing.state_dict())
    best = best_result(results, mode)
    cv.mkdir(parents=True, exist_ok=True)
    record = cv_record(results, best, metric, mode)
    (cv / CV_FILE).write_text(json.dumps(finite_values(record), indent=2) + "\n")
    (cv / SUMMARY).write_text(markdown(results, best, metric, mode))
    scored = [r for r in results if r.rows]
    if scored:
        names = scored[0].class_names
        shown = names[first_scored_class(len(names), False) :]
        box_plot(scored, shown, cv / BOX_PLOT)
    return cv, best
