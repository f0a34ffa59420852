"""One trial's life outside the training itself: its config, its folder, how it ended.

A trial's crash must not end the sweep, so every outcome becomes an Optuna state (complete,
pruned, failed with its reason kept in `fail_reason`); only Ctrl-C escapes. What the
summary needs later (epochs, parameter count, metrics) is copied into the trial's user
attributes, so it survives when the trial folder is on another machine. The training is
`sweep.batch`'s: a trial is always trained as a member of a batch, of one or more trials.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from mlpsweep.config import ConfigError
from mlpsweep.sweep.rounds import MEMBER_VALUES_ATTR, round_overrides
from mlpsweep.sweep.settings import PARAMETER_COUNT, SweepSettings
from mlpsweep.sweep.trial_config import (
    completed_twin,
    config_fingerprint,
    reproduce_command,
    reuse_twin,
    trial_config,
)

Outcome = tuple[TrialState, "list[float] | None"]


WAITS_FOR_ATTR = "waits_for"  # a repeat's running twin, while it waits for its result


@dataclass
class PreparedTrial:
    """A trial whose config composed and that needs training, or its running twin's result.

    `waits_for` is the number of a RUNNING trial with the very same config (asked by this
    or another worker a moment before): the repeat takes that trial's result instead of
    training the same network again, or trains it after all if the twin dies.
    """

    trial: optuna.Trial
    cfg: DictConfig
    fingerprint: str
    run_dir: Path | None = None
    waits_for: int | None = None


def trial_dir(settings: SweepSettings, number: int) -> Path:
    """`trials/<number>/`; a leftover folder of a deleted study is moved aside, not lost."""
    folder = settings.study_dir / "trials" / str(number)
    if folder.exists():
        folder.rename(folder.with_name(f"{number}.old-{int(time.time())}"))
    folder.mkdir(parents=True)
    return folder


def prepare(
    trial: optuna.Trial, settings: SweepSettings, base_overrides: Sequence[str]
) -> PreparedTrial | Outcome:
    """Sample the trial's parameters and compose its config; an outcome if no training is due.

    A config the schema rejects fails the trial; a config already completed by another
    trial (training is seeded and deterministic) reuses that twin's result; one still
    training elsewhere makes this trial a repeat that waits for it (`running_twin`).
    Called under the worker's ask lock, so two workers asking at once see each other's
    configs: the second of two alike waits for the first instead of training it again.
    """
    params = {spec.path: spec.suggest(trial) for spec in settings.space}
    try:
        cfg = trial_config(base_overrides, params | round_overrides(trial))
    except ConfigError as error:
        return failed(trial, f"config rejected: {error}")
    trial.set_user_attr("reproduce", reproduce_command(cfg))
    fingerprint = config_fingerprint(cfg)
    trial.set_user_attr("config_fingerprint", fingerprint)
    twin = completed_twin(trial.study, fingerprint)
    if twin is not None:
        return reuse_twin(trial, twin)
    running = running_twin(trial, fingerprint)
    if running is not None:
        trial.set_user_attr(WAITS_FOR_ATTR, running)
    return PreparedTrial(trial, cfg, fingerprint, waits_for=running)


def running_twin(trial: optuna.Trial, fingerprint: str) -> int | None:
    """The first RUNNING trial (not this one) with this config that trains it itself."""
    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trains_itself = other.user_attrs.get(WAITS_FOR_ATTR) is None
        same = other.user_attrs.get("config_fingerprint") == fingerprint
        if same and trains_itself and other.number != trial.number:
            return other.number
    return None


def twin_outcome(trial: optuna.Trial, twin: FrozenTrial) -> Outcome | None:
    """A repeat's outcome from its finished twin; None if the repeat must train after all.

    A complete twin's result is taken, a pruned twin's verdict too (the same curve would be
    pruned at the same step). A failed twin may have failed for its worker's sake (killed,
    interrupted, the storage gone), not the config's: the repeat trains it itself.
    """
    if twin.state == TrialState.COMPLETE:
        return reuse_twin(trial, twin)
    trial.set_user_attr(WAITS_FOR_ATTR, None)
    if twin.state == TrialState.PRUNED:
        trial.set_user_attr("duplicate_of", twin.number)
        return TrialState.PRUNED, None
    return None


def open_folder(prepared: PreparedTrial, settings: SweepSettings) -> Path:
    """Create the trial's folder and record it in the trial, just before training."""
    prepared.run_dir = trial_dir(settings, prepared.trial.number)
    prepared.trial.set_user_attr("run_dir", str(prepared.run_dir.resolve()))
    return prepared.run_dir


def outcome_of(trial: optuna.Trial, result: object, settings: SweepSettings) -> Outcome:
    """The Optuna state and values of a trained trial, from its `training.RunResult`."""
    from mlpsweep.training import RunResult

    assert isinstance(result, RunResult)
    record_run(trial, result)
    if result.status == "pruned":
        return TrialState.PRUNED, None
    if result.status != "completed":
        return failed(trial, result.error or result.status)
    values = [
        float(result.parameter_count)
        if objective.metric == PARAMETER_COUNT
        else result.metrics[objective.metric].mean
        for objective in settings.objectives
    ]
    return TrialState.COMPLETE, values


def failed(trial: optuna.Trial, reason: str) -> Outcome:
    trial.set_user_attr("fail_reason", reason)
    return TrialState.FAIL, None


def record_run(trial: optuna.Trial, result: object) -> None:
    """Copy the run's essentials (metrics.json's, without members) into the trial's attributes,
    for the summary and plots."""
    from mlpsweep.training import RunResult

    assert isinstance(result, RunResult)
    trial.set_user_attr("epochs", result.epochs)
    trial.set_user_attr("parameter_count", result.parameter_count)
    trial.set_user_attr("duration_s", result.duration_s)
    without_members = {
        key: {"mean": summary.mean, "min": summary.min, "max": summary.max, "std": summary.std}
        for key, summary in result.metrics.items()
    }
    trial.set_user_attr("metrics", without_members)
    # each member's epoch of fitting (None: it did not), for the summary and the benchmarks
    trial.set_user_attr("epochs_to_fit", list(result.epochs_to_fit))
    # the members' own values, which the grid's rounds pool (`sweep.rounds`) wherever the
    # trial's folder is
    trial.set_user_attr(MEMBER_VALUES_ATTR, {
        key: list(result.metrics[key].members)
        for key in ("train/acc", "val/acc") if key in result.metrics
    })
