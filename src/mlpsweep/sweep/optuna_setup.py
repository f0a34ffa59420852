"""The Optuna objects a sweep runs on, built from `SweepSettings`.

Optuna does the searching (samplers, pruners, RDB storage, heartbeat, retry of trials whose
worker died); this module only builds those objects, so that a wrong argument in
`conf/sweep/sampler/*.yaml` is one `ConfigError` line before any worker starts.
"""

from __future__ import annotations

import time
import warnings
from contextlib import closing
from pathlib import Path
from typing import Any

import optuna

from mlpsweep.config import METRICS, ConfigError
from mlpsweep.storage import StorageError, open_rdb
from mlpsweep.sweep.grid import check_study_grid, grid_sampler
from mlpsweep.sweep.liveness import RetryAsFreshAttempt
from mlpsweep.sweep.outage import retry_during_outages
from mlpsweep.sweep.settings import GRID_SAMPLER, PRUNERS, SAMPLERS, SweepSettings


def open_sweep_storage(settings: SweepSettings) -> optuna.storages.RDBStorage:
    """The RDB storage the sweep writes to, with heartbeat and retry of dead workers' trials.

    An SQLite file's folder is created; a failure to open is the user's `sweep.storage` error.
    Once open, each call waits out an outage of up to `sweep.grace_period` (see `outage`).
    Optuna creates its tables on first open; if another command does the same at that
    instant (one without the launcher's `storage_lock`), the loser's insert collides, and
    opening again finds the tables made.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # ask/tell with a heartbeat thread of our own is what Study.optimize does inside
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    if settings.storage_url.startswith("sqlite:///"):
        database = Path(settings.storage_url.removeprefix("sqlite:///"))
        default = database == (settings.study_dir / "study.db").resolve()
        make_folder(database.parent, "sweep.output_dir" if default else "sweep.storage")
    retry = RetryAsFreshAttempt(max_retry=settings.max_retry)
    for attempt in range(1, SCHEMA_RACE_ATTEMPTS + 1):
        try:
            storage = open_rdb(
                settings.storage_url,
                heartbeat_interval=settings.heartbeat_interval,
                grace_period=settings.grace_period,
                heartbeat_stale_trial_callback=retry,
            )
            return retry_during_outages(storage, settings.grace_period, settings.storage_display)
        except StorageError as error:
            if attempt < SCHEMA_RACE_ATTEMPTS and _lost_schema_race(error):
                time.sleep(0.2 * attempt)
                continue
            raise ConfigError(
                f"sweep.storage={settings.storage_display!r}: cannot open ({error})"
            ) from error
    raise AssertionError("unreachable: the last attempt returns or raises")


SCHEMA_RACE_ATTEMPTS = 5


def _lost_schema_race(error: StorageError) -> bool:
    """Another process created Optuna's tables or version row at the same instant."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    cause = error.__cause__
    if isinstance(cause, IntegrityError):
        return True
    collided = isinstance(cause, OperationalError | ProgrammingError)
    return collided and "already exists" in str(cause)


def make_folder(folder: Path, key: str) -> Path | None:
    """`mkdir -p folder`, or one ConfigError line naming the key (read-only, /proc, a file).

    Returns the outermost folder it created (None if `folder` existed), so that a command
    failing right after can remove what it made.
    """
    missing = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"{key}: cannot create the folder {folder} ({reason}); choose a writable place"
        ) from error
    return missing[-1] if missing else None


def refuse_foreign_sqlite(settings: SweepSettings) -> None:
    """An existing SQLite file must be an Optuna storage (or empty): Optuna would otherwise
    add its tables to someone's database. It is only read, never written, here."""
    import sqlite3

    if not settings.storage_url.startswith("sqlite:///"):
        return
    database = Path(settings.storage_url.removeprefix("sqlite:///"))
    if not database.is_file() or database.stat().st_size == 0:
        return
    try:
        with closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.DatabaseError as error:
        raise ConfigError(
            f"sweep.storage={settings.storage_display!r}: {database} is not an SQLite "
            f"database ({error}); choose another sweep.storage or sweep.output_dir"
        ) from error
    tables = sorted(name for (name,) in rows)
    # only tables of Optuna's own schema: an Optuna storage, or one that another command
    # starting the same new study is creating right now (its tables appear one by one)
    if tables and not set(tables) <= OPTUNA_SCHEMA:
        raise ConfigError(
            f"sweep.storage={settings.storage_display!r}: {database} is a database but not an "
            f"Optuna storage (tables: {', '.join(tables[:5])}); it is left untouched: choose "
            "another sweep.storage or sweep.output_dir"
        )


OPTUNA_TABLES = {"alembic_version", "studies", "trials"}
# every table of Optuna's RDB schema (optuna/storages/_rdb/models.py)
OPTUNA_SCHEMA = OPTUNA_TABLES | {
    "version_info", "study_directions", "study_user_attributes", "study_system_attributes",
    "trial_params", "trial_values", "trial_intermediate_values", "trial_user_attributes",
    "trial_system_attributes", "trial_heartbeats",
}


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


WORKER_COUNTER_ATTR = "mlpsweep:workers_started"


def claim_worker_numbers(storage: optuna.storages.BaseStorage, study_name: str, count: int) -> int:
    """The first of `count` worker numbers no other worker of the study has had.

    The counter lives in the study, so launchers on several machines get different numbers,
    and so different sampler seeds; a fresh study's first launcher gets 0..count-1, hence
    the same seeds as `seed` gave before. Call under `locks.storage_lock`.
    """
    study_id = storage.get_study_id_from_name(study_name)
    first = int(storage.get_study_system_attrs(study_id).get(WORKER_COUNTER_ATTR, 0))
    storage.set_study_system_attr(study_id, WORKER_COUNTER_ATTR, first + count)
    return first


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
