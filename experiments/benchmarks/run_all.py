"""Every benchmark of this folder, one after the other, each writing its table (markdown + JSON,
and a plot where it has one) here:

    .venv/bin/python experiments/benchmarks/run_all.py            # the full tables
    .venv/bin/python experiments/benchmarks/run_all.py --quick    # a quick look (<name>_quick.*)

``--quick`` runs each benchmark with fewer repeats and steps (and a smaller sliding-window
image) and writes ``<name>_quick.md``, so it never replaces the full tables; it skips the
precision study, which trains the synthetic default several times.
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
    "sliding_window": (["--size", "2048"], ["--size", "1024", "--repeats", "1"]),
    "scaling": ([], ["--quick"]),
    # 2 minutes per recipe keeps --quick under 10 minutes on 2 cores (694 s with 3 minutes)
    "time_to_quality": ([], ["--minutes", "2", "--recipes", "unet-lab", "monai"]),
    "precision": (["--seeds", "0", "1", "2", "--epochs", "2", "--settings", "bf16+cl"], None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    args = parser.parse_args()
    durations = {}
    for name in args.only:
        full, quick = BENCHMARKS[name]
        arguments = quick if args.quick else full
        if arguments is None:
            print(f"== {name}: skipped in --quick mode", flush=True)
            continue
        stem = f"{name}_quick" if args.quick else name
        print(f"== {name} {' '.join(arguments)}", flush=True)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, str(HERE / f"{name}.py"), *arguments, "--name", stem], check=True
        )
        durations[name] = time.perf_counter() - started
    print("\n".join(f"{name}: {seconds:.0f} s" for name, seconds in durations.items()))
    print(f"total: {sum(durations.values()):.0f} s")


if __name__ == "__main__":
    main()
