"""A batch of asked trials trained as one network, each told the moment it leaves.

The worker asks Optuna for up to `sweep.batch` trials at once (and prepares each under its ask
lock, see `trial.prepare`). Those whose config cannot be trained (rejected, or a repeat of a
completed trial) are told at once; repeats of a running trial wait for it; the rest are grouped
by everything but `model.hidden` and `model.layers` (a searched `model.lr` makes groups of
its own) and each group trains as one `batch_training.train_batch`. Each trial reports its
validations to its own pruner and is told its state as soon as it leaves the batch, so a
batch of one is exactly the one-trial-at-a-time loop, not a second path beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from mlpsweep.batch_config import BATCHED_KEYS, config_leaves
from mlpsweep.sweep.optuna_private import trial_id
from mlpsweep.sweep.optuna_setup import pruning_enabled
from mlpsweep.sweep.outage import StorageLost
from mlpsweep.sweep.settings import SweepSettings
from mlpsweep.sweep.trial import (
    Outcome,
    PreparedTrial,
    failed,
    open_folder,
    outcome_of,
    twin_outcome,
)
from mlpsweep.sweep.trial_states import TRAINED_SHARE, TRAINED_SHARE_EVERY_S

Tell = Callable[[optuna.Trial, Outcome], None]


Asked = tuple[optuna.Trial, PreparedTrial | Outcome]  # a trial and what `prepare` made of it
AwaitTwin = Callable[[int], FrozenTrial]  # waits until trial n is finished; returns it


def run_batch(
    asked: Sequence[Asked],
    settings: SweepSettings,
    tell: Tell,
    await_twin: AwaitTwin,
) -> None:
    """Group and train the asked trials; every trial is told exactly once through `tell`.

    Trials that need no training (rejected, a repeat of a completed trial) are told at
    once. Repeats of a trial still running (in this batch or elsewhere) are resolved after
    this batch trained: each takes its twin's result when the twin ends, or is trained
    after all if the twin failed. Ctrl-C propagates with the untold trials left to the
    caller (who queues them again).
    """
    to_train: list[PreparedTrial] = []
    repeats: list[PreparedTrial] = []
    for trial, prepared in asked:
        if not isinstance(prepared, PreparedTrial):
            tell(trial, prepared)
        elif prepared.waits_for is None:
            to_train.append(prepared)
        else:
            repeats.append(prepared)
    train_all(to_train, settings, tell)
    orphans = []
    for repeat in repeats:
        assert repeat.waits_for is not None
        outcome = twin_outcome(repeat.trial, await_twin(repeat.waits_for))
        if outcome is None:
            orphans.append(repeat)
        else:
            tell(repeat.trial, outcome)
    train_all(orphans, settings, tell)


def train_all(prepared: Sequence[PreparedTrial], settings: SweepSettings, tell: Tell) -> None:
    for group in batch_groups(prepared):
        train_group(group, settings, lambda item, outcome: tell(item.trial, outcome))


def batch_groups(prepared: Sequence[PreparedTrial]) -> list[list[PreparedTrial]]:
    """Trials that may share one network: equal in every key but hidden and layers."""
    groups: dict[Any, list[PreparedTrial]] = {}
    for item in prepared:
        groups.setdefault(batch_signature(item.cfg), []).append(item)
    return list(groups.values())


def batch_signature(cfg: Any) -> tuple[tuple[str, str], ...]:
    """Every resolved config leaf but the ones a batch's trials may differ in."""
    return tuple((key, repr(value)) for key, value in config_leaves(cfg) if key not in BATCHED_KEYS)


def share_trained(trial: optuna.Trial, share: float, written: dict[int, float], index: int) -> None:
    """The trial's `TRAINED_SHARE` for the launcher's bar, which would otherwise stand still
    while a batch trains for minutes; one storage write per trial every few seconds."""
    now = time.monotonic()
    if now - written.get(index, -TRAINED_SHARE_EVERY_S) >= TRAINED_SHARE_EVERY_S:
        written[index] = now
        trial.storage.set_trial_system_attr(trial_id(trial), TRAINED_SHARE, share)


def train_group(group: list[PreparedTrial], settings: SweepSettings, tell: Callable) -> None:
    """One `train_batch` over `group`, its hooks wired to each trial's pruner and `tell`.

    An unexpected error fails the trials still untold with its reason, so the sweep goes on.
    """
    from mlpsweep.batch_training import train_batch

    run_dirs = [open_folder(item, settings) for item in group]
    told: set[int] = set()
    first_metric = settings.objectives[0].metric
    prune = pruning_enabled(settings)

    written: dict[int, float] = {}  # trial index: when its trained share was last written

    def on_validation(index: int, epoch: int, members: dict[str, list[float]]) -> str | None:
        trial = group[index].trial
        share_trained(trial, epoch / group[index].cfg.trainer.max_epochs, written, index)
        if not prune:
            return None
        # step = epochs done (100, 200, ...), the x axis of TensorBoard, the README and
        # trainer.val_every, so the dashboard and TensorBoard show the same numbers
        trial.report(sum(members[first_metric]) / len(members[first_metric]), epoch)
        return "pruned" if trial.should_prune() else None

    def on_exit(index: int, result: object) -> None:
        told.add(index)
        tell(group[index], outcome_of(group[index].trial, result, settings))

    try:
        train_batch([item.cfg for item in group], run_dirs, on_validation, on_exit)
    except (KeyboardInterrupt, StorageLost):
        raise
    except Exception as error:  # a batch's crash must not end the sweep; its reason is kept
        for index, item in enumerate(group):
            if index not in told:
                tell(item, failed(item.trial, f"{type(error).__name__}: {error}"))
