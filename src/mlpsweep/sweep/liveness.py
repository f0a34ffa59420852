"""Who is training a RUNNING trial, and whether that process still lives.

Optuna's heartbeat notices a dead worker only after `sweep.grace_period` seconds of silence,
which is right across machines but needlessly slow on one: a sweep re-run right after a
crash would find every trial still "running" and do nothing. So each trial records its
host and process id when asked; on the same host, a RUNNING trial whose process is gone is
failed and queued again at once, exactly as the heartbeat's retry would do later. Trials of
other hosts are left to the heartbeat. Worker processes also end with their launcher
(`PR_SET_PDEATHSIG` on Linux), so no orphan trains on silently after a `kill -9`.
The queued copy starts clean: the dead attempt's fail reason, host, process and folder stay
with the dead attempt, so a retry that completes never shows them.
"""

from __future__ import annotations

import copy
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Sequence

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from mlpsweep.sweep.optuna_private import study_storage, trial_id

HOST_ATTR, PID_ATTR = "host", "pid"
# what describes one attempt, not the configuration: a retry does not inherit it
ATTEMPT_ATTRS = ("fail_reason", HOST_ATTR, PID_ATTR, "run_dir", "waits_for", "duplicate_of")
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def this_host() -> str:
    return socket.gethostname()


def mark_owner(trial: optuna.Trial) -> None:
    """Record where the trial trains: this host and this process."""
    trial.set_user_attr(HOST_ATTR, this_host())
    trial.set_user_attr(PID_ATTR, os.getpid())


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists here (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def dead_local_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """RUNNING trials of this host whose recorded process no longer exists."""
    host = this_host()
    return [
        trial
        for trial in trials
        if trial.state == TrialState.RUNNING
        and trial.user_attrs.get(HOST_ATTR) == host
        and isinstance(trial.user_attrs.get(PID_ATTR), int)
        and trial.user_attrs[PID_ATTR] != os.getpid()
        and not process_alive(trial.user_attrs[PID_ATTR])
    ]


def requeue_dead_local(study: optuna.Study, storage: optuna.storages.RDBStorage) -> int:
    """Fail this host's trials whose process died and queue each again (Optuna's retry
    callback, as the heartbeat would after its grace period). Returns how many."""
    dead = dead_local_trials(study.get_trials(deepcopy=False))
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial in dead:
        identifier = trial_id(trial)
        reason = "its worker process died; queued again"
        storage.set_trial_user_attr(identifier, "fail_reason", reason)
        if storage.set_trial_state_values(identifier, state=TrialState.FAIL) and callback:
            callback(study, study_storage(study).get_trial(identifier))
    return len(dead)


class RetryAsFreshAttempt(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a dead worker's trial, without the dead attempt's own attributes.

    Optuna copies every user attribute into the queued copy; a copy that then completes
    would still carry the dead attempt's `fail_reason` (and its host, process and folder).
    """

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        fresh = copy.copy(trial)
        fresh.user_attrs = {
            key: value for key, value in trial.user_attrs.items() if key not in ATTEMPT_ATTRS
        }
        super().__call__(study, fresh)


def running_elsewhere(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """RUNNING trials by host, for the line that says what a finished worker waits for."""
    hosts: dict[str, int] = {}
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            host = str(trial.user_attrs.get(HOST_ATTR, "?"))
            hosts[host] = hosts.get(host, 0) + 1
    return hosts


def end_with_parent(parent_pid: int) -> None:
    """Let this worker process die with its launcher, and turn that death into Ctrl-C's path.

    SIGTERM becomes KeyboardInterrupt, so the worker queues its untold trials again before
    it exits. If the launcher died before the request was made, exit at once.
    """
    interrupt_on_sigterm()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        raise KeyboardInterrupt("the launcher is gone")


def interrupt_on_sigterm() -> None:
    """SIGTERM (a launcher stopping its worker, `scancel`) takes Ctrl-C's path: the worker
    queues its untold trials again. It replaces submitit's own handler, which ignores it."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    """Once: a second SIGTERM (seen here right after the first) must not cut short the
    requeue that the first one starts."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}: the launcher is gone")
