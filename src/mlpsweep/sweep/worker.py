"""A worker: ask a batch, train it, tell each trial as it ends; until the study is full.

However many workers (or machines) share the study, asking for a trial happens under a lock
(a file lock on one machine, a PostgreSQL advisory lock across machines) after counting
what is finished or under way, so the budget is never overshot. Each trial sends a
heartbeat while it trains; a worker that dies stops sending it, and Optuna fails and
re-queues its trial. Ctrl-C does the same at once.
"""

from __future__ import annotations

import fcntl
import sys
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import optuna
from optuna.trial import TrialState

from mlpsweep.config import compose
from mlpsweep.sweep.batch import run_batch
from mlpsweep.sweep.optuna_private import study_storage, trial_id
from mlpsweep.sweep.optuna_setup import open_sweep_storage, worker_study
from mlpsweep.sweep.settings import SweepSettings, parse_settings
from mlpsweep.sweep.trial import Outcome
from mlpsweep.sweep.trial_config import training_overrides
from mlpsweep.sweep.trial_states import budget_used


@contextmanager
def ask_lock(settings: SweepSettings, storage: optuna.storages.RDBStorage) -> Iterator[None]:
    """Serialise count-then-ask among all workers of the study.

    Several machines share only the database, so PostgreSQL takes an advisory lock; on one
    machine (SQLite) an flock on a file in the study folder does the same.
    """
    if settings.is_postgres:
        from sqlalchemy import text

        key = zlib.crc32(f"mlpsweep:{settings.study_name}".encode())
        with storage.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
        return
    settings.study_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.study_dir / ".ask.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def next_batch(
    study: optuna.Study, settings: SweepSettings, storage: optuna.storages.RDBStorage
) -> list[optuna.Trial]:
    """Up to `sweep.batch` new (or re-queued) trials the study still needs; [] when done.

    Counting and asking happen under one lock, so workers together never overshoot
    `sweep.n_trials`; re-queued trials (WAITING) are always taken, they are already counted.
    """
    with ask_lock(settings, storage):
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        queued = sum(1 for trial in trials if trial.state == TrialState.WAITING)
        wanted = min(settings.batch, max(queued, settings.n_trials - budget_used(trials)))
        return [study.ask() for _ in range(wanted)]


class TrialHeartbeats:
    """One thread recording the heartbeat of every trial of a batch still untold.

    Optuna's own heartbeat thread serves one trial; a batch would need one thread per trial.
    `record_heartbeat` is the storage's public heartbeat call; a dead worker's trials go
    stale together and Optuna's retry callback queues each of them again.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, trials: Sequence[optuna.Trial]) -> None:
        self.storage = storage
        self.live = {trial_id(trial) for trial in trials}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.beat, name="trial-heartbeats", daemon=True)

    def __enter__(self) -> TrialHeartbeats:
        if self.storage.get_heartbeat_interval() is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def beat(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while True:
            with self.lock:
                live = sorted(self.live)
            for identifier in live:
                self.storage.record_heartbeat(identifier)
            if self.stop.wait(timeout=interval):
                return

    def done(self, trial: optuna.Trial) -> None:
        with self.lock:
            self.live.discard(trial_id(trial))


def run_trials(
    study: optuna.Study,
    settings: SweepSettings,
    storage: optuna.storages.RDBStorage,
    base_overrides: Sequence[str],
    on_trial_end: Callable[[optuna.Study], None] | None = None,
) -> int:
    """Ask a batch, train it, tell each trial as it ends, until the study has n_trials.

    Returns the trials this worker told.
    """
    told = 0
    while batch := next_batch(study, settings, storage):
        train_and_tell(study, batch, settings, storage, base_overrides, on_trial_end)
        told += len(batch)
    return told


def train_and_tell(
    study: optuna.Study,
    batch: Sequence[optuna.Trial],
    settings: SweepSettings,
    storage: optuna.storages.RDBStorage,
    base_overrides: Sequence[str],
    on_trial_end: Callable[[optuna.Study], None] | None,
) -> None:
    """One batch: each trial told the moment it ends; Ctrl-C queues the untold ones again."""
    untold = {trial.number: trial for trial in batch}
    with TrialHeartbeats(storage, batch) as heartbeats:

        def tell(trial: optuna.Trial, outcome: Outcome) -> None:
            state, values = outcome
            study.tell(trial, values, state=state)
            heartbeats.done(trial)
            untold.pop(trial.number, None)
            if on_trial_end is not None:
                on_trial_end(study)

        try:
            run_batch(batch, settings, base_overrides, tell)
        except KeyboardInterrupt:
            for trial in untold.values():
                _requeue_interrupted(study, trial, storage)
            raise


def _requeue_interrupted(
    study: optuna.Study, trial: optuna.Trial, storage: optuna.storages.RDBStorage
) -> None:
    """Ctrl-C mid-trial: fail it and queue it again, as a dead worker's trial would be."""
    trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); queued again")
    study.tell(trial, state=TrialState.FAIL)
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        callback(study, study_storage(study).get_trial(trial_id(trial)))


def worker_process_main(overrides: list[str], worker_index: int) -> None:
    """Entry of a spawned worker process: it composes and opens everything itself; quiet,
    and Ctrl-C ends it without a traceback."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        settings = parse_settings(compose(overrides))
        storage = open_sweep_storage(settings)
        study = worker_study(settings, storage, worker_index)
        run_trials(study, settings, storage, training_overrides(overrides))
    except KeyboardInterrupt:
        sys.exit(130)
