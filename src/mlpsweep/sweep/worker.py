"""A worker: ask -> train -> tell, until the study holds exactly `sweep.n_trials` trials.

However many workers (or machines) share the study, asking for a trial happens under a lock
(a file lock on one machine, a PostgreSQL advisory lock across machines) after counting
what is finished or under way, so the budget is never overshot. Each trial sends a
heartbeat while it trains; a worker that dies stops sending it, and Optuna fails and
re-queues its trial. Ctrl-C does the same at once.
"""

from __future__ import annotations

import fcntl
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import optuna
from optuna.trial import TrialState

from mlpsweep.config import compose
from mlpsweep.sweep.optuna_private import heartbeat_thread, study_storage, trial_id
from mlpsweep.sweep.optuna_setup import open_sweep_storage, worker_study
from mlpsweep.sweep.settings import SweepSettings, parse_settings
from mlpsweep.sweep.trial import run_trial
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


def next_trial(
    study: optuna.Study, settings: SweepSettings, storage: optuna.storages.RDBStorage
) -> optuna.Trial | None:
    """A new (or re-queued) trial if the study still needs one, else None."""
    with ask_lock(settings, storage):
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        queued = any(trial.state == TrialState.WAITING for trial in trials)  # ask() takes those
        if not queued and budget_used(trials) >= settings.n_trials:
            return None
        return study.ask()


def run_trials(
    study: optuna.Study,
    settings: SweepSettings,
    storage: optuna.storages.RDBStorage,
    base_overrides: Sequence[str],
    on_trial_end: Callable[[optuna.Study], None] | None = None,
) -> int:
    """Ask, train, tell, until the study has n_trials. Returns the trials this worker ran."""
    ran = 0
    while (trial := next_trial(study, settings, storage)) is not None:
        with heartbeat_thread(trial, storage):
            try:
                state, values = run_trial(trial, settings, base_overrides)
            except KeyboardInterrupt:
                _requeue_interrupted(study, trial, storage)
                raise
        study.tell(trial, values, state=state)
        ran += 1
        if on_trial_end is not None:
            on_trial_end(study)
    return ran


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
