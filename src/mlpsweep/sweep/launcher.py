"""`python src/sweep.py`: check everything, create the study, run the workers, report the best.

The launcher checks every setting before it creates anything, then, under the storage's
lock, creates or loads the study (refusing a resume whose training settings changed) and
takes worker numbers from it (so workers never race to create it), writes
`study.json` (how the summary finds the storage, password masked), then either runs the
one worker in this process or spawns `sweep.workers` processes and only watches the
study, drawing one progress bar. At the end it writes `best.yaml` and prints how to
reproduce the best trial (`mlpsweep.sweep.report`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from mlpsweep.cli import stderr_is_terminal
from mlpsweep.config import ConfigError
from mlpsweep.resources import check_sweep_fits
from mlpsweep.sweep.fixed_settings import fixed_training_settings, record_or_check
from mlpsweep.sweep.locks import storage_lock
from mlpsweep.sweep.optuna_setup import (
    claim_worker_numbers,
    load_or_create_study,
    make_folder,
    make_pruner,
    make_sampler,
    open_sweep_storage,
    refuse_foreign_sqlite,
    worker_study,
)
from mlpsweep.sweep.outage import StorageLost
from mlpsweep.sweep.report import report_answer, report_best
from mlpsweep.sweep.rounds import rounds_enabled
from mlpsweep.sweep.settings import GRID_SAMPLER, SweepSettings, parse_settings
from mlpsweep.sweep.trial_config import check_space_composes, training_overrides
from mlpsweep.sweep.trial_states import (
    budget_used,
    finished_count,
    running_share,
    state_counts,
)
from mlpsweep.sweep.worker import run_trials, worker_process_main


class SweepProgress:
    """The study's trials as they finish: finished, pruned, failed, and the best so far.

    On a terminal, one bar redrawn in place; in a log file (stderr not a terminal) a plain
    line each time a trial finishes, since every redraw of a bar would be a line there.
    A map's later rounds (extra initialisations of deciding cells) are trials beyond
    `n_trials`: they raise the bar's total as they are queued, so the count never reads
    complete while they train.
    """

    def __init__(self, settings: SweepSettings, enabled: bool) -> None:
        from tqdm import tqdm

        self.settings = settings
        self.enabled = enabled
        self.lines = enabled and not stderr_is_terminal()
        self.printed = ""
        self.finished = 0
        self.goal = settings.n_trials
        self.description = f"sweep {settings.study_name}"
        self.bar = tqdm(
            total=settings.n_trials,
            desc=self.description,
            unit="trial",
            file=sys.stderr,
            disable=not enabled or self.lines,
            dynamic_ncols=True,
        )

    def refresh(self, study: optuna.Study) -> None:
        if not self.enabled:  # quiet: not even the storage read (the launcher polls each second)
            return
        trials = study.get_trials(deepcopy=False)  # one read of the storage per refresh
        counts = state_counts(trials)
        finished = counts["complete"] + counts["pruned"] + counts["failed"]
        # the trials that count toward the study, as the workers count them: a map's later
        # rounds lift it past n_trials; a dead worker's trial and its retry copy count once
        self.goal = max(self.settings.n_trials, budget_used(trials))
        later_rounds = self.goal - self.settings.n_trials
        self.bar.total = self.goal
        self.finished = min(finished, self.goal)
        # within a batch the bar moves by the running trials' trained shares (in tenths)
        partial = round(self.finished + running_share(trials), 1)
        self.bar.n = min(partial, self.goal) if counts["running"] else self.finished
        postfix = {
            "done": counts["complete"], "pruned": counts["pruned"], "failed": counts["failed"]
        }
        best = best_value_text(trials, self.settings)
        if self.lines:
            ended = ", ".join(f"{key} {value}" for key, value in postfix.items())
            rounds = f", {later_rounds} of them later rounds" if later_rounds else ""
            self.say(
                f"{self.description}: {self.finished}/{self.goal} trials finished{rounds} "
                f"({ended}{'; best ' + best if best else ''})"
            )
            return
        if counts["running"]:
            postfix["running"] = counts["running"]
        if best:
            postfix["best"] = best
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def waiting(self, study: optuna.Study, running: dict[str, int]) -> None:
        """Nothing left to ask: say whose trials this worker waits for."""
        hosts = ", ".join(f"{count} on {host}" for host, count in sorted(running.items()))
        self.description = f"sweep {self.settings.study_name} (waiting for {hosts})"
        self.bar.set_description(self.description)
        self.refresh(study)

    def say(self, line: str) -> None:
        """A plain line for a log file, only when it says something new."""
        if line != self.printed:
            print(line, file=sys.stderr, flush=True)
            self.printed = line

    def done(self) -> bool:
        """Every trial finished: the bar is closed (its clock stops) while the workers exit.

        A map with rounds is never done here: between two rounds every queued trial has
        finished, and a worker may still plan the next one. Its bar closes with the workers.
        """
        if rounds_enabled(self.settings):
            return False
        if self.finished >= self.goal:
            self.close()
            return True
        return False

    def close(self) -> None:
        self.bar.close()


def best_value_text(trials: Sequence[FrozenTrial], settings: SweepSettings) -> str:
    """The first objective's best value among complete trials, for the progress bar."""
    values = [trial.values[0] for trial in trials if trial.state == TrialState.COMPLETE]
    if not values:
        return ""
    first = settings.objectives[0]
    best = max(values) if first.direction == "maximize" else min(values)
    return f"{first.metric} {best:.4f}"


WorkerRunner = Callable[
    [SweepSettings, Sequence[str], optuna.Study, "SweepProgress", int], list[str]
]
"""Runs a study's workers until they end: (settings, overrides, study, progress, first worker
number) -> the names of the workers that ended with an error. `run_worker_processes` here;
Hydra's launchers in the project's sweeper (`hydra/launcher=...`)."""


def launch(
    cfg: DictConfig, overrides: Sequence[str], run_workers: WorkerRunner | None = None
) -> int:
    """Check everything, create the study once, run the workers, then report the best."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = parse_settings(cfg)
    check_before_creating(settings, overrides)
    created = make_folder(settings.study_dir, "sweep.output_dir")
    try:
        storage, study, first_number = open_study(settings, cfg)
    except BaseException:
        remove_if_only_folders(created)  # e.g. PostgreSQL unreachable: leave nothing behind
        raise
    write_study_pointer(settings)
    progress = SweepProgress(settings, enabled=not cfg.quiet)
    if run_workers is None:
        run_workers = run_in_process(storage) if settings.workers == 1 else run_worker_processes
    try:
        progress.refresh(study)
        dead = run_until_done(run_workers, settings, overrides, study, progress, first_number)
        best_code = report_best(study, settings)
        code = incomplete_study_code(study, settings, dead) or best_code
        if code == 0 and settings.sampler["name"] == GRID_SAMPLER:
            report_answer(settings)
        return code
    except StorageLost as lost:  # the workers already waited out sweep.grace_period for it
        progress.close()
        print(f"error: {lost}", file=sys.stderr)
        return 1


def run_until_done(
    run_workers: WorkerRunner,
    settings: SweepSettings,
    overrides: Sequence[str],
    study: optuna.Study,
    progress: SweepProgress,
    first_number: int,
) -> list[str]:
    """The workers until they end; Ctrl-C (the workers stopped) only counts if the study
    is incomplete. Returns the workers that ended with an error."""
    try:
        dead = run_workers(settings, overrides, study, progress, first_number)
    except KeyboardInterrupt:
        progress.close()
        refuse_interrupt_unless_complete(study, settings)
        dead = []
    progress.refresh(study)
    progress.close()
    return dead


def run_in_process(storage: optuna.storages.RDBStorage) -> WorkerRunner:
    """`sweep.workers=1`: the one worker in this process, drawing the progress bar."""

    def run(
        settings: SweepSettings,
        overrides: Sequence[str],
        study: optuna.Study,
        progress: SweepProgress,
        first_number: int,
    ) -> list[str]:
        run_trials(
            worker_study(settings, storage, first_number), settings, storage,
            training_overrides(overrides), on_trial_end=progress.refresh,
            on_wait=progress.waiting,
        )
        return []

    return run


def refuse_interrupt_unless_complete(study: optuna.Study, settings: SweepSettings) -> None:
    """Ctrl-C with the workers stopped: re-raise it, unless the study was complete anyway.

    A job manager's SIGINT may come after the last trial was told: the study then has all it
    needs, and the user gets its best.yaml and exit 0 rather than a resume that does nothing.
    """
    finished = finished_count(study.get_trials(deepcopy=False))
    if finished < settings.n_trials:
        raise KeyboardInterrupt
    print(
        f"interrupted, but study {settings.study_name} was already complete ({finished} of "
        f"sweep.n_trials={settings.n_trials} finished): reporting it",
        file=sys.stderr,
    )


def incomplete_study_code(study: optuna.Study, settings: SweepSettings, dead: list[str]) -> int:
    """1 with one line saying what is missing and why, if the study is short of n_trials."""
    trials = study.get_trials(deepcopy=False)
    finished = finished_count(trials)
    if finished >= settings.n_trials:
        return 0
    counts = state_counts(trials)
    why = f"{', '.join(dead)} ended with an error" if dead else "the workers stopped early"
    print(
        f"error: study {settings.study_name} is incomplete: {finished} of "
        f"sweep.n_trials={settings.n_trials} finished, {counts['running']} running, "
        f"{counts['waiting']} queued ({why}); re-run the same command to finish it",
        file=sys.stderr,
    )
    return 1


def check_before_creating(settings: SweepSettings, overrides: Sequence[str]) -> None:
    """Every check that needs no storage, so a rejected setting leaves no file behind:
    the searched keys, the sampler and pruner, a composable trial, an SQLite file's kind."""
    _reject_fixed_search_keys(settings, overrides)
    make_sampler(settings, 0)
    make_pruner(settings)
    check_space_composes(settings, training_overrides(overrides))
    check_sweep_fits(settings, overrides)  # the workers against this machine's cores, memory
    refuse_foreign_sqlite(settings)


def remove_if_only_folders(folder: Path | None) -> None:
    """Remove `folder` (one this command created) if it holds nothing but empty folders."""
    if folder is not None and folder.is_dir() and all(p.is_dir() for p in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)


def open_study(
    settings: SweepSettings, cfg: DictConfig
) -> tuple[optuna.storages.RDBStorage, optuna.Study, int]:
    """The storage, the study (created, or loaded and checked against this command's
    settings) and the first of this launcher's worker numbers, all under one lock: two
    commands starting one new study at once then share it instead of colliding."""
    with storage_lock(settings):
        storage = open_sweep_storage(settings)
        study = load_or_create_study(settings, storage)
        record_or_check(study, settings, fixed_training_settings(cfg, settings))
        first_number = claim_worker_numbers(storage, settings.study_name, settings.workers)
    return storage, study, first_number


def write_study_pointer(settings: SweepSettings) -> None:
    """`study.json`: how `make summary` finds this study's storage (password masked)."""
    pointer = {
        "study_name": settings.study_name,
        "storage": settings.storage_display,
        "storage_has_password": settings.storage_display != settings.storage_url,
        "objectives": [
            {"metric": objective.metric, "direction": objective.direction}
            for objective in settings.objectives
        ],
        "n_trials": settings.n_trials,
        "space": [spec.path for spec in settings.space],
    }
    (settings.study_dir / "study.json").write_text(json.dumps(pointer, indent=2) + "\n")


def _reject_fixed_search_keys(settings: SweepSettings, overrides: Sequence[str]) -> None:
    fixed = {override.split("=", 1)[0].lstrip("+~") for override in overrides if "=" in override}
    for spec in settings.space:
        if spec.path in fixed:
            raise ConfigError(
                f"{spec.path}: is searched (sweep.space) and cannot also be set on the command line"
            )


def run_worker_processes(
    settings: SweepSettings,
    overrides: Sequence[str],
    study: optuna.Study,
    progress: SweepProgress,
    first_number: int,
) -> list[str]:
    """N worker processes on the same storage; this process only watches the study.

    Worker `first_number + i` seeds its sampler with `seed + first_number + i`: numbers the
    study hands out, so launchers on several machines never draw alike. A worker that dies
    leaves its trials to the others (they queue them again at once, see `liveness`).
    Returns the names of the workers that ended with an error.
    """
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=worker_process_main,
            args=(list(overrides), first_number + index, os.getpid()),
            name=f"worker-{first_number + index}",
        )
        for index in range(settings.workers)
    ]
    for process in processes:
        process.start()
    try:
        while any(process.is_alive() for process in processes):
            for process in processes:
                process.join(timeout=1.0 / len(processes))
            if not progress.done():
                progress.refresh(study)
    except (KeyboardInterrupt, StorageLost):
        stop_workers(processes)
        raise
    return [
        f"{process.name} (exit {process.exitcode})"
        for process in processes
        if process.exitcode not in (0, None)
    ]


STOP_TIMEOUT_S = 30  # a worker asked to stop only fails and requeues its trials: seconds at most


def stop_workers(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Ctrl-C reached the launcher: SIGTERM each worker (it queues its trials again and
    exits, see `liveness.end_with_parent`), wait for them, SIGKILL any that hangs.

    Workers ignore SIGINT themselves, so a job manager's `kill -INT <launcher>` and a
    terminal's Ctrl-C (sent to the whole process group) take this one path. A second
    Ctrl-C while the workers requeue is ignored: cutting that short would strand trials.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
    finally:
        signal.signal(signal.SIGINT, previous)
