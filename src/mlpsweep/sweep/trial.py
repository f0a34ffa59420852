"""One trial: compose its config, train it in its own folder, and say how it ended.

A trial's crash must not end the sweep, so every outcome becomes an Optuna state (complete,
pruned, failed with its reason kept in `fail_reason`); only Ctrl-C escapes. What the
summary needs later (epochs, parameter count, metrics) is copied into the trial's user
attributes, so it survives when the trial folder is on another machine.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import TrialState

from mlpsweep.config import ConfigError, compose
from mlpsweep.sweep.optuna_setup import pruning_enabled
from mlpsweep.sweep.settings import PARAMETER_COUNT, SweepSettings
from mlpsweep.sweep.trial_config import (
    completed_twin,
    config_fingerprint,
    reproduce_command,
    reuse_twin,
    trial_overrides,
)


def trial_dir(settings: SweepSettings, number: int) -> Path:
    """`trials/<number>/`; a leftover folder of a deleted study is moved aside, not lost."""
    folder = settings.study_dir / "trials" / str(number)
    if folder.exists():
        folder.rename(folder.with_name(f"{number}.old-{int(time.time())}"))
    folder.mkdir(parents=True)
    return folder


def run_trial(
    trial: optuna.Trial, settings: SweepSettings, base_overrides: Sequence[str]
) -> tuple[TrialState, list[float] | None]:
    """Compose the trial's config, train it, and say how it ended (never raises but Ctrl-C)."""
    from optuna_integration import PyTorchLightningPruningCallback

    from mlpsweep.model import NonFiniteLossError
    from mlpsweep.training import train

    params = {spec.path: spec.suggest(trial) for spec in settings.space}
    trial.set_user_attr("host", socket.gethostname())
    try:
        cfg = compose(trial_overrides(base_overrides, params))
    except ConfigError as error:
        return _failed(trial, f"config rejected: {error}")
    trial.set_user_attr("reproduce", reproduce_command(cfg))
    fingerprint = config_fingerprint(cfg)
    trial.set_user_attr("config_fingerprint", fingerprint)
    twin = completed_twin(trial.study, fingerprint)
    if twin is not None:
        return reuse_twin(trial, twin)
    run_dir = trial_dir(settings, trial.number)
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    first_metric = settings.objectives[0].metric
    callbacks = (
        [PyTorchLightningPruningCallback(trial, monitor=first_metric)]
        if pruning_enabled(settings)
        else []
    )
    try:
        result = train(
            cfg, run_dir, extra_callbacks=callbacks, progress_label=f"trial {trial.number}"
        )
    except optuna.TrialPruned:
        _record_run(trial, run_dir)
        return TrialState.PRUNED, None
    except NonFiniteLossError as error:
        _record_run(trial, run_dir)
        return _failed(trial, str(error))
    except Exception as error:  # a trial's crash must not end the sweep; its reason is kept
        return _failed(trial, f"{type(error).__name__}: {error}")
    _record_run(trial, run_dir)
    values = [
        float(result.parameter_count)
        if objective.metric == PARAMETER_COUNT
        else result.metrics[objective.metric].mean
        for objective in settings.objectives
    ]
    return TrialState.COMPLETE, values


def _failed(trial: optuna.Trial, reason: str) -> tuple[TrialState, None]:
    trial.set_user_attr("fail_reason", reason)
    return TrialState.FAIL, None


def _record_run(trial: optuna.Trial, run_dir: Path) -> None:
    """Copy the run's metrics.json essentials into the trial, for the summary and plots."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return
    data = json.loads(path.read_text())
    trial.set_user_attr("epochs", data["epochs"])
    trial.set_user_attr("parameter_count", data["parameter_count"])
    trial.set_user_attr("duration_s", data["duration_s"])
    without_members = {
        key: {stat: value for stat, value in summary.items() if stat != "members"}
        for key, summary in data["metrics"].items()
    }
    trial.set_user_attr("metrics", without_members)
