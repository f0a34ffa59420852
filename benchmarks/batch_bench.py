"""Batched trials against one trial at a time, in one run on this machine.

Every figure is a real `python src/sweep.py` subprocess (start-up included), variants
interleaved and repeated, medians reported with the load average beside them:

- grid32: the 32-architecture grid (hidden 1..16 x layers 1..2), 2000 epochs, 1 worker,
  one trial of 4 members a cell, `sweep.batch=1` against the grid's default 16 and 32;
- sample: a fixed, stated sample of 16 cells of the full default grid (hidden 8, 24, 40, 56
  x layers 1..4; 7000 epochs, one trial of 4 members a cell, 2 workers), batch 1 against
  the grid's default batch, scaled by 256/16 to estimate the unbatched 4-member map;
- full: the full grid with 4 members a cell and no rounds (`make map
  ARGS=sweep.max_members=4`: 256 trials), 2 workers: wall time, peak resident memory of
  any worker, floating-point work and the rate achieved against this machine's peak;
- adaptive: the default map (`make map`: rounds of new initialisations up to 32 a cell where
  they decide the answer), 2 workers, at `--map-seed`: the same figures, and the members it
  trained against a uniform map at the most members any cell holds (the summary's rule;
  24 min at seed 1 on 2 cores, 2026-12-03);
- tpe: the default TPE sweep (`make sweep`, 40 trials), batch 1 against the default batch.

    python benchmarks/batch_bench.py [--only grid32,sample,full,adaptive,tpe] [--repeats 2]
        [--map-seed 0] [--keep DIR]

`--keep DIR` keeps the studies (their summaries answer the tutorial's question too) instead
of a temporary folder.

The section is printed and written into `benchmarks/results.md` between two markers
(replacing an earlier one), after `benchmarks/run.py` has written the rest of that file.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.md"
BEGIN, END = "<!-- batch_bench.py: begin -->", "<!-- batch_bench.py: end -->"
SAMPLE_HIDDEN = (8, 24, 40, 56)


@dataclass
class Timing:
    label: str
    walls: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    probes: list[float] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    study: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)


def run_sweep(out: Path, *overrides: str) -> tuple[float, float, float]:
    """Wall seconds, the 1-minute load average at the start, and peak RSS (MiB) of the
    largest process of the sweep's tree (launcher or worker)."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, sys.executable, "src/sweep.py", *overrides,
         f"sweep.output_dir={out}", "quiet=true"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    wall = time.perf_counter() - started
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    return wall, load, peak_kib / 1024


# Runs the sweep as its child and prints the largest resident set of the sweep's process tree
# (ru_maxrss of waited-for descendants), so each run is measured on its own.
PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
    "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def speed_probe_ms(epochs: int = 300) -> float:
    """The machine's speed just now: one bare batched epoch of 16 one-layer cells (ms).

    The load average misses other tenants of the host: on these VMs this probe was seen to
    go from 2.6 to 4.6 ms within an hour with nothing of ours running. Taken before each
    run, it shows which figures ran on a slowed machine."""
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from mlpsweep.batch_model import BatchedMLP, TrialSpec
    from mlpsweep.data import PiecewiseDataModule

    torch.set_num_threads(1)
    data = PiecewiseDataModule(
        batch_size=32, shuffle=False, normalize=False, val_points=1000, seed=0
    )
    data.setup("fit")
    minibatches = next(iter(data.train_dataloader()))
    batch = BatchedMLP([TrialSpec(h, 1, 4, 0) for h in range(1, 17)], lr=1e-3)
    for _ in range(20):
        batch.train_epoch(minibatches)
    started = time.perf_counter()
    for _ in range(epochs):
        batch.train_epoch(minibatches)
    return (time.perf_counter() - started) / epochs * 1e3


def study_facts(out: Path, name: str) -> dict:
    """Distinct cells, trials, members, epochs and floating-point work of a finished study;
    `most_members`: the most members any cell holds over its trials (the uniform map the
    summary weighs the rounds against, `Probability.uniform_members`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out / name / 'study.db'}")
    trials = study.get_trials()
    trained = [
        trial for trial in trials
        if trial.state.is_finished() and "duplicate_of" not in trial.user_attrs
    ]
    flops, member_epochs, saved = 0.0, 0, 0
    cell_members: dict[tuple[int, int], int] = {}
    for trial in trained:
        hidden, layers = trial.params["model.hidden"], trial.params["model.layers"]
        epochs = trial.user_attrs.get("epochs", 0)
        fit_epochs = members_fit_epochs(trial) or [None] * trial_members(trial)
        # a member that fit before its trial ended left the batch then (issue 18, item 2)
        left_early = sum(epochs - at for at in fit_epochs if at is not None and at < epochs)
        trained_member_epochs = epochs * len(fit_epochs) - left_early
        flops += trained_member_epochs * epoch_flops(hidden, layers)
        member_epochs += trained_member_epochs
        saved += left_early
        cell = (hidden, layers)
        cell_members[cell] = cell_members.get(cell, 0) + len(fit_epochs)
    return {
        "cells": len(cell_members),
        "trials": len(trials),
        "complete": sum(t.state.name == "COMPLETE" for t in trials),
        "members": sum(cell_members.values()),
        "most_members": max(cell_members.values(), default=0),
        "epochs": sum(t.user_attrs.get("epochs", 0) for t in trained),
        "member_epochs": member_epochs,
        "member_epochs_saved": saved,
        "flops": flops,
    }


def trial_members(trial) -> int:
    """A trial's member count when its folder has no metrics.json: the members the worker
    kept (`rounds.MEMBER_VALUES_ATTR`), else a round's capped ensemble
    (`rounds.ENSEMBLE_ATTR`), else the sweeps' default `model.ensemble` of 4."""
    from mlpsweep.sweep.rounds import ENSEMBLE_ATTR, MEMBER_VALUES_ATTR

    kept = (trial.user_attrs.get(MEMBER_VALUES_ATTR) or {}).get("val/acc")
    if kept:
        return len(kept)
    return int(trial.user_attrs.get(ENSEMBLE_ATTR, 4))


def saved_share(facts: dict) -> float:
    """Member-epochs saved as a share of what the members would have trained staying."""
    saved = facts["member_epochs_saved"]
    return saved / max(1, facts["member_epochs"] + saved)


def members_fit_epochs(trial) -> list[int | None]:
    """Each member's fit epoch from the trial's metrics.json ([] when it has none)."""
    folder = trial.user_attrs.get("run_dir")
    metrics = Path(folder) / "metrics.json" if folder else None
    if metrics is None or not metrics.exists():
        return []
    return json.loads(metrics.read_text()).get("epochs_to_fit", [])


def epoch_flops(hidden: int, layers: int, points: int = 100) -> float:
    """One member's floating-point operations for one epoch of the tutorial's 100 points:
    each weight is one multiply-add (2 flops) forward and two backward (input and weight
    gradients), so 6 flops per weight per point; biases, sigmoids, BCE and Adam are
    elementwise and left out (a few percent at these sizes)."""
    widths = [1] + [hidden] * layers + [1]
    weights = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return 6.0 * weights * points


@functools.cache
def peak_gflops(cores: int = 2) -> float:
    """This host's float32 peak, measured (a 1024^2 matmul on one thread, `step_bench`) times
    the cores: AVX2 and AVX-512 hosts differ by 2x, so it is not assumed."""
    from step_bench import peak_gflops as one_thread_peak

    return cores * one_thread_peak()


def interleaved(variants: dict[str, list[str]], repeats: int, tmp: Path, name: str) -> dict:
    """Each variant `repeats` times, in rotated order; a fresh study folder per run."""
    timings = {label: Timing(label) for label in variants}
    order = list(variants)
    for repeat in range(repeats):
        for label in order[repeat % len(order):] + order[: repeat % len(order)]:
            safe = "".join(char if char.isalnum() else "_" for char in label)  # a Hydra value
            out = tmp / f"{name}-{safe}-{repeat}"
            timings[label].probes.append(speed_probe_ms())
            wall, load, rss = run_sweep(out, *variants[label])
            timings[label].walls.append(wall)
            timings[label].loads.append(load)
            timings[label].peak_rss_mib = max(timings[label].peak_rss_mib, rss)
            study_name = next(
                (o.split("=", 1)[1] for o in variants[label] if o.startswith("sweep.study_name=")),
                "mlp_grid" if "sweep=grid" in variants[label] else "mlp_arch",
            )
            timings[label].study = study_facts(out, study_name)
            print(f"  {label}: {wall:.1f} s (load {load:.2f})", file=sys.stderr, flush=True)
    return timings


# Batched against one at a time on a fixed set of trials: one trial of 4 members a cell
# (`sweep.max_members=4`), since the rounds a grid adds depend on the curve its own cells
# give, which a 16-cell sample does not share with the full map.
GRID32 = ("sweep=grid", "sweep.space.model.hidden.high=16", "sweep.space.model.layers.high=2",
          "trainer.max_epochs=2000", "sweep.workers=1", "sweep.max_members=4")
SAMPLE_CHOICES = ",".join(map(str, SAMPLE_HIDDEN))
SAMPLE = ("sweep=grid", "sweep.workers=2", "sweep.max_members=4", "~sweep.space.model.hidden",
          f"+sweep.space.model.hidden={{type:categorical,choices:[{SAMPLE_CHOICES}]}}")


def work_rows(timings: dict) -> list[str]:
    """What each variant trained. A trial's numbers do not depend on its batch, so every
    variant must train the same trials and member-epochs: a ratio between variants that
    trained different work would not be a ratio of speeds."""
    return [
        f"- {label}: {t.study['cells']} architectures, {t.study['trials']} trials, "
        f"{t.study['members']} members, {t.study['member_epochs']} member-epochs"
        for label, t in timings.items()
    ]


def section_rows(timings: dict, reference: str) -> list[str]:
    rows = ["| variant | runs | median wall s | min | load avg (1 min) at start | speed probe "
            f"ms at start | ratio to {reference} | peak RSS MiB |",
            "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |"]
    base = timings[reference].median
    for label, timing in timings.items():
        loads = ", ".join(f"{load:.2f}" for load in timing.loads)
        probes = ", ".join(f"{probe:.2f}" for probe in timing.probes)
        rows.append(
            f"| {label} | {len(timing.walls)} | {timing.median:.1f} | {min(timing.walls):.1f} | "
            f"{loads} | {probes} | {base / timing.median:.2f}x faster | "
            f"{timing.peak_rss_mib:.0f} |"
        )
    return rows


# Issue 18's targets for the map on 2 cores, and its bound on a worker's memory.
FOUR_MEMBER_MAP_TARGET_S = 5 * 60
ADAPTIVE_MAP_TARGET_S = 10 * 60
WORKER_RSS_TARGET_MIB = 2048


def map_facts(timing: Timing) -> list[str]:
    """What a map trained: architectures, trials, members (with rounds: against a uniform map
    at the most members any cell holds, the summary's rule), member-epochs saved by members
    that left when they fit, and the rate against the peak."""
    facts = timing.study
    rate = facts["flops"] / timing.median / 1e9
    uniform = facts["most_members"] * facts["cells"]
    against = (
        f": {facts['members'] / uniform:.0%} of the {uniform} that {facts['most_members']} "
        "for every cell (the most any cell holds) would take"
        if facts["trials"] > facts["cells"] else ""
    )
    return [
        f"- {facts['cells']} architectures, {facts['trials']} trials ({facts['complete']} "
        f"complete), {facts['members']} members trained{against}",
        f"- member-epochs trained {facts['member_epochs']}; saved by members leaving when "
        f"they fit: {facts['member_epochs_saved']} ({saved_share(facts):.1%})",
        f"- useful work {facts['flops'] / 1e12:.2f} TFLOP; achieved {rate:.1f} GFLOP/s against "
        f"a measured peak of {peak_gflops():.0f} GFLOP/s ({100 * rate / peak_gflops():.1f}%)",
    ]


def map_targets(timing: Timing, wall_target_s: float) -> list[str]:
    """The map's wall time and its largest process against issue 18's targets."""
    wall, rss = timing.median, timing.peak_rss_mib
    return [
        f"- target wall <= {wall_target_s / 60:.0f} min: {wall / 60:.1f} min, "
        f"**{'met' if wall <= wall_target_s else 'not met'}**",
        f"- target peak RSS of a process < {WORKER_RSS_TARGET_MIB} MiB: {rss:.0f} MiB, "
        f"**{'met' if rss < WORKER_RSS_TARGET_MIB else 'not met'}**",
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="grid32,sample,full,adaptive,tpe")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each grid32 variant")
    parser.add_argument("--long-repeats", type=int, default=1,
                        help="runs of each sample and tpe variant (minutes each)")
    parser.add_argument("--map-seed", type=int, default=0, help="seed of the adaptive map")
    parser.add_argument("--keep", help="keep the studies in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.keep and Path(args.keep).is_dir() and any(Path(args.keep).iterdir()):
        # a study already there would be resumed, not run again, and its time would be wrong
        parser.error(f"--keep {args.keep}: the folder is not empty; give a new or empty one")
    parts = set(args.only.split(","))
    lines: list[str] = []
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    studies = (contextlib.nullcontext(args.keep) if args.keep
               else tempfile.TemporaryDirectory(prefix="mlpsweep-batch-bench-"))
    with studies as folder:
        tmp = Path(folder)
        if "grid32" in parts:
            print("grid32", file=sys.stderr)
            timings = interleaved({
                "sweep.batch=1": [*GRID32, "sweep.batch=1"],
                "sweep.batch=16 (the grid's default)": [*GRID32],
                "sweep.batch=32": [*GRID32, "sweep.batch=32"],
            }, args.repeats, tmp, "grid32")
            lines += ["### 32-architecture grid, 1 worker, 2000 epochs", "",
                      *section_rows(timings, "sweep.batch=1"), "",
                      *work_rows(timings), ""]
        if "sample" in parts:
            print("sample", file=sys.stderr)
            timings = interleaved({
                "sweep.batch=1": [*SAMPLE, "sweep.batch=1"],
                "grid default batch": [*SAMPLE],
            }, args.long_repeats, tmp, "sample")
            unbatched = timings["sweep.batch=1"].median * 256 / 16
            lines += ["### Sample of the full grid: 16 of 256 cells, 2 workers", "",
                      *section_rows(timings, "sweep.batch=1"), "",
                      f"Unbatched full grid, scaled from the sample: {unbatched:.0f} s "
                      f"({unbatched / 60:.1f} min).", ""]
            facts = {label: t.study for label, t in timings.items()}
            lines += [f"Sample studies: {json.dumps(facts)}", ""]
        if "full" in parts:
            print("full", file=sys.stderr)
            label = "make map, sweep.max_members=4"
            timings = interleaved({label: ["sweep=grid", "sweep.max_members=4"]}, 1, tmp, "full")
            lines += ["### The full grid, 4 members a cell (`make map ARGS=sweep.max_members=4`), "
                      "2 workers", "", *section_rows(timings, label), "",
                      *map_facts(timings[label]),
                      *map_targets(timings[label], FOUR_MEMBER_MAP_TARGET_S), ""]
        if "adaptive" in parts:
            print("adaptive", file=sys.stderr)
            label = f"make map (adaptive, seed={args.map_seed})"
            timings = interleaved({label: ["sweep=grid", f"seed={args.map_seed}"]}, 1, tmp,
                                  "adaptive")
            lines += ["### The default adaptive map (`make map`), 2 workers", "",
                      *section_rows(timings, label), "", *map_facts(timings[label]),
                      *map_targets(timings[label], ADAPTIVE_MAP_TARGET_S), ""]
        if "tpe" in parts:
            print("tpe", file=sys.stderr)
            timings = interleaved({
                "sweep.batch=1": ["sweep.batch=1"],
                "sweep.batch=4 (the default)": [],
                "sweep.batch=8": ["sweep.batch=8"],
            }, args.long_repeats, tmp, "tpe")
            lines += ["### Default TPE sweep (`make sweep`, 40 trials), 2 workers", "",
                      *section_rows(timings, "sweep.batch=1"), "",
                      f"Studies: {json.dumps({k: t.study for k, t in timings.items()})}", ""]
    text = "\n".join(header(args) + lines)
    print(text)
    write_section(text)
    return 0


def header(args: argparse.Namespace) -> list[str]:
    import torch

    return [
        "## Batched trials against one trial at a time",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores; "
        f"torch {torch.__version__}; peak {peak_gflops():.0f} GFLOP/s (2 cores x a 1024^2 "
        "float32 matmul on one thread, measured in this run)",
        f"- command: `python benchmarks/batch_bench.py --only {args.only} --repeats {args.repeats} "
        f"--long-repeats {args.long_repeats} --map-seed {args.map_seed}`"
        " (part of `make bench`); each figure is a whole `src/sweep.py` command, start-up included",
        "- speed probe: one bare batched epoch of 16 one-layer cells, in ms, taken just before "
        "each run (hosts differ, so compare the probes within one run: a higher one means the "
        "host was slower then, which the load average does not show)",
        "- the map's runs over time and what stands in the way: `benchmarks/analysis.md` (by hand)",
        "",
    ]


def marked_section(text: str, begin: str = BEGIN, end: str = END) -> str:
    """A script's section of a results.md text, markers included ("" when it has none):
    `run.py` keeps it when it rewrites the rest of the file."""
    if begin in text and end in text:
        return text[text.index(begin) : text.index(end) + len(end)]
    return ""


def write_section(text: str, begin: str = BEGIN, end: str = END) -> None:
    """Put the section into results.md between the markers, replacing an earlier one."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    if begin in old and end in old:
        old = old[: old.index(begin)].rstrip() + "\n" + old[old.index(end) + len(end):].lstrip()
    RESULTS.write_text(f"{old.rstrip()}\n\n{begin}\n{text}\n{end}\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
