"""Framework overhead: training steps per second of unet-lab's whole stack (Lightning trainer,
SegmentationModule, training metrics, logging, checkpoint callbacks, scheduler) against a bare
PyTorch loop over the same network, data loader, batch, loss, optimizer and precision.

    .venv/bin/python experiments/benchmarks/overhead.py             # 3 repeats of 100 steps each
    .venv/bin/python experiments/benchmarks/overhead.py --quick     # 2 repeats of 50 steps
    .venv/bin/python experiments/benchmarks/overhead.py --negligible   # the stack's ms per step

``--negligible`` trains a network whose compute is negligible (depth 1, width 2, 32 px images,
batch 2) on one CPU thread, so that the difference between the loops is the stack's own Python
time per step (with torch's intra-op threads the tiny operations wait on each other, and on a
2-core machine any background process, such as the W&B logger's, competes with them: that
noise is larger than the overhead measured): it
reports milliseconds per step of overhead (target: at most 1 ms on CPU), and per validation
batch (``trainer.validate`` against a plain forward-and-loss loop over the validation split),
and writes overhead_negligible.{md,json}. A third side, Lightning alone (a LightningModule that
only computes the loss), shows how much of the overhead is Lightning's own loop.

Both sides come from the same composed config (``python train.py``'s default, logging to CSV
only, unless ``--overrides`` say otherwise: ``logger=default`` adds the W&B logger, offline
without credentials), each repeat in a fresh process, the two alternating; the first
``--warmup`` steps are not timed. With ``--negligible`` the sides instead take turns in one
process, in rotating order, a repeat being one turn of each: on a shared 2-core VM the rate of
the same side moved by up to ±40% between fresh processes, more than the overhead, while
sides measured back to back in one process move together; the overhead in milliseconds is then
the difference between each side's fastest tenth of 10-step windows (other work on the machine
only ever adds time), the medians' difference printed beside it. A repeat's rate is the
median over windows of 50 steps (a burst of other work on a shared machine moves one window, not
the result). Reports the median steps/s of each and the overhead
``bare / unet-lab - 1`` (target: at most 3%) and in milliseconds per step. Writes
overhead.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import (  # noqa: E402
    command_line,
    composed_config,
    plain_training_step,
    provenance,
    publish,
)

# A network and batch whose compute is negligible: what remains is the loop around them.
NEGLIGIBLE = ["model.depth=1", "model.width=2", "data.image_size=32", "data.batch_size=2",
              "data.num_workers=0"]  # fmt: skip


NEGLIGIBLE_THREADS = 1  # torch's intra-op threads for --negligible (see the docstring)
VALIDATION_PASSES, VALIDATION_WINDOW = 3, 8  # passes over the validation split; batches
FINE_WINDOW = 10  # --negligible: steps per window of the fastest-tenth estimate


def _experiment(overrides: list[str], output_dir: str, validation: bool = False) -> Any:
    from unet_lab.training import build

    no_extras = [
        "callbacks.validation_images=null",
        "trainer.enable_progress_bar=false",
        "trainer.num_sanity_val_steps=0",
        *([] if validation else ["++trainer.limit_val_batches=0"]),
    ]
    return build(composed_config([*no_extras, *overrides], output_dir))


def validation_unet_lab(overrides: list[str], output_dir: str) -> list[float]:
    """Milliseconds per batch of ``trainer.validate`` (unet-lab's validation step: forward,
    loss, scores, logging) in each window of ``VALIDATION_WINDOW`` batches of
    ``VALIDATION_PASSES`` passes over the validation split."""
    import pytorch_lightning as pl

    class BatchTimer(pl.Callback):
        def __init__(self) -> None:
            self.passes: list[list[float]] = []

        def on_validation_batch_start(self, trainer: Any, module: Any, batch: Any,
                                      batch_idx: int, *args: Any) -> None:  # fmt: skip
            if batch_idx == 0:
                self.passes.append([time.perf_counter()])

        def on_validation_batch_end(self, trainer: Any, *args: Any) -> None:
            self.passes[-1].append(time.perf_counter())

    experiment = _experiment(overrides, output_dir, validation=True)
    timer = BatchTimer()
    experiment.trainer.callbacks.append(timer)
    for _ in range(VALIDATION_PASSES):
        experiment.trainer.validate(experiment.module, datamodule=experiment.datamodule,
                                    verbose=False)  # fmt: skip
    return [ms for times in timer.passes for ms in window_ms(times, VALIDATION_WINDOW)]


def validation_bare(overrides: list[str], output_dir: str) -> list[float]:
    """The same network, loader, loss and precision over the validation split in a plain
    loop (forward and loss); milliseconds per batch as :func:`validation_unet_lab`'s."""
    import torch

    from unet_lab.training.module import channels_last_format

    experiment = _experiment(overrides, output_dir, validation=True)
    module, datamodule = experiment.module, experiment.datamodule
    datamodule.setup("fit")
    net = module.net.eval()
    precision = str(experiment.trainer.precision)
    windows = []
    for _ in range(VALIDATION_PASSES):
        times: list[float] = []
        for batch in datamodule.val_dataloader():
            if not times:  # when the first batch arrived
                times.append(time.perf_counter())
            image = batch["image"]
            if module.channels_last:
                image = image.contiguous(memory_format=channels_last_format(image.ndim))
            with torch.no_grad(), torch.autocast("cpu", enabled="mixed" in precision):
                module.loss(net(image), batch["mask"])
            times.append(time.perf_counter())
        windows += window_ms(times, VALIDATION_WINDOW)
    return windows


WINDOW = 50  # steps per timed window: a step rate is the median over the windows


def window_ms(times: list[float], window: int) -> list[float]:
    """Milliseconds per step in each window of ``window`` consecutive steps (``times``: when
    each timed step ended, after the time the first started)."""
    ends = range(window, len(times), window)
    return [1000 * (times[end] - times[end - window]) / window for end in ends]


def fastest_ms(windows: list[float]) -> float:
    """The time per step of the fastest tenth of ``windows`` (their 10th percentile): other
    work on the machine only ever adds time, so the fastest windows show a loop's own cost."""
    return sorted(windows)[len(windows) // 10]


def window_rate(times: list[float], window: int = WINDOW) -> float:
    """Steps per second: the median over windows of ``window`` consecutive steps (``times``:
    when each timed step ended, after the time the first started), so that a burst of another
    process's work on a shared machine moves one window, not the result."""
    return statistics.median(1000 / ms for ms in window_ms(times, window))


def step_timer(warmup: int, steps: int) -> Any:
    """A Lightning callback whose ``times`` hold when step ``warmup`` began and when each of
    the ``steps`` steps after it ended."""
    import pytorch_lightning as pl

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == warmup:
                self.times.append(time.perf_counter())

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if warmup < trainer.global_step <= warmup + steps:
                self.times.append(time.perf_counter())

    return StepTimer()


def time_unet_lab(overrides: list[str], warmup: int, steps: int, output_dir: str) -> list[float]:
    """When each of ``steps`` training steps of ``trainer.fit`` ended (the first entry: when
    the first began), after ``warmup`` steps."""

    experiment = _experiment([*overrides, f"++trainer.max_steps={warmup + steps}"], output_dir)
    timer = step_timer(warmup, steps)
    experiment.trainer.callbacks.append(timer)
    experiment.trainer.fit(experiment.module, datamodule=experiment.datamodule)
    return timer.times


def time_lightning_alone(
    overrides: list[str], warmup: int, steps: int, output_dir: str
) -> list[float]:
    """The same network, loader, loss, optimizer and precision trained by Lightning alone: a
    LightningModule that only computes the loss, no callbacks, logger, metrics, checkpoints or
    scheduler. Its distance to the bare loop is Lightning's own time per step, which unet-lab
    cannot cut; times as :func:`time_unet_lab`'s."""
    import pytorch_lightning as pl

    from unet_lab.training.module import channels_last_format

    experiment = _experiment(overrides, output_dir)
    module = experiment.module

    class LossOnly(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.loss = module.net, module.loss

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
            image = batch["image"]
            if module.channels_last:
                image = image.contiguous(memory_format=channels_last_format(image.ndim))
            return self.loss(self.net(image), batch["mask"])

        def configure_optimizers(self) -> Any:
            return module.optimizer_factory(self.net.parameters())

    timer = step_timer(warmup, steps)
    trainer = pl.Trainer(
        max_steps=warmup + steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
        precision=experiment.trainer.precision, limit_val_batches=0, num_sanity_val_steps=0,
        accelerator="cpu",
    )  # fmt: skip
    trainer.fit(LossOnly(), datamodule=experiment.datamodule)
    return timer.times


def time_bare_loop(overrides: list[str], warmup: int, steps: int, output_dir: str) -> list[float]:
    """The same network, loader, loss, optimizer and precision in a plain loop; times as
    :func:`time_unet_lab`'s."""
    experiment = _experiment(overrides, output_dir)
    datamodule = experiment.datamodule
    datamodule.setup("fit")
    train_step = plain_training_step(experiment)
    step, times = 0, []
    while step < warmup + steps:
        for batch in datamodule.train_dataloader():
            if step == warmup:
                times.append(time.perf_counter())
            train_step(batch["image"], batch["mask"])
            step += 1
            if step > warmup:
                times.append(time.perf_counter())
            if step == warmup + steps:
                break
    return times


# Each side's timer, in the order the tables list them.
TIMERS = {"bare": time_bare_loop, "lightning": time_lightning_alone, "unet-lab": time_unet_lab}
VALIDATIONS = {"bare": validation_bare, "unet-lab": validation_unet_lab}


def interleaved(args: argparse.Namespace) -> dict[str, Any]:
    """``--negligible``'s measurement in this process: ``args.repeats`` turns of the three
    sides (order rotating) and of the two validation sides. Returns the steps/s of each side
    per turn, and the milliseconds per step (per batch) of every window of
    ``FINE_WINDOW`` steps (``VALIDATION_WINDOW`` batches) of each side."""
    sides = list(TIMERS)
    rates: dict[str, list[float]] = {side: [] for side in sides}
    windows: dict[str, list[float]] = {side: [] for side in sides}
    validation: dict[str, list[float]] = {side: [] for side in VALIDATIONS}
    for repeat in range(args.repeats):
        turn = repeat % len(sides)
        for side in sides[turn:] + sides[:turn]:
            output_dir = os.path.join(args.output_dir, f"{side}-{repeat}")
            times = TIMERS[side](args.overrides, args.warmup, args.steps, output_dir)
            rates[side].append(window_rate(times))
            windows[side] += window_ms(times, FINE_WINDOW)
            print(f"repeat {repeat} {side}: {rates[side][-1]:.3f} steps/s", file=sys.stderr,
                  flush=True)  # fmt: skip
        for side in sorted(VALIDATIONS, reverse=bool(repeat % 2)):
            output_dir = os.path.join(args.output_dir, f"val-{side}-{repeat}")
            validation[side] += VALIDATIONS[side](args.overrides, output_dir)
    return {"steps_per_s": rates, "step_ms_windows": windows, "validation_ms_windows": validation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats of 15 steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2 * WINDOW)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--overrides", nargs="*", default=[], help="for both sides (logger=default: + W&B)"
    )
    parser.add_argument("--negligible", action="store_true", help="a negligible network")
    parser.add_argument("--name", default=None, help="output file stem")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps = 2, WINDOW
    if args.negligible and not args.child:
        args.overrides = [*NEGLIGIBLE, *args.overrides]
        args.steps = max(args.steps, 2 * WINDOW)  # short turns: many chances of a quiet spell
    args.name = args.name or ("overhead_negligible" if args.negligible else "overhead")
    if args.child:
        if args.child == "interleaved":
            import torch

            torch.set_num_threads(NEGLIGIBLE_THREADS)
            print(json.dumps(interleaved(args)))
            return
        times = TIMERS[args.child](args.overrides, args.warmup, args.steps, args.output_dir)
        print(json.dumps({"steps_per_s": window_rate(times)}))
        return

    import tempfile

    results: dict[str, list[float]] = {side: [] for side in TIMERS}
    windows: dict[str, list[float]] = {}  # --negligible: ms per step of every fine window
    validation: dict[str, list[float]] = {}  # --negligible: ms per validation batch, windows
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup),
              "--overrides", *args.overrides]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        if args.negligible:
            command = [sys.executable, __file__, "--child", "interleaved", "--output-dir", tmp,
                       "--repeats", str(args.repeats), *common]  # fmt: skip
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            results, windows = measured["steps_per_s"], measured["step_ms_windows"]
            validation = measured["validation_ms_windows"]
        for repeat in range(0 if args.negligible else args.repeats):
            for side in results:
                output_dir = os.path.join(tmp, f"{side}-{repeat}")
                command = [sys.executable, __file__, "--child", side, "--output-dir", output_dir,
                           *common]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                rate = json.loads(done.stdout.strip().splitlines()[-1])["steps_per_s"]
                results[side].append(rate)
                print(f"repeat {repeat} {side}: {rate:.3f} steps/s", flush=True)

    bare, alone, ours = (statistics.median(results[side]) for side in results)
    overhead = bare / ours - 1
    milliseconds = 1000 * (1 / ours - 1 / bare)
    lightning_ms = 1000 * (1 / alone - 1 / bare)
    median_ms = milliseconds
    if args.negligible:  # each side's fastest tenth of windows: what contention did not slow
        fastest = {side: fastest_ms(windows[side]) for side in windows}
        milliseconds = fastest["unet-lab"] - fastest["bare"]
        lightning_ms = fastest["lightning"] - fastest["bare"]
    command = command_line(__file__)
    lines = [
        "# Framework overhead: unet-lab's training stack vs a bare PyTorch loop",
        "",
        provenance(command),
        f"Config: `python train.py` defaults logger=csv {' '.join(args.overrides)}"
        f"{f'; torch on {NEGLIGIBLE_THREADS} CPU thread' if args.negligible else ''}; "
        f"{args.steps} timed steps after {args.warmup}, rate: median over windows of {WINDOW} "
        f"steps; {args.repeats} repeats, median"
        + (
            f", each a turn of every side in one process (order rotating). Overhead in ms: "
            f"between each side's fastest tenth of {FINE_WINDOW}-step windows (other work on "
            f"the machine only adds time; the medians' difference is {median_ms:+.2f} ms)."
            if args.negligible
            else "."
        ),
        "",
        "| loop | steps/s (median) | all repeats |",
        "|---|---|---|",
        f"| bare PyTorch | {bare:.3f} | {', '.join(f'{v:.3f}' for v in results['bare'])} |",
        f"| Lightning alone (loss only: no callbacks, logger, metrics) | {alone:.3f} | "
        f"{', '.join(f'{v:.3f}' for v in results['lightning'])} |",
        f"| unet-lab (Lightning, metrics, logging, checkpoints) | {ours:.3f} | "
        f"{', '.join(f'{v:.3f}' for v in results['unet-lab'])} |",
        f"| **overhead** | **{overhead * 100:+.1f}%**, {milliseconds:+.2f} ms per step | "
        f"target: {'at most 1 ms per step' if args.negligible else 'at most +3%'} |",
        "",
        f"Of the overhead, {lightning_ms:+.2f} ms per step is Lightning's own loop (Lightning "
        f"alone against the bare loop) and {milliseconds - lightning_ms:+.2f} ms unet-lab's: "
        "its callbacks, training scores, logging and learning-rate schedule.",
    ]
    if validation:
        bare_val, ours_val = (fastest_ms(validation[side]) for side in ("bare", "unet-lab"))
        medians = [statistics.median(validation[side]) for side in ("bare", "unet-lab")]
        lines += [
            "",
            f"Validation ({VALIDATION_PASSES} passes over the validation split per turn, ms per "
            f"batch of the fastest tenth of {VALIDATION_WINDOW}-batch windows): bare forward "
            f"and loss {bare_val:.2f}, unet-lab's validation step (scores, loss, logging) "
            f"{ours_val:.2f}: **{ours_val - bare_val:+.2f} ms per validation batch** (medians: "
            f"{medians[1] - medians[0]:+.2f} ms).",
        ]
    publish(
        HERE / f"{args.name}",
        lines,
        {
            "command": command,
            "args": vars(args),
            "steps_per_s": results,
            "overhead": overhead,
            "overhead_ms_per_step": milliseconds,
            "lightning_alone_ms_per_step": lightning_ms,
            "step_ms_windows": windows,
            "validation_ms_windows": validation,
        },
    )


if __name__ == "__main__":
    main()
