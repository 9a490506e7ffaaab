"""Training memory against the number of volumes: the peak resident memory of
``python train.py data=volumes ...`` on folders of 16, 64 and 256 generated NIfTI cases, once
building the preprocessing cache and once reading it. The cache is memory-mapped and patches are
read from it, so the peak should not grow with the data set (it would by the cache's size if
the cases were held in memory).

    .venv/bin/python experiments/benchmarks/volume_memory.py           # 16, 64, 256 cases
    .venv/bin/python experiments/benchmarks/volume_memory.py --quick   # 4 and 16 small cases

Writes volume_memory.{md,json} (``--quick``: volume_memory_quick.*).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import command_line, measured_run, provenance, publish  # noqa: E402


def write_cases(root: Path, count: int, shape: tuple[int, int, int]) -> None:
    """``count`` noisy int16 volumes (1 x 1 x 2 mm) with an ellipsoid label each."""
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    grid = np.indices(shape, dtype=np.float32)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    for index in range(count):
        centre = [rng.uniform(0.3, 0.7) * side for side in shape]
        radii = [rng.uniform(0.1, 0.2) * side for side in shape]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) < 1
        image = rng.normal(500, 100, shape) + 300 * inside
        name = f"case_{index:04d}.nii.gz"
        nib.save(nib.Nifti1Image(image.astype(np.int16), affine), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(inside.astype(np.uint8), affine), root / "labelsTr" / name)


def peak_of_training(root: Path, cache: Path, work: Path, options: argparse.Namespace) -> float:
    overrides = [
        "data=volumes",
        f"data.root={root}",
        "data.num_classes=2",
        f"data.cache_dir={cache}",
        f"data.patch_size=[{','.join(map(str, options.patch))}]",
        f"data.samples_per_epoch={2 * options.steps}",
        "data.val_fraction=0.05",
        "model.width=8",
        "trainer.max_epochs=1",
        "+trainer.limit_val_batches=2",
        "test=false",
        "logger=csv",
        "callbacks.validation_images=null",
        f"hydra.run.dir={work / 'run'}",
        "resume=false",
    ]
    work.mkdir(parents=True)
    _, peak, _ = measured_run([str(REPO / "train.py"), *overrides], work)
    return peak


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 128, 128], help="x y z")
    parser.add_argument("--patch", type=int, nargs=3, default=[32, 64, 64], help="D H W")
    parser.add_argument("--steps", type=int, default=20, help="training steps per run")
    parser.add_argument("--quick", action="store_true", help="4 and 16 cases of 32 x 48 x 48")
    parser.add_argument("--name", default=None)
    options = parser.parse_args()
    if options.quick:
        options.cases, options.shape, options.patch, options.steps = (
            [4, 16], [48, 48, 32], [16, 32, 32], 4,
        )  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="unet_lab_volume_memory_") as folder:
        work = Path(folder)
        for count in options.cases:
            root, cache = work / f"data_{count}", work / f"cache_{count}"
            write_cases(root, count, tuple(options.shape))
            building = peak_of_training(root, cache, work / f"build_{count}", options)
            reading = peak_of_training(root, cache, work / f"read_{count}", options)
            rows.append(
                {
                    "cases": count,
                    "cache_mib": round(folder_mib(cache)),
                    "peak_building_mib": round(building),
                    "peak_reading_mib": round(reading),
                }
            )
            print(rows[-1], flush=True)
    first = rows[0]["peak_reading_mib"]
    lines = [
        f"# Training memory against the number of volumes ({' x '.join(map(str, options.shape))} "
        f"voxels each, {options.steps} steps of patch {options.patch})",
        "",
        provenance(command_line(__file__)),
        "",
        "| cases | cache on disk MiB | peak MiB, building the cache | peak MiB, cache reused | "
        f"reused / {rows[0]['cases']} cases |",
        "|---|---|---|---|---|",
        *[
            f"| {r['cases']} | {r['cache_mib']} | {r['peak_building_mib']} | "
            f"{r['peak_reading_mib']} | {r['peak_reading_mib'] / first:.2f} |"
            for r in rows
        ],
        "",
        "Peak resident memory of the whole `python train.py data=volumes` process (wait4), one "
        "run per row; the cache is what the data set occupies once preprocessed (float32).",
    ]
    name = options.name or ("volume_memory_quick" if options.quick else "volume_memory")
    publish(HERE / name, lines, {"rows": rows, "shape": options.shape, "patch": options.patch})


if __name__ == "__main__":
    main()
