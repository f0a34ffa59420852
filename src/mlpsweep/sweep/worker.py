"""A worker: ask a batch, train it, tell each trial as it ends; until the study is full.

However many workers (or machines) share the study, asking for a trial happens under a lock
(a file lock on one machine, a PostgreSQL advisory lock across machines) after counting
what is finished or under way, so the budget is never overshot. Each trial sends a
heartbeat while it trains; a worker that dies stops sending it, and Optuna fails and
re-queues its trial (at once on the same host: see `liveness`). Ctrl-C does the same.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import TrialState

from mlpsweep.config import compose
from mlpsweep.sweep.batch import Asked, run_batch
from mlpsweep.sweep.liveness import (
    end_with_parent,
    mark_owner,
    requeue_dead_local,
    running_elsewhere,
)
from mlpsweep.sweep.locks import ask_lock
from mlpsweep.sweep.optuna_private import study_storage, trial_id
from mlpsweep.sweep.optuna_setup import open_sweep_storage, worker_study
from mlpsweep.sweep.outage import STORAGE_LOST_EXIT, StorageLost
from mlpsweep.sweep.rounds import plan_round, rounds_enabled
from mlpsweep.sweep.settings import SweepSettings, parse_settings
from mlpsweep.sweep.trial import Outcome, prepare
from mlpsweep.sweep.trial_config import training_overrides
from mlpsweep.sweep.trial_states import budget_used, finished_count

WAIT_POLL_S = 5  # how often a worker with nothing to ask looks again (at most the heartbeat)


def next_batch(
    study: optuna.Study,
    settings: SweepSettings,
    storage: optuna.storages.RDBStorage,
    base_overrides: Sequence[str],
) -> list[Asked]:
    """Up to `sweep.batch` new (or re-queued) trials the study still needs, each prepared;
    [] when done.

    Counting, asking and sampling happen under one lock, so workers together never
    overshoot `sweep.n_trials`, and a worker sees the configs other workers just asked: a
    repeat of a running one waits for it (`trial.prepare`). Re-queued trials (WAITING) are
    always taken, they are already counted.
    """
    with ask_lock(settings, storage):
        optuna.storages.fail_stale_trials(study)
        requeue_dead_local(study, storage)
        trials = study.get_trials(deepcopy=False)
        queued = sum(1 for trial in trials if trial.state == TrialState.WAITING)
        wanted = min(settings.batch, max(queued, fair_share(settings, trials)))
        batch = []
        for _ in range(wanted):
            trial = study.ask()
            mark_owner(trial)
            batch.append((trial, prepare(trial, settings, base_overrides)))
        return batch


def fair_share(settings: SweepSettings, trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """This worker's share of the trials still to ask: the rest split over this launcher's
    workers, so the last batches keep every worker busy instead of one taking them all."""
    remaining = settings.n_trials - budget_used(trials)
    return max(0, -(-remaining // settings.workers))


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
            try:
                for identifier in live:
                    self.storage.record_heartbeat(identifier)
            except StorageLost:  # the worker's own next call reports it; no thread traceback
                return
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
    on_wait: Callable[[optuna.Study, dict[str, int]], None] | None = None,
) -> int:
    """Ask a batch, train it, tell each trial as it ends, until the study has n_trials
    finished trials. Returns the trials this worker told.

    With nothing left to ask while trials still run elsewhere (another worker, another
    host), the worker waits for them: if their process dies or their heartbeat goes stale
    they are queued again, and this worker takes them.
    """
    told = 0
    while True:
        batch = next_batch(study, settings, storage, base_overrides)
        if batch:
            train_and_tell(study, batch, settings, storage, on_trial_end)
            told += len(batch)
            continue
        if rounds_enabled(settings) and queue_round(study, settings, storage):
            continue
        trials = study.get_trials(deepcopy=False)
        running = running_elsewhere(trials)
        if not running or (
            finished_count(trials) >= settings.n_trials and not rounds_enabled(settings)
        ):
            return told
        if on_wait is not None:
            on_wait(study, running)
        time.sleep(min(settings.heartbeat_interval, WAIT_POLL_S))


def queue_round(
    study: optuna.Study, settings: SweepSettings, storage: optuna.storages.RDBStorage
) -> int:
    """The grid's next round of new initialisations (`rounds.plan_round`), planned under
    the ask lock so that two workers never queue the same round twice."""
    with ask_lock(settings, storage):
        return plan_round(study, settings)


def train_and_tell(
    study: optuna.Study,
    batch: Sequence[Asked],
    settings: SweepSettings,
    storage: optuna.storages.RDBStorage,
    on_trial_end: Callable[[optuna.Study], None] | None,
) -> None:
    """One batch: each trial told the moment it ends; Ctrl-C queues the untold ones again."""
    untold = {trial.number: trial for trial, _ in batch}
    with TrialHeartbeats(storage, list(untold.values())) as heartbeats:

        def tell(trial: optuna.Trial, outcome: Outcome) -> None:
            state, values = outcome
            study.tell(trial, values, state=state)
            heartbeats.done(trial)
            untold.pop(trial.number, None)
            if on_trial_end is not None:
                on_trial_end(study)

        try:
            run_batch(batch, settings, tell, lambda number: await_trial(study, storage, number))
        except KeyboardInterrupt:
            for trial in untold.values():
                _requeue_interrupted(study, trial, storage)
            raise


def await_trial(
    study: optuna.Study, storage: optuna.storages.RDBStorage, number: int
) -> optuna.trial.FrozenTrial:
    """Trial `number` once it is finished: a repeat waits here for its running twin.

    While waiting, a twin whose process died here or whose heartbeat went stale is failed
    (and queued again) as `next_batch` would, so a dead twin cannot hold its repeat forever.
    """
    while True:
        trial = study.get_trials(deepcopy=False)[number]
        if trial.state.is_finished():
            return trial
        optuna.storages.fail_stale_trials(study)
        requeue_dead_local(study, storage)
        time.sleep(TWIN_POLL_S)


TWIN_POLL_S = 1.0  # a repeat's look at its twin: one storage read


def _requeue_interrupted(
    study: optuna.Study, trial: optuna.Trial, storage: optuna.storages.RDBStorage
) -> None:
    """Ctrl-C mid-trial: fail it and queue it again, as a dead worker's trial would be."""
    trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); queued again")
    study.tell(trial, state=TrialState.FAIL)
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        callback(study, study_storage(study).get_trial(trial_id(trial)))


def worker_process_main(overrides: list[str], worker_index: int, launcher_pid: int) -> None:
    """Entry of a spawned worker process: it composes and opens everything itself; quiet,
    and Ctrl-C or its launcher's death ends it without a traceback, its trials queued again."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher decides: see launcher.stop_workers
    try:
        end_with_parent(launcher_pid)
        settings = parse_settings(compose(overrides))
        storage = open_sweep_storage(settings)
        study = worker_study(settings, storage, worker_index)
        run_trials(study, settings, storage, training_overrides(overrides))
    except KeyboardInterrupt:
        sys.exit(130)
    except StorageLost:  # the launcher says so, once for all its workers
        sys.exit(STORAGE_LOST_EXIT)
