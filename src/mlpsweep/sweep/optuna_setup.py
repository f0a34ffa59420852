"""The Optuna objects a sweep runs on, built from `SweepSettings`.

Optuna does the searching (samplers, pruners, RDB storage, heartbeat, retry of trials whose
worker died); this module only builds those objects, so that a wrong argument in
`conf/sweep/sampler/*.yaml` is one `ConfigError` line before any worker starts.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna

from mlpsweep.config import METRICS, ConfigError
from mlpsweep.storage import StorageError, open_rdb
from mlpsweep.sweep.grid import check_study_grid, grid_sampler
from mlpsweep.sweep.settings import GRID_SAMPLER, PRUNERS, SAMPLERS, SweepSettings


def open_sweep_storage(settings: SweepSettings) -> optuna.storages.RDBStorage:
    """The RDB storage the sweep writes to, with heartbeat and retry of dead workers' trials.

    An SQLite file's folder is created; a failure to open is the user's `sweep.storage` error.
    """
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # ask/tell with a heartbeat thread of our own is what Study.optimize does inside
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    if settings.storage_url.startswith("sqlite:///"):
        database = Path(settings.storage_url.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry)
    try:
        return open_rdb(
            settings.storage_url,
            heartbeat_interval=settings.heartbeat_interval,
            grace_period=settings.grace_period,
            heartbeat_stale_trial_callback=retry,
        )
    except StorageError as error:
        raise ConfigError(
            f"sweep.storage={settings.storage_display!r}: cannot open ({error})"
        ) from error


def load_or_create_study(
    settings: SweepSettings, storage: optuna.storages.BaseStorage
) -> optuna.Study:
    """Create the study once (before any worker starts), or load it and check it matches."""
    directions = [objective.direction for objective in settings.objectives]
    study = optuna.create_study(
        study_name=settings.study_name, storage=storage, directions=directions, load_if_exists=True
    )
    existing = [direction.name.lower() for direction in study.directions]
    if existing != directions:
        raise ConfigError(
            f"sweep.objectives: study '{settings.study_name}' already exists with directions "
            f"{existing}, not {directions}; choose another sweep.study_name"
        )
    if not study.metric_names:
        study.set_metric_names([objective.metric for objective in settings.objectives])
    if settings.sampler["name"] == GRID_SAMPLER:
        check_study_grid(study, settings)
    return study


def worker_study(
    settings: SweepSettings, storage: optuna.storages.RDBStorage, worker_index: int
) -> optuna.Study:
    """The study as worker `worker_index` sees it: its own seeded sampler, the pruner."""
    return optuna.load_study(
        study_name=settings.study_name,
        storage=storage,
        sampler=make_sampler(settings, worker_index),
        pruner=make_pruner(settings),
    )


def make_sampler(settings: SweepSettings, worker_index: int) -> optuna.samplers.BaseSampler:
    """The configured sampler; each worker gets its own seed so they do not propose alike.

    The grid is the exception: it takes no seed, since all workers (and launchers) of a grid
    study must walk the same order for trial n to mean the same cell everywhere.
    """
    if settings.sampler["name"] == GRID_SAMPLER:
        return grid_sampler(settings)
    kwargs = {key: value for key, value in settings.sampler.items() if key != "name"}
    if kwargs.get("seed") is not None:
        kwargs["seed"] = int(kwargs["seed"]) + worker_index
    return _build(optuna.samplers, SAMPLERS[settings.sampler["name"]], kwargs, "sweep.sampler")


def make_pruner(settings: SweepSettings) -> optuna.pruners.BasePruner:
    kwargs = {key: value for key, value in settings.pruner.items() if key != "name"}
    return _build(optuna.pruners, PRUNERS[settings.pruner["name"]], kwargs, "sweep.pruner")


def _build(module: Any, class_name: str, kwargs: dict[str, Any], key: str) -> Any:
    try:
        return getattr(module, class_name)(**kwargs)
    except (TypeError, ValueError) as error:
        arguments = ", ".join(f"{name}={value!r}" for name, value in kwargs.items())
        raise ConfigError(f"{key}: {class_name}({arguments}) rejected: {error}") from error


def pruning_enabled(settings: SweepSettings) -> bool:
    """Optuna prunes single-objective studies only, on a metric reported at validation."""
    return (
        not settings.multi_objective
        and settings.pruner["name"] != "none"
        and settings.objectives[0].metric in METRICS
    )
