"""`make bench`: the project's training time per epoch, side by side with the tutorial's loop.

Prints and writes `benchmarks/results.md`. Every row is measured in this one process
(the start-up rows by subprocess), the variants interleaved across repeats so that
machine noise spreads over all of them; the table shows each variant's median.

    python benchmarks/run.py [--epochs 1500] [--repeats 3] [--out benchmarks/results.md]

Only ratios measured in one run mean something: absolute times move with the machine
and with whatever else runs on it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from batch_bench import marked_section
from loops import Timing, eager_floor, tutorial_loop
from step_bench import STEP_BEGIN, STEP_END
from sweep_bench import measure as sweep_side_by_side

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "results.md"
FULL_RUN_EPOCHS = 7000  # the default run's trainer.max_epochs, the length the targets are set for
ENSEMBLES = (1, 8, 32)
Times = dict[str, list[float]]

# The speed targets of a single run (against the tutorial's loop).
TARGET_DEFAULT_VS_TUTORIAL = 1.25
STRETCH_DEFAULT_VS_TUTORIAL = 1.0
TARGET_K8 = 1.3
TARGET_K32 = 2.0
TARGET_STARTUP = 2.0


@dataclass
class Variant:
    key: str
    label: str
    epochs: int
    run: Callable[[], Timing]  # the whole train() call; the training loop only for (a) and (d)
    threads: str


def project_run(epochs: int, overrides: list[str], output_dir: Path) -> Callable[[], Timing]:
    """Time one whole `mlpsweep.training.train` call of the composed default config."""
    from mlpsweep.config import compose
    from mlpsweep.training import new_run_dir, train

    cfg = compose(
        [f"trainer.max_epochs={epochs}", "quiet=true", f"output_dir={output_dir}", *overrides]
    )

    def run() -> Timing:
        run_dir = new_run_dir(output_dir)
        timing = Timing.start()
        train(cfg, run_dir)
        return timing.stop()

    return run


def variants(epochs: int, short_epochs: int, output_dir: Path, default_threads: int,
             full_run: bool = False) -> list[Variant]:
    project_threads = "1 (trainer.threads)"
    rows = [
        Variant(
            "tutorial",
            "(a) tutorial's loop: per-item Dataset, DataLoader, Adam, `loss.item()`",
            epochs,
            lambda: tutorial_loop(epochs)[0],
            f"{default_threads} (torch default)",
        ),
        Variant(
            "default",
            "(b) project default run: `train()`, logging, validation, pictures, checkpoint",
            epochs,
            project_run(epochs, [], output_dir),
            project_threads,
        ),
        Variant(
            "default_short",
            f"(b) the same, {short_epochs} epochs (for the fixed cost)",
            short_epochs,
            project_run(short_epochs, [], output_dir),
            project_threads,
        ),
    ]
    if full_run:
        rows.append(
            Variant(
                "default_full",
                f"(b) the same, measured at {FULL_RUN_EPOCHS} epochs (`--full-run`)",
                FULL_RUN_EPOCHS,
                project_run(FULL_RUN_EPOCHS, [], output_dir),
                project_threads,
            )
        )
    for k in ENSEMBLES:
        rows.append(
            Variant(
                f"K={k}",
                f"(c) project default run, `model.ensemble={k}`",
                epochs,
                project_run(epochs, [f"model.ensemble={k}"], output_dir),
                project_threads,
            )
        )
    rows.append(
        Variant(
            "floor",
            "(d) eager floor: pre-sliced batches, fused Adam, 1 thread, nn.Linear",
            epochs,
            lambda: eager_floor(epochs),
            "1",
        )
    )
    return rows


def warm_up(output_dir: Path) -> None:
    """First calls pay for lazy imports (matplotlib, TensorBoard) and allocator growth."""
    tutorial_loop(20)
    eager_floor(20)
    for k in ENSEMBLES:
        project_run(20, [f"model.ensemble={k}"], output_dir)()


def measure(rows: list[Variant], repeats: int, default_threads: int) -> tuple[Times, Times]:
    """Wall and CPU seconds per run, every variant once per repeat, the order rotated between
    repeats."""
    wall: Times = {row.key: [] for row in rows}
    cpu: Times = {row.key: [] for row in rows}
    for repeat in range(repeats):
        shift = repeat % len(rows)
        for row in rows[shift:] + rows[:shift]:
            torch.set_num_threads(default_threads)  # train() sets trainer.threads process-wide
            timing = row.run()
            wall[row.key].append(timing.wall)
            cpu[row.key].append(timing.cpu)
            print(
                f"  repeat {repeat + 1}/{repeats}  {row.key:14s} "
                f"{1e3 * timing.wall / row.epochs:7.3f} ms/epoch wall, "
                f"{1e3 * timing.cpu / row.epochs:7.3f} CPU",
                file=sys.stderr,
                flush=True,
            )
    torch.set_num_threads(default_threads)
    return wall, cpu


def startup_times(repeats: int, output_dir: Path) -> tuple[Times, Times]:
    """Wall and CPU seconds of `python src/train.py trainer.max_epochs=1` and
    `python -c 'import lightning'`."""
    commands = {
        "import": [sys.executable, "-c", "import lightning"],
        "train": [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "trainer.max_epochs=1",
            "quiet=true",
            f"output_dir={output_dir}",
        ],
    }
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    wall: Times = {key: [] for key in commands}
    cpu: Times = {key: [] for key in commands}
    for _ in range(repeats):
        for key, command in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
            wall[key].append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[key].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall, cpu


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(value: float, target: float) -> str:
    return "**met**" if value <= target else "**not met**"


def versions() -> str:
    import lightning

    return (
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"lightning {lightning.__version__}"
    )


def report(
    rows: list[Variant],
    measured: tuple[Times, Times],
    startup: tuple[Times, Times] | None,
    args: argparse.Namespace,
    default_threads: int,
    wall_s: float,
    sweep_lines: list[str],
) -> str:
    wall, cpu = measured
    ms = {key: [1e3 * s / row.epochs for s in wall[key]] for row in rows for key in [row.key]}
    cpu_ms = {key: [1e3 * s / row.epochs for s in cpu[key]] for row in rows for key in [row.key]}
    med = {key: median(values) for key, values in ms.items()}
    cpu_med = {key: median(values) for key, values in cpu_ms.items()}
    base, cpu_base = med["tutorial"], cpu_med["tutorial"]

    # The default run = fixed cost (Trainer set-up, last validation, pictures, checkpoint)
    # + N x marginal.
    def full_run(times: Times) -> tuple[float, float, float]:
        long_s, short_s = median(times["default"]), median(times["default_short"])
        marginal_ms = 1e3 * (long_s - short_s) / (args.epochs - args.short_epochs)
        fixed_s = long_s - args.epochs * marginal_ms / 1e3
        return fixed_s, marginal_ms, 1e3 * fixed_s / FULL_RUN_EPOCHS + marginal_ms

    fixed_s, marginal_ms, full_ms = full_run(wall)
    cpu_fixed_s, cpu_marginal_ms, cpu_full_ms = full_run(cpu)

    lines = [
        "# Benchmark: per-epoch time against the tutorial's loop",
        "",
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {os.cpu_count()} cores "
        f"({platform.machine()}, {platform.processor() or platform.system()}); "
        f"torch default threads: {default_threads}; load average at the end: "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}",
        f"- {versions()}",
        f"- {args.epochs} epochs per run ({args.short_epochs} for the short run), "
        f"{args.repeats} repeats, "
        f"variants interleaved (order rotated per repeat); {wall_s:.0f} s in all",
        "- command: `make bench` (`python benchmarks/run.py --epochs N --repeats R`)",
        "- wall: median and min of the repeats; CPU: median process CPU time (all threads), "
        "which moves far less than wall time when other work shares the machine",
        "",
        "| variant | threads | epochs | wall ms/epoch | wall min | CPU ms/epoch "
        "| ratio to (a), wall | ratio, CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        key = row.key
        lines.append(
            f"| {row.label} | {row.threads} | {row.epochs} | {med[key]:.3f} | {min(ms[key]):.3f} "
            f"| {cpu_med[key]:.3f} | {med[key] / base:.2f} | {cpu_med[key] / cpu_base:.2f} |"
        )
    lines.append(
        f"| (b) estimated for the default {FULL_RUN_EPOCHS}-epoch run: fixed {fixed_s:.2f} s "
        f"+ {marginal_ms:.3f} ms/epoch (CPU: {cpu_fixed_s:.2f} s + {cpu_marginal_ms:.3f}) | 1 "
        f"| {FULL_RUN_EPOCHS} | {full_ms:.3f} | | {cpu_full_ms:.3f} | {full_ms / base:.2f} "
        f"| {cpu_full_ms / cpu_base:.2f} |"
    )

    ratio_full, cpu_ratio_full = full_ms / base, cpu_full_ms / cpu_base
    k8, k32 = med["K=8"] / med["K=1"], med["K=32"] / med["K=1"]
    cpu_k8, cpu_k32 = cpu_med["K=8"] / cpu_med["K=1"], cpu_med["K=32"] / cpu_med["K=1"]
    lines += [
        "",
        "The fixed cost and the marginal cost per epoch come from the two run lengths of (b): "
        f"marginal = (T({args.epochs}) - T({args.short_epochs})) "
        f"/ {args.epochs - args.short_epochs}, "
        "fixed = the rest; the marginal part includes validation every 100 epochs and the fit "
        "picture every 1000. The targets are judged on the wall-time medians; the CPU-time figure "
        "is shown beside each as a check against machine noise.",
        "",
        "## Targets (speed of a single run)",
        "",
        "| target | figure (wall) | CPU time | verdict |",
        "| --- | --- | --- | --- |",
        f"| (b)/(a) <= {TARGET_DEFAULT_VS_TUTORIAL} for the {FULL_RUN_EPOCHS}-epoch default run "
        f"| {ratio_full:.2f} (estimated; {med['default'] / base:.2f} measured "
        f"at {args.epochs} epochs"
        + (
            f", {med['default_full'] / base:.2f} measured at {FULL_RUN_EPOCHS}"
            if "default_full" in med
            else ""
        )
        + ") "
        f"| {cpu_ratio_full:.2f} | {verdict(ratio_full, TARGET_DEFAULT_VS_TUTORIAL)} |",
        f"| stretch: (b)/(a) <= {STRETCH_DEFAULT_VS_TUTORIAL} "
        f"| {ratio_full:.2f} | {cpu_ratio_full:.2f} "
        f"| {verdict(ratio_full, STRETCH_DEFAULT_VS_TUTORIAL)} |",
        f"| K=8 <= {TARGET_K8} x K=1 | {k8:.2f} | {cpu_k8:.2f} | {verdict(k8, TARGET_K8)} |",
        f"| K=32 <= {TARGET_K32} x K=1 | {k32:.2f} | {cpu_k32:.2f} | {verdict(k32, TARGET_K32)} |",
    ]
    if startup is not None:
        st_wall, st_cpu = startup
        ratio = median(st_wall["train"]) / median(st_wall["import"])
        cpu_ratio = median(st_cpu["train"]) / median(st_cpu["import"])
        lines.append(
            f"| start-up < {TARGET_STARTUP} x `import lightning` | {ratio:.2f} | {cpu_ratio:.2f} "
            f"| {verdict(ratio, TARGET_STARTUP - 1e-9)} |"
        )
        lines += [
            "",
            "## Start-up",
            "",
            f"| command (subprocess, median of {len(st_wall['train'])}) "
            "| wall s | CPU s | ratio, wall | ratio, CPU |",
            "| --- | ---: | ---: | ---: | ---: |",
            '| `python -c "import lightning"` '
            f"| {median(st_wall['import']):.2f} | {median(st_cpu['import']):.2f} "
            "| 1.00 | 1.00 |",
            f"| `python src/train.py trainer.max_epochs=1 quiet=true output_dir=<tmp>` "
            f"| {median(st_wall['train']):.2f} | {median(st_cpu['train']):.2f} "
            f"| {ratio:.2f} | {cpu_ratio:.2f} |",
        ]
    lines += [
        "",
        "## Notes",
        "",
        "- (a) is the tutorial's loop as written (`benchmarks/loops.py`), without its plot and "
        "print every 1000 epochs (no display here); it is timed from the first epoch to the last, "
        "with torch's default thread count. (b) and (c) time the whole `mlpsweep.training.train` "
        "call: Trainer set-up, TensorBoard, validation every 100 epochs, the fit picture every "
        "1000, fit.png, loss.png, the checkpoint and metrics.json.",
        "- Where the default run's time goes: `python benchmarks/breakdown.py`. Its measured "
        "proposals (a leaner training step, no batch transfer on the CPU, a plain write of "
        "Lightning's hook name) are in src/ since commit 32050ee.",
        "",
        *sweep_lines,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--epochs", type=int, default=1500, help="epochs per measured run (default 1500)"
    )
    parser.add_argument(
        "--short-epochs",
        type=int,
        default=None,
        help="epochs of the short default run used for the fixed cost (default epochs/5)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="repeats; the table shows medians (default 3)"
    )
    parser.add_argument(
        "--startup-repeats", type=int, default=3, help="subprocess start-up repeats (default 3)"
    )
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up rows")
    parser.add_argument(
        "--full-run",
        action="store_true",
        help=f"also measure the default run at {FULL_RUN_EPOCHS} epochs (checks the estimate)",
    )
    parser.add_argument(
        "--no-sweep", action="store_true", help="skip the sweep side by side (about 2.5 min)"
    )
    parser.add_argument(
        "--sweep-trials", type=int, default=16, help="trials of each sweep (default 16)"
    )
    parser.add_argument(
        "--sweep-epochs", type=int, default=2000, help="epochs of each trial (default 2000)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="where to write the markdown table"
    )
    args = parser.parse_args(argv)
    args.short_epochs = args.short_epochs or max(1, args.epochs // 5)
    if args.epochs <= args.short_epochs:
        parser.error("--epochs must be larger than --short-epochs")

    from mlpsweep.training import quiet_lightning

    quiet_lightning()
    default_threads = torch.get_num_threads()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlpsweep-bench-") as tmp:
        output_dir = Path(tmp)
        print(f"benchmark: {args.epochs} epochs, {args.repeats} repeats, {os.cpu_count()} cores, "
              f"{default_threads} default torch threads; {versions()}", file=sys.stderr, flush=True)
        warm_up(output_dir)
        rows = variants(args.epochs, args.short_epochs, output_dir, default_threads, args.full_run)
        measured = measure(rows, args.repeats, default_threads)
        startup = None if args.no_startup else startup_times(args.startup_repeats, output_dir)
    sweep_lines = (["## The sweep side by side", "", "not measured in this run (--no-sweep)"]
                   if args.no_sweep else sweep_side_by_side(args.sweep_trials, args.sweep_epochs))
    text = report(
        rows, measured, startup, args, default_threads, time.perf_counter() - started, sweep_lines
    )
    print(text)
    # batch_bench.py's and step_bench.py's sections (the rest of `make bench`) stay until
    # they rewrite them
    old = args.out.read_text() if args.out.exists() else ""
    kept = "\n\n".join(
        section
        for section in (marked_section(old), marked_section(old, STEP_BEGIN, STEP_END))
        if section
    )
    args.out.write_text(f"{text.rstrip()}\n\n{kept}\n" if kept else text)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
