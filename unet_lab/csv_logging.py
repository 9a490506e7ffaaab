"""A CSV logger that continues ``metrics.csv`` when a run is resumed in its folder.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts; resuming a run in place
would then lose the metrics of every epoch before the resume.
"""

from __future__ import annotations

import csv
import os
from typing import cast

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Keep an existing metrics file and continue it under its own header."""
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])

    def save(self) -> None:
        """Writes the pending rows; a failed write (a full disk) names the file."""
        try:
            super().save()
        except OSError as exc:
            if exc.filename:
                raise
            raise OSError(exc.errno, exc.strerror, self.metrics_file_path) from exc


class ResumableCSVLogger(CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that appends to the metrics of earlier starts."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return cast(ExperimentWriter, self._experiment)
