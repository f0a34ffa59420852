"""The storage going away mid-sweep: wait for it a while, then one line instead of tracebacks.

A PostgreSQL server restarted, a network blip, a busy SQLite file: every worker's next
storage call fails, from the main thread and the heartbeat thread alike, and Optuna wraps
the driver's error as `StorageInternalError` ("... e.g. exceeding max length"), which
tells the user nothing. So each call of the sweep's storage is retried while the outage
lasts, for at most `sweep.grace_period` seconds: beyond that, the other hosts would count
this worker's trials as dead anyway. Then `StorageLost` ends the worker; the launcher
says in one line which storage was lost and to re-run once it is back (the re-run queues
the stranded trials again at once, see `liveness`).

Retrying a write is safe when the connection could not be made (the usual case: the
server is down, `pool_pre_ping` finds out before a statement is sent); a connection cut
between a commit and its reply could, rarely, repeat a write.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna

from mlpsweep.storage import scrub

RETRY_PAUSE_S = 2.0
STORAGE_LOST_EXIT = 75  # a worker that lost the storage (EX_TEMPFAIL): the launcher reports it
# the storage's private methods that Optuna's own wrappers call: `_CachedStorage` (the study's
# cache in front of an RDBStorage) and `fail_stale_trials` (optuna/storages/_heartbeat.py)
PRIVATE_CALLS = (
    "_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials",
    "_set_trial_param",
)


class StorageLost(Exception):
    """The storage stayed unreachable for the whole retry window; one line for the user."""


def is_outage(error: BaseException | None) -> bool:
    """A lost or refused connection (not a bad query): the driver's error, or Optuna's
    wrapping of it."""
    from sqlalchemy import exc

    if isinstance(error, optuna.exceptions.StorageInternalError):
        return is_outage(error.__cause__)
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    lost = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError)
    return isinstance(error, (*lost, exc.PendingRollbackError))


class Outage:
    """One clock per storage, shared by its threads: the first failure starts it, any
    success stops it, and a call failing after `window_s` raises `StorageLost`."""

    def __init__(self, window_s: float, display: str) -> None:
        self.window_s = window_s
        self.display = display
        self.since: float | None = None
        self.lock = threading.Lock()

    def guard(self, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def retried(*args: Any, **kwargs: Any) -> Any:
            while True:
                try:
                    result = call(*args, **kwargs)
                except Exception as error:
                    if not is_outage(error):
                        raise
                    self.wait_or_give_up(error)
                    continue
                with self.lock:
                    self.since = None
                return result

        return retried

    def wait_or_give_up(self, error: BaseException) -> None:
        with self.lock:
            now = time.monotonic()
            self.since = now if self.since is None else self.since
            left = self.since + self.window_s - now
        if left <= 0:
            raise StorageLost(self.message(error)) from error
        time.sleep(min(RETRY_PAUSE_S, left))

    def message(self, error: BaseException) -> str:
        cause = error.__cause__ if error.__cause__ is not None else error
        lines = str(getattr(cause, "orig", None) or cause).strip().splitlines()
        reason = scrub(lines[0]) if lines else type(cause).__name__
        return (
            f"sweep.storage={self.display!r}: lost the storage ({reason}) and it did not come "
            f"back within {self.window_s:g} s (sweep.grace_period); re-run the same command "
            "once it is back: the study resumes and its running trials are queued again"
        )


def retry_during_outages(
    storage: optuna.storages.RDBStorage, window_s: float, display: str
) -> optuna.storages.RDBStorage:
    """Make every storage call of `storage` wait out an outage of up to `window_s` seconds.

    The methods are wrapped on the instance, so Optuna's own wrappers (the study's cache,
    the heartbeat) call the retried ones and `isinstance` checks still hold.
    """
    outage = Outage(window_s, display)
    for name in dir(type(storage)):
        if name.startswith("_") and name not in PRIVATE_CALLS:
            continue
        attribute = getattr(storage, name)
        if callable(attribute):
            setattr(storage, name, outage.guard(attribute))
    return storage
