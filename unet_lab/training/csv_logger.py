"""A CSV logger that continues ``metrics.csv`` when a run is resumed in its folder.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts; resuming a run in place
would then lose the metrics of every epoch before the resume. What a kill leaves out of step
with the checkpoint is repaired on resume by ``unet_lab.training.callbacks.LogsFromCheckpoint``.
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

    def has_epoch_row(self, epoch: int) -> bool:
        """Whether the training scores of ``epoch`` (its ``train/loss_epoch``) were logged."""
        path = self.experiment.metrics_file_path
        if not os.path.isfile(path):
            return False
        with open(path, newline="") as file:
            return any(
                row.get("epoch") == str(epoch) and row.get("train/loss_epoch")
                for row in csv.DictReader(file)
            )

    def forget_from_step(self, step: int) -> int:
        """Drops the rows of ``step`` and later (written after the checkpoint a run resumes
        from); returns how many."""
        path = self.experiment.metrics_file_path
        if not os.path.isfile(path):
            return 0
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            header, rows = reader.fieldnames or [], list(reader)
        kept = [row for row in rows if not row.get("step") or int(row["step"]) < step]
        if len(kept) < len(rows):
            temporary = f"{path}.tmp"
            with open(temporary, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=header)
                writer.writeheader()
                writer.writerows(kept)
            os.replace(temporary, path)
        return len(rows) - len(kept)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return cast(ExperimentWriter, self._experiment)
