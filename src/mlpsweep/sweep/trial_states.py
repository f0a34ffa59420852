"""The trial-state vocabulary the sweep counts with and the summary shows.

Optuna's states are COMPLETE, PRUNED, FAIL, RUNNING and WAITING; a trial whose worker died
is FAIL too, but Optuna queues it again (its number lands in the copy's `retry_history`),
so it is named "retried" and does not count toward `sweep.n_trials`. This module imports
only Optuna, so the summary can share it without importing the launcher.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials that died with their worker and were queued again (not counted)."""
    return {number for trial in trials for number in trial.system_attrs.get("retry_history", [])}


def retried_as(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """{dead trial: the copy Optuna queued in its place}, from each copy's `retry_history`."""
    return {
        trial.system_attrs["retry_history"][-1]: trial.number
        for trial in trials
        if trial.system_attrs.get("retry_history")
    }


def budget_used(trials: Sequence[FrozenTrial]) -> int:
    """Trials that count toward n_trials: finished, running or queued; not the retried dead."""
    retried = retried_numbers(trials)
    return sum(
        1 for trial in trials if not (trial.state == TrialState.FAIL and trial.number in retried)
    )


def state_name(trial: FrozenTrial, retried: set[int]) -> str:
    """complete, pruned, failed, running or waiting; a dead worker's re-queued trial is
    'retried'."""
    if trial.state == TrialState.FAIL and trial.number in retried:
        return "retried"
    return trial.state.name.lower().replace("fail", "failed")


def state_counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    retried = retried_numbers(trials)
    counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "waiting": 0, "retried": 0}
    for trial in trials:
        counts[state_name(trial, retried)] += 1
    return counts


def finished_count(trials: Sequence[FrozenTrial]) -> int:
    """Trials that are done and count toward n_trials: complete, pruned, failed (not retried)."""
    counts = state_counts(trials)
    return counts["complete"] + counts["pruned"] + counts["failed"]


TRAINED_SHARE = "trained_share"
"""A RUNNING trial's system attribute: epochs trained / trainer.max_epochs, written by its
worker at validations (at most every `TRAINED_SHARE_EVERY_S`), read by the progress bar."""
TRAINED_SHARE_EVERY_S = 2.0


def running_share(trials: Sequence[FrozenTrial]) -> float:
    """The running trials' trained shares summed: how far into their batches the workers
    are, in trials (a batch of 16 half-way through its epochs is 8)."""
    return sum(min(1.0, float(trial.system_attrs.get(TRAINED_SHARE, 0.0)))
               for trial in trials if trial.state == TrialState.RUNNING)
