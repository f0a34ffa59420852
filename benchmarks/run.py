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
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from loops import eager_floor, tutorial_loop

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "results.md"
FULL_RUN_EPOCHS = 7000  # the default run's trainer.max_epochs, the length the targets are set for
ENSEMBLES = (1, 8, 32)

# The targets of issue 5.
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
    run: Callable[[], float]  # seconds for the whole measured call
    threads: str


def project_run(epochs: int, overrides: list[str], output_dir: Path) -> Callable[[], float]:
    """Time one whole `mlpsweep.training.train` call of the composed default config."""
    from mlpsweep.config import compose
    from mlpsweep.training import new_run_dir, train

    cfg = compose([f"trainer.max_epochs={epochs}", "quiet=true", f"output_dir={output_dir}", *overrides])

    def run() -> float:
        run_dir = new_run_dir(output_dir)
        started = time.perf_counter()
        train(cfg, run_dir)
        return time.perf_counter() - started

    return run


def variants(epochs: int, short_epochs: int, output_dir: Path, default_threads: int) -> list[Variant]:
    project_threads = "1 (trainer.threads)"
    rows = [
        Variant("tutorial", "(a) tutorial's loop: per-item Dataset, DataLoader, Adam, `loss.item()`",
                epochs, lambda: tutorial_loop(epochs)[0], f"{default_threads} (torch default)"),
        Variant("default", "(b) project default run: `train()`, logging, validation, pictures, checkpoint",
                epochs, project_run(epochs, [], output_dir), project_threads),
        Variant("default_short", f"(b) the same, {short_epochs} epochs (for the fixed cost)",
                short_epochs, project_run(short_epochs, [], output_dir), project_threads),
    ]
    for k in ENSEMBLES:
        rows.append(Variant(f"K={k}", f"(c) project default run, `model.ensemble={k}`",
                            epochs, project_run(epochs, [f"model.ensemble={k}"], output_dir), project_threads))
    rows.append(Variant("floor", "(d) eager floor: pre-sliced batches, fused Adam, 1 thread, nn.Linear",
                        epochs, lambda: eager_floor(epochs), "1"))
    return rows


def warm_up(output_dir: Path) -> None:
    """First calls pay for lazy imports (matplotlib, TensorBoard) and allocator growth."""
    tutorial_loop(20)
    eager_floor(20)
    for k in ENSEMBLES:
        project_run(20, [f"model.ensemble={k}"], output_dir)()


def measure(rows: list[Variant], repeats: int, default_threads: int) -> dict[str, list[float]]:
    """Seconds per run, every variant once per repeat, the order rotated between repeats."""
    times: dict[str, list[float]] = {row.key: [] for row in rows}
    for repeat in range(repeats):
        shift = repeat % len(rows)
        for row in rows[shift:] + rows[:shift]:
            torch.set_num_threads(default_threads)  # train() sets trainer.threads process-wide
            seconds = row.run()
            times[row.key].append(seconds)
            print(f"  repeat {repeat + 1}/{repeats}  {row.key:14s} {1e3 * seconds / row.epochs:7.3f} ms/epoch",
                  file=sys.stderr, flush=True)
    torch.set_num_threads(default_threads)
    return times


def startup_times(repeats: int, output_dir: Path) -> tuple[list[float], list[float]]:
    """Wall time of `python src/train.py trainer.max_epochs=1` and of `python -c 'import lightning'`."""
    train_cmd = [sys.executable, str(ROOT / "src" / "train.py"), "trainer.max_epochs=1", "quiet=true",
                 f"output_dir={output_dir}"]
    import_cmd = [sys.executable, "-c", "import lightning"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    train_s: list[float] = []
    import_s: list[float] = []
    for _ in range(repeats):
        for command, sink in ((import_cmd, import_s), (train_cmd, train_s)):
            started = time.perf_counter()
            subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
            sink.append(time.perf_counter() - started)
    return train_s, import_s


def sweep_section() -> list[str]:
    """The sweep side by side (issue 5 item 3). ---- PLACEHOLDER: not measured yet ----

    Written only when the sweep can be called; the measurement itself (the default sweep,
    pruning, `sweep.workers=2`, against a naive sequential sweep at full epochs: wall-time
    ratio, target >= 4x, and each one's best `val/acc`) is still to be added here.
    """
    lines = ["## The sweep side by side (issue 5 item 3)", ""]
    spec = importlib.util.find_spec("mlpsweep.sweep")
    callable_entry = None
    if spec is not None and spec.origin and Path(spec.origin).exists():
        try:
            import mlpsweep.sweep as sweep_module

            callable_entry = next(
                (name for name in ("launch", "run_worker", "main") if callable(getattr(sweep_module, name, None))),
                None,
            )
        except Exception as error:  # the sweep is being built: a broken import is not the benchmark's failure
            lines.append(f"(importing mlpsweep.sweep failed: {type(error).__name__}: {error})")
    if callable_entry is None:
        lines.append("sweep comparison: not yet measured (the sweep is being built)")
    else:
        lines.append(
            f"sweep comparison: not yet measured (`mlpsweep.sweep.{callable_entry}` exists; "
            "the side-by-side measurement is still to be written here)"
        )
    return lines


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(value: float, target: float) -> str:
    return "**met**" if value <= target else "**not met**"


def versions() -> str:
    import lightning

    return (f"python {platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}")


def report(rows: list[Variant], times: dict[str, list[float]], startup: tuple[list[float], list[float]] | None,
           args: argparse.Namespace, default_threads: int, wall_s: float) -> str:
    per_epoch = {row.key: [1e3 * s / row.epochs for s in times[row.key]] for row in rows}
    med = {key: median(values) for key, values in per_epoch.items()}
    base = med["tutorial"]

    # The default run = fixed cost (Trainer set-up, last validation, pictures, checkpoint) + N x marginal.
    long_s, short_s = median(times["default"]), median(times["default_short"])
    marginal_ms = 1e3 * (long_s - short_s) / (args.epochs - args.short_epochs)
    fixed_s = long_s - args.epochs * marginal_ms / 1e3
    full_ms = 1e3 * fixed_s / FULL_RUN_EPOCHS + marginal_ms

    lines = [
        "# Benchmark: per-epoch time against the tutorial's loop",
        "",
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {os.cpu_count()} cores ({platform.machine()}, {platform.processor() or platform.system()}); "
        f"torch default threads: {default_threads}",
        f"- {versions()}",
        f"- {args.epochs} epochs per run ({args.short_epochs} for the short run), {args.repeats} repeats, "
        f"variants interleaved; median (and min) of the repeats; {wall_s:.0f} s in all",
        "- command: `make bench` (`python benchmarks/run.py --epochs N --repeats R`)",
        "",
        "| variant | threads | epochs | ms/epoch (median) | min | ratio to (a) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        values = per_epoch[row.key]
        lines.append(f"| {row.label} | {row.threads} | {row.epochs} | {med[row.key]:.3f} | {min(values):.3f} "
                     f"| {med[row.key] / base:.2f} |")
    lines.append(f"| (b) estimated for the default {FULL_RUN_EPOCHS}-epoch run: {fixed_s:.2f} s fixed "
                 f"+ {marginal_ms:.3f} ms/epoch | 1 | {FULL_RUN_EPOCHS} | {full_ms:.3f} | | {full_ms / base:.2f} |")

    k1, k8, k32 = med["K=1"], med["K=8"], med["K=32"]
    ratio_full = full_ms / base
    lines += [
        "",
        "The fixed cost and the marginal cost per epoch come from the two run lengths of (b): "
        f"marginal = (T({args.epochs}) - T({args.short_epochs})) / {args.epochs - args.short_epochs}, "
        "fixed = the rest; the marginal part includes validation every 100 epochs and the fit "
        "picture every 1000.",
        "",
        "## Targets (issue 5)",
        "",
        "| target | figure | verdict |",
        "| --- | --- | --- |",
        f"| (b)/(a) <= {TARGET_DEFAULT_VS_TUTORIAL} for the {FULL_RUN_EPOCHS}-epoch default run "
        f"| {ratio_full:.2f} (estimated; {med['default'] / base:.2f} measured at {args.epochs} epochs) "
        f"| {verdict(ratio_full, TARGET_DEFAULT_VS_TUTORIAL)} |",
        f"| stretch: (b)/(a) <= {STRETCH_DEFAULT_VS_TUTORIAL} | {ratio_full:.2f} "
        f"| {verdict(ratio_full, STRETCH_DEFAULT_VS_TUTORIAL)} |",
        f"| K=8 <= {TARGET_K8} x K=1 | {k8 / k1:.2f} | {verdict(k8 / k1, TARGET_K8)} |",
        f"| K=32 <= {TARGET_K32} x K=1 | {k32 / k1:.2f} | {verdict(k32 / k1, TARGET_K32)} |",
    ]
    if startup is not None:
        train_s, import_s = startup
        ratio = median(train_s) / median(import_s)
        lines.append(f"| start-up < {TARGET_STARTUP} x `import lightning` | {ratio:.2f} "
                     f"| {verdict(ratio, TARGET_STARTUP - 1e-9)} |")
        lines += [
            "",
            "## Start-up",
            "",
            f"| command (subprocess, median of {len(train_s)}) | seconds | ratio |",
            "| --- | ---: | ---: |",
            f"| `python -c \"import lightning\"` | {median(import_s):.2f} | 1.00 |",
            f"| `python src/train.py trainer.max_epochs=1 quiet=true output_dir=<tmp>` | {median(train_s):.2f} "
            f"| {ratio:.2f} |",
        ]
    lines += ["", *sweep_section(), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1500, help="epochs per measured run (default 1500)")
    parser.add_argument("--short-epochs", type=int, default=None,
                        help="epochs of the short default run used for the fixed cost (default epochs/5)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the table shows medians (default 3)")
    parser.add_argument("--startup-repeats", type=int, default=3, help="subprocess start-up repeats (default 3)")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up rows")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the markdown table")
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
        rows = variants(args.epochs, args.short_epochs, output_dir, default_threads)
        times = measure(rows, args.repeats, default_threads)
        startup = None if args.no_startup else startup_times(args.startup_repeats, output_dir)
    text = report(rows, times, startup, args, default_threads, time.perf_counter() - started)
    print(text)
    args.out.write_text(text)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
