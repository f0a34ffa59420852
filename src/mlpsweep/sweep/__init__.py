"""The Optuna search: one process is one worker looping ask -> train -> tell.

One concern per module, imported in this order (arrows one way):

- `settings`: `conf/sweep/*.yaml` typed and checked into `SweepSettings`;
- `trial_states`: the state vocabulary the sweep counts with and the summary shows;
- `optuna_private`: the few private Optuna calls, each named and guarded by a test;
- `grid`: `sweep/sampler=grid`, Optuna's GridSampler over `sweep.space` in a fixed order;
- `locks`: the file lock (one machine) or advisory lock (PostgreSQL) that serialises
  creating the storage and study, handing out worker numbers, and count-then-ask;
- `fixed_settings`: the study's fixed training settings, stored once, compared on resume;
- `optuna_setup`: storage, study, sampler and pruner built from the settings, and the
  study's worker numbers (so launchers on several machines seed their workers apart);
- `trial_config`: a trial's overrides, reproduce command, fingerprint, twin reuse;
- `trial`: one trial's config, folder and outcome as an Optuna state;
- `batch`: the asked trials trained as one network, each told as it leaves;
- `liveness`: whose process trains a running trial; workers that end with their launcher;
- `outage`: the storage going away: each call waits it out a while, then one line;
- `worker`: ask a batch -> train -> tell, and wait for trials running elsewhere;
- `launcher`: the study created once, the workers, the progress bar, best.yaml;
- `jobs`: the workers as jobs of a Hydra launcher (`-m hparams_search=arch hydra/launcher=...`).

The names below are loaded on first use (PEP 562), so that `mlpsweep.summary` can import
`mlpsweep.sweep.trial_states` and `settings` without importing the launcher, the worker
and `fcntl` through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlpsweep.sweep.launcher import launch, write_study_pointer
    from mlpsweep.sweep.optuna_setup import (
        load_or_create_study,
        open_sweep_storage,
        pruning_enabled,
    )
    from mlpsweep.sweep.report import report_best, write_best_yaml
    from mlpsweep.sweep.settings import (
        PARAMETER_COUNT,
        Objective,
        ParamSpec,
        SweepSettings,
        parse_settings,
    )
    from mlpsweep.sweep.trial_states import budget_used, retried_numbers, state_counts, state_name
    from mlpsweep.sweep.worker import run_trials

_HOME = {
    "launch": "launcher",
    "report_best": "report",
    "write_best_yaml": "report",
    "write_study_pointer": "launcher",
    "load_or_create_study": "optuna_setup",
    "open_sweep_storage": "optuna_setup",
    "pruning_enabled": "optuna_setup",
    "PARAMETER_COUNT": "settings",
    "Objective": "settings",
    "ParamSpec": "settings",
    "SweepSettings": "settings",
    "parse_settings": "settings",
    "budget_used": "trial_states",
    "retried_numbers": "trial_states",
    "state_counts": "trial_states",
    "state_name": "trial_states",
    "run_trials": "worker",
}
__all__ = [
    "Objective",
    "PARAMETER_COUNT",
    "ParamSpec",
    "SweepSettings",
    "budget_used",
    "launch",
    "load_or_create_study",
    "open_sweep_storage",
    "parse_settings",
    "pruning_enabled",
    "report_best",
    "retried_numbers",
    "run_trials",
    "state_counts",
    "state_name",
    "write_best_yaml",
    "write_study_pointer",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
