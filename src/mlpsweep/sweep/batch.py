"""A batch of asked trials trained as one network, each told the moment it leaves.

The worker asks Optuna for up to `sweep.batch` trials at once. Those whose config cannot be
trained (rejected, or a repeat of a completed trial) are told at once; the rest are grouped
by everything but `model.hidden` and `model.layers` (a searched `model.lr` makes groups of
its own) and each group trains as one `batch_training.train_batch`. Each trial reports its
validations to its own pruner and is told its state as soon as it leaves the batch, so a
batch of one is exactly the one-trial-at-a-time loop, not a second path beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from mlpsweep.batch_config import BATCHED_KEYS, config_leaves
from mlpsweep.sweep.optuna_private import study_storage, trial_id
from mlpsweep.sweep.optuna_setup import pruning_enabled
from mlpsweep.sweep.settings import SweepSettings
from mlpsweep.sweep.trial import Outcome, PreparedTrial, failed, open_folder, outcome_of, prepare

Tell = Callable[[optuna.Trial, Outcome], None]


def run_batch(
    trials: Sequence[optuna.Trial],
    settings: SweepSettings,
    base_overrides: Sequence[str],
    tell: Tell,
) -> None:
    """Prepare, group and train `trials`; every trial is told exactly once through `tell`.

    Ctrl-C propagates with the untold trials left to the caller (who queues them again).
    """
    to_train: list[PreparedTrial] = []
    repeats: list[tuple[optuna.Trial, PreparedTrial]] = []
    for trial in trials:
        prepared = prepare(trial, settings, base_overrides)
        if not isinstance(prepared, PreparedTrial):
            tell(trial, prepared)
            continue
        twin = next((p for p in to_train if p.fingerprint == prepared.fingerprint), None)
        if twin is not None:  # the sampler proposed one config twice in one batch
            repeats.append((trial, twin))
        else:
            to_train.append(prepared)
    outcomes: dict[int, Outcome] = {}

    def tell_trained(prepared: PreparedTrial, outcome: Outcome) -> None:
        outcomes[prepared.trial.number] = outcome
        tell(prepared.trial, outcome)

    for group in batch_groups(to_train):
        train_group(group, settings, tell_trained)
    for trial, twin in repeats:
        tell(trial, repeat_outcome(trial, twin, outcomes.get(twin.trial.number)))


def batch_groups(prepared: Sequence[PreparedTrial]) -> list[list[PreparedTrial]]:
    """Trials that may share one network: equal in every key but hidden and layers."""
    groups: dict[Any, list[PreparedTrial]] = {}
    for item in prepared:
        groups.setdefault(batch_signature(item.cfg), []).append(item)
    return list(groups.values())


def batch_signature(cfg: Any) -> tuple[tuple[str, str], ...]:
    """Every resolved config leaf but the ones a batch's trials may differ in."""
    return tuple((key, repr(value)) for key, value in config_leaves(cfg) if key not in BATCHED_KEYS)


def train_group(group: list[PreparedTrial], settings: SweepSettings, tell: Callable) -> None:
    """One `train_batch` over `group`, its hooks wired to each trial's pruner and `tell`.

    An unexpected error fails the trials still untold with its reason, so the sweep goes on.
    """
    from mlpsweep.batch_training import train_batch

    run_dirs = [open_folder(item, settings) for item in group]
    told: set[int] = set()
    first_metric = settings.objectives[0].metric
    prune = pruning_enabled(settings)

    def on_validation(index: int, epoch: int, members: dict[str, list[float]]) -> str | None:
        if not prune:
            return None
        trial = group[index].trial
        # step = the epoch's index, as Optuna's PyTorchLightningPruningCallback reports it
        trial.report(sum(members[first_metric]) / len(members[first_metric]), epoch - 1)
        return "pruned" if trial.should_prune() else None

    def on_exit(index: int, result: object) -> None:
        told.add(index)
        tell(group[index], outcome_of(group[index].trial, result, settings))

    try:
        train_batch([item.cfg for item in group], run_dirs, on_validation, on_exit)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # a batch's crash must not end the sweep; its reason is kept
        for index, item in enumerate(group):
            if index not in told:
                tell(item, failed(item.trial, f"{type(error).__name__}: {error}"))


def repeat_outcome(trial: optuna.Trial, twin: PreparedTrial, outcome: Outcome | None) -> Outcome:
    """A config proposed twice in one batch: the repeat takes its twin's outcome."""
    from mlpsweep.sweep.trial_config import reuse_twin

    if outcome is None or outcome[0] != TrialState.COMPLETE:
        trial.set_user_attr("duplicate_of", twin.trial.number)
        if outcome is not None and outcome[0] == TrialState.PRUNED:
            return TrialState.PRUNED, None
        return failed(trial, f"repeat of trial {twin.trial.number}, which failed")
    frozen = study_storage(twin.trial.study).get_trial(trial_id(twin.trial))
    return reuse_twin(trial, frozen)
