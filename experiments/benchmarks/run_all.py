"""Every benchmark of this folder, one after the other, each writing its table (markdown + JSON,
and a plot where it has one) here:

    .venv/bin/python experiments/benchmarks/run_all.py            # the full tables
    .venv/bin/python experiments/benchmarks/run_all.py --quick    # a quick look (<name>_quick.*)
    .venv/bin/python experiments/benchmarks/run_all.py --isbi-root ../shared/data/isbi2012

``--quick`` runs each benchmark with fewer repeats and steps (and a smaller sliding-window
image) and writes ``<name>_quick.md``, so it never replaces the full tables; it skips the
precision study, which trains the synthetic default several times. ``--isbi-root`` adds time to
quality on ISBI 2012 patches (full runs only).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (arguments of the full run, arguments of the quick run or None to skip it)
BENCHMARKS: dict[str, tuple[list[str], list[str] | None]] = {
    "overhead": ([], ["--quick"]),
    "model_speed": (["--compile"], ["--quick"]),
    "data_pipeline": ([], ["--quick"]),
    "gpu_throughput": ([], ["--quick"]),
    "sliding_window": (["--size", "2048"], ["--size", "1024", "--repeats", "1"]),
    "scaling": ([], ["--quick"]),
    "time_to_quality": ([], ["--quick"]),
    "volume_memory": ([], ["--quick"]),
    "ensemble_memory": ([], ["--side", "1024"]),
    "precision": (["--seeds", "0", "1", "2", "--epochs", "2", "--settings", "bf16+cl"], None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--isbi-root", help="ISBI 2012 folder: time to quality on it too")
    args = parser.parse_args()
    runs = {name: BENCHMARKS[name] for name in args.only}
    if args.isbi_root and "time_to_quality" in runs:
        runs["time_to_quality_isbi2012"] = (["--task", "isbi2012", "--root", args.isbi_root], None)
    durations = {}
    for name, (full, quick) in runs.items():
        arguments = quick if args.quick else full
        if arguments is None:
            print(f"== {name}: skipped in --quick mode", flush=True)
            continue
        stem = f"{name}_quick" if args.quick else name
        script = HERE / f"{name.removesuffix('_isbi2012')}.py"
        print(f"== {name} {' '.join(arguments)}", flush=True)
        started = time.perf_counter()
        subprocess.run([sys.executable, str(script), *arguments, "--name", stem], check=True)
        durations[name] = time.perf_counter() - started
    print("\n".join(f"{name}: {seconds:.0f} s" for name, seconds in durations.items()))
    print(f"total: {sum(durations.values()):.0f} s")


if __name__ == "__main__":
    main()
