"""The preprocessing cache: each case preprocessed once into ``.npy`` files that training reads
memory-mapped (only the patches it needs), in a folder keyed by the preprocessing settings and
the source files, so a changed setting or file makes a new cache, never a stale one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unet_lab.data.files import DataError
from unet_lab.data.volumes.patches import VolumeCase

log = logging.getLogger(__name__)
# Bump when what the cache holds changes meaning: older caches are then not reused.
CACHE_VERSION = 1
MANIFEST = "manifest.json"
LOCK = "building.lock"
# How long a process waits for another one that builds the same cache.
WAIT_S = 3600


def cache_key(files: Sequence[Path], settings: dict[str, Any]) -> str:
    """A hash of the settings and of every source file's path, size and modification time."""
    record = {
        "version": CACHE_VERSION,
        "settings": settings,
        "files": [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files],
    }
    return hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


Preprocess = Callable[[str], tuple[np.ndarray, np.ndarray, dict[str, Any]]]


class VolumeCache:
    """A folder of preprocessed cases: ``<name>.image.npy`` ``(C, D, H, W)`` float32,
    ``<name>.label.npy`` ``(D, H, W)`` uint8, ``<name>.locations.npz`` (voxels per class) and
    ``<name>.json`` (geometry), plus ``manifest.json``, written last, that marks it complete."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def complete(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.folder / MANIFEST).read_text())

    def build(
        self,
        names: Sequence[str],
        preprocess: Preprocess,
        locations: Callable[[np.ndarray], dict[int, np.ndarray]],
        manifest: dict[str, Any],
    ) -> None:
        """Preprocesses every case once. One process builds (the one that creates the lock
        file: DDP ranks, parallel sweep jobs); the others wait for its manifest."""
        if self.complete:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if _stale(self.folder / LOCK):  # its builder was killed: start over
            (self.folder / LOCK).unlink(missing_ok=True)
        try:
            descriptor = os.open(self.folder / LOCK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            self._wait()
            return
        os.write(descriptor, f"{socket.gethostname()} {os.getpid()}".encode())
        os.close(descriptor)
        try:
            started = time.perf_counter()
            for number, name in enumerate(names, start=1):
                image, label, geometry = preprocess(name)
                np.save(self.folder / f"{name}.image.npy", image.astype(np.float32))
                np.save(self.folder / f"{name}.label.npy", label.astype(np.uint8))
                found: dict[str, Any] = {str(k): v for k, v in locations(label).items()}
                np.savez(self.folder / f"{name}.locations.npz", **found)
                (self.folder / f"{name}.json").write_text(json.dumps(geometry) + "\n")
                if number % 20 == 0 or number == len(names):
                    log.info("preprocessed %d/%d cases into %s", number, len(names), self.folder)
            manifest = {
                **manifest,
                "cases": list(names),
                "seconds": round(time.perf_counter() - started, 1),
            }
            (self.folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)  # no half-built cache to trust
            raise
        finally:
            (self.folder / LOCK).unlink(missing_ok=True)

    def _wait(self) -> None:
        """Waits for the builder's manifest; fails when the builder stopped without one."""
        log.info("waiting for another process to finish the cache %s", self.folder)
        deadline = time.monotonic() + WAIT_S
        while not self.complete:
            lock = self.folder / LOCK
            if (not lock.exists() or _stale(lock)) and not self.complete:
                raise DataError(
                    f"{self.folder}: the process building this cache stopped; run again"
                )
            if time.monotonic() > deadline:
                raise DataError(f"{self.folder}: still being built after {WAIT_S} s ({LOCK})")
            time.sleep(1.0)

    def case(self, name: str, spacing: Sequence[float]) -> VolumeCase:
        """A cached case, its arrays memory-mapped."""
        with np.load(self.folder / f"{name}.locations.npz") as found:
            locations = {int(k): found[k] for k in found.files}
        return VolumeCase(
            name,
            np.load(self.folder / f"{name}.image.npy", mmap_mode="r"),
            np.load(self.folder / f"{name}.label.npy", mmap_mode="r"),
            tuple(float(s) for s in spacing),  # type: ignore[arg-type]
            locations,
        )


def _stale(lock: Path) -> bool:
    """Whether ``lock`` names a process of this machine that no longer runs."""
    try:
        host, pid = lock.read_text().split()
    except (OSError, ValueError):
        return False  # absent, or being written
    if host != socket.gethostname():
        return False  # another machine's: cannot tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
