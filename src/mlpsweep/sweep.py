"""The Optuna search: one process is one worker looping ask -> train -> tell.

Optuna does the searching (samplers, pruners, RDB storage, heartbeat, retry of trials
whose worker died); this module only turns `conf/sweep/*.yaml` into those objects,
composes each trial's training config with Hydra, and keeps the study at exactly
`sweep.n_trials` finished trials however many workers (or machines) share it: asking
for a trial happens under a lock (a file lock on one machine, a PostgreSQL advisory lock
across machines), after counting what is finished or under way.
"""

from __future__ import annotations

import fcntl
import functools
import socket
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from mlpsweep.config import METRICS, ConfigError, compose
from mlpsweep.storage import StorageError, mask_url, open_rdb

PARAMETER_COUNT = "parameter_count"
OBJECTIVE_METRICS = (*METRICS, PARAMETER_COUNT)
NOT_REPRODUCED = ("sweep", "output_dir", "quiet")
SAMPLERS = {
    "tpe": "TPESampler", "random": "RandomSampler", "nsgaii": "NSGAIISampler",
    "qmc": "QMCSampler", "gp": "GPSampler", "cmaes": "CmaEsSampler",
}
PRUNERS = {
    "median": "MedianPruner", "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner", "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner", "none": "NopPruner",
}


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str


@dataclass(frozen=True)
class ParamSpec:
    """One search-space entry: a plain config path and its distribution."""

    path: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.path, float(self.low), float(self.high), step=self.step, log=self.log)
        return trial.suggest_categorical(self.path, list(self.choices))


@dataclass(frozen=True)
class SweepSettings:
    study_name: str
    storage_url: str
    study_dir: Path
    n_trials: int
    workers: int
    objectives: tuple[Objective, ...]
    space: tuple[ParamSpec, ...]
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    heartbeat_interval: int
    grace_period: int
    max_retry: int

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def storage_display(self) -> str:
        return mask_url(self.storage_url)

    @property
    def is_postgres(self) -> bool:
        return self.storage_url.startswith("postgresql")


# ---- settings ------------------------------------------------------------------------


def parse_settings(cfg: DictConfig) -> SweepSettings:
    """Check `cfg.sweep` and resolve defaults; every problem is one ConfigError line."""
    if cfg.get("sweep") is None:
        raise ConfigError("sweep: no sweep config selected (use sweep=default or sweep=pareto)")
    sweep = cfg.sweep
    name = str(sweep.study_name)
    if not name or "/" in name:
        raise ConfigError(f"sweep.study_name={name!r}: must be a non-empty name without '/'")
    study_dir = Path(str(sweep.output_dir)) / name
    storage = sweep.storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    for key in ("n_trials", "workers", "heartbeat_interval", "grace_period"):
        _require_positive_int(f"sweep.{key}", sweep[key])
    _require_positive_int("sweep.max_retry", sweep.max_retry, allow_zero=True)
    if int(sweep.grace_period) <= int(sweep.heartbeat_interval):
        raise ConfigError(
            f"sweep.grace_period={sweep.grace_period}: must exceed sweep.heartbeat_interval={sweep.heartbeat_interval}"
        )
    if "://" not in str(storage) or not str(storage).split("://")[0]:
        raise ConfigError(
            f"sweep.storage={mask_url(str(storage))!r}: expected a database URL such as "
            "sqlite:///path/study.db or postgresql://user:password@host:5432/db"
        )
    return SweepSettings(
        study_name=name,
        storage_url=str(storage),
        study_dir=study_dir,
        n_trials=int(sweep.n_trials),
        workers=int(sweep.workers),
        objectives=parse_objectives(sweep.objectives),
        space=parse_space(cfg, sweep.space),
        sampler=_plain_dict(sweep.sampler, "sweep.sampler", SAMPLERS),
        pruner=_plain_dict(sweep.pruner, "sweep.pruner", PRUNERS),
        heartbeat_interval=int(sweep.heartbeat_interval),
        grace_period=int(sweep.grace_period),
        max_retry=int(sweep.max_retry),
    )


def _require_positive_int(key: str, value: Any, allow_zero: bool = False) -> None:
    lowest = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
        raise ConfigError(f"{key}={value!r}: must be an integer >= {lowest}")


def _plain_dict(node: Any, key: str, known: dict[str, str]) -> dict[str, Any]:
    settings = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else None
    if not isinstance(settings, dict) or settings.get("name") not in known:
        name = settings.get("name") if isinstance(settings, dict) else node
        raise ConfigError(f"{key}.name={name!r}: must be one of {', '.join(known)}")
    return settings


def parse_objectives(node: Any) -> tuple[Objective, ...]:
    items = OmegaConf.to_container(node, resolve=True) if node is not None else None
    if not isinstance(items, list) or not items:
        raise ConfigError("sweep.objectives: must be a non-empty list of {metric, direction}")
    objectives = []
    for index, item in enumerate(items):
        metric = item.get("metric") if isinstance(item, dict) else None
        direction = item.get("direction") if isinstance(item, dict) else None
        if metric not in OBJECTIVE_METRICS:
            raise ConfigError(
                f"sweep.objectives[{index}].metric={metric!r}: must be one of {', '.join(OBJECTIVE_METRICS)}"
            )
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"sweep.objectives[{index}].direction={direction!r}: must be maximize or minimize")
        objectives.append(Objective(metric, direction))
    return tuple(objectives)


def parse_space(cfg: DictConfig, node: Any) -> tuple[ParamSpec, ...]:
    """Walk `sweep.space` to its leaves (dicts with a `type`), each a config path."""
    tree = OmegaConf.to_container(node, resolve=True) if node is not None else None
    if not isinstance(tree, dict) or not tree:
        raise ConfigError("sweep.space: must name at least one config key to search")
    specs = [_leaf_spec(cfg, path, leaf) for path, leaf in _space_leaves(tree, "")]
    return tuple(specs)


def _space_leaves(tree: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if not isinstance(value, dict):
            raise ConfigError(f"sweep.space.{path}={value!r}: expected {{type: int|float|categorical, ...}}")
        if "type" in value:
            yield path, value
        else:
            yield from _space_leaves(value, f"{path}.")


def _leaf_spec(cfg: DictConfig, path: str, leaf: dict[str, Any]) -> ParamSpec:
    where = f"sweep.space.{path}"
    if path.split(".")[0] in NOT_REPRODUCED or OmegaConf.select(cfg, path, default=_MISSING) is _MISSING:
        raise ConfigError(f"{where}: unknown key '{path}': not a training setting (see python src/train.py --cfg)")
    kind = leaf["type"]
    if kind == "categorical":
        choices = leaf.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.choices={choices!r}: must be a non-empty list")
        return ParamSpec(path, kind, choices=tuple(choices))
    if kind not in ("int", "float"):
        raise ConfigError(f"{where}.type={kind!r}: must be int, float or categorical")
    low, high, log = leaf.get("low"), leaf.get("high"), bool(leaf.get("log", False))
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        raise ConfigError(f"{where}: low={low!r}, high={high!r}: both must be numbers")
    if kind == "int" and (not float(low).is_integer() or not float(high).is_integer()):
        raise ConfigError(f"{where}: low={low!r}, high={high!r}: both must be integers for type int")
    if low > high:
        raise ConfigError(f"{where}: low={low} > high={high}: low must not exceed high")
    if log and low <= 0:
        raise ConfigError(f"{where}.low={low}: must be > 0 with log: true")
    return ParamSpec(path, kind, low, high, log, leaf.get("step"))


_MISSING = object()


# ---- storage and study ---------------------------------------------------------------


def open_storage(settings: SweepSettings) -> optuna.storages.RDBStorage:
    """The RDB storage with heartbeat and retries; a failure to open is the user's error."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # ask/tell with a heartbeat thread of our own is what Study.optimize does inside
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    if settings.storage_url.startswith("sqlite:///"):
        Path(settings.storage_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return open_rdb(
            settings.storage_url,
            heartbeat_interval=settings.heartbeat_interval,
            grace_period=settings.grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry),
        )
    except StorageError as error:
        raise ConfigError(f"sweep.storage={settings.storage_display!r}: cannot open ({error})") from error


def load_or_create_study(settings: SweepSettings, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the study once (before any worker starts), or load it and check it matches."""
    directions = [objective.direction for objective in settings.objectives]
    study = optuna.create_study(
        study_name=settings.study_name, storage=storage, directions=directions, load_if_exists=True
    )
    existing = [d.name.lower() for d in study.directions]
    if existing != directions:
        raise ConfigError(
            f"sweep.objectives: study '{settings.study_name}' already exists with directions {existing}, "
            f"not {directions}; choose another sweep.study_name"
        )
    if not study.metric_names:
        study.set_metric_names([objective.metric for objective in settings.objectives])
    return study


def make_sampler(settings: SweepSettings, worker_index: int) -> optuna.samplers.BaseSampler:
    """The configured sampler; each worker gets its own seed so they do not propose alike."""
    kwargs = {k: v for k, v in settings.sampler.items() if k != "name"}
    if kwargs.get("seed") is not None:
        kwargs["seed"] = int(kwargs["seed"]) + worker_index
    return _build(optuna.samplers, SAMPLERS[settings.sampler["name"]], kwargs, "sweep.sampler")


def make_pruner(settings: SweepSettings) -> optuna.pruners.BasePruner:
    kwargs = {k: v for k, v in settings.pruner.items() if k != "name"}
    return _build(optuna.pruners, PRUNERS[settings.pruner["name"]], kwargs, "sweep.pruner")


def _build(module: Any, class_name: str, kwargs: dict[str, Any], key: str) -> Any:
    try:
        return getattr(module, class_name)(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{key}: {class_name}({_kwargs_text(kwargs)}) rejected: {error}") from error


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def pruning_enabled(settings: SweepSettings) -> bool:
    """Optuna prunes single-objective studies only, on a metric reported at validation."""
    return (
        not settings.multi_objective
        and settings.pruner["name"] != "none"
        and settings.objectives[0].metric in METRICS
    )


# ---- the trial budget ----------------------------------------------------------------


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials that died with their worker and were queued again (not counted)."""
    return {number for t in trials for number in t.system_attrs.get("retry_history", [])}


def budget_used(trials: Sequence[FrozenTrial]) -> int:
    """Trials that count toward n_trials: finished, running or queued; not the retried dead."""
    retried = retried_numbers(trials)
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried))


def state_name(trial: FrozenTrial, retried: set[int]) -> str:
    """complete, pruned, failed, running or waiting; a dead worker's re-queued trial is 'retried'."""
    if trial.state == TrialState.FAIL and trial.number in retried:
        return "retried"
    return trial.state.name.lower().replace("fail", "failed")


def state_counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    retried = retried_numbers(trials)
    counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "waiting": 0, "retried": 0}
    for trial in trials:
        counts[state_name(trial, retried)] += 1
    return counts


@contextmanager
def ask_lock(settings: SweepSettings, storage: optuna.storages.RDBStorage) -> Iterator[None]:
    """Serialise count-then-ask among all workers of the study.

    Several machines share only the database, so PostgreSQL takes an advisory lock; on one
    machine (SQLite) an flock on a file in the study folder does the same.
    """
    if settings.is_postgres:
        from sqlalchemy import text

        key = zlib.crc32(f"mlpsweep:{settings.study_name}".encode())
        with storage.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
        return
    settings.study_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.study_dir / ".ask.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def next_trial(study: optuna.Study, settings: SweepSettings, storage: optuna.storages.RDBStorage) -> optuna.Trial | None:
    """A new (or re-queued) trial if the study still needs one, else None."""
    with ask_lock(settings, storage):
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        queued = any(t.state == TrialState.WAITING for t in trials)  # ask() takes those first
        if not queued and budget_used(trials) >= settings.n_trials:
            return None
        return study.ask()


# ---- one trial -----------------------------------------------------------------------


def trial_overrides(base_overrides: Sequence[str], params: dict[str, Any]) -> list[str]:
    return [*base_overrides, *(f"{path}={_override_value(value)}" for path, value in params.items()), "quiet=true"]


def _override_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


@functools.cache
def default_training_config() -> dict[str, Any]:
    """`python src/train.py`'s config, composed once per worker (it never changes in a run)."""
    defaults = OmegaConf.to_container(compose([]), resolve=True)
    assert isinstance(defaults, dict)
    return defaults


def reproduce_command(trial_cfg: DictConfig) -> str:
    """`python src/train.py ...` with every training key that differs from the defaults."""
    defaults = default_training_config()
    chosen = OmegaConf.to_container(trial_cfg, resolve=True)
    assert isinstance(chosen, dict)
    changed = [
        f"{path}={_override_value(value)}"
        for path, value in _flatten(chosen)
        if path.split(".")[0] not in NOT_REPRODUCED and _lookup(defaults, path) != value
    ]
    return " ".join(["python src/train.py", *changed])


def _flatten(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _lookup(tree: dict[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


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
    callbacks = (
        [PyTorchLightningPruningCallback(trial, monitor=settings.objectives[0].metric)]
        if pruning_enabled(settings)
        else []
    )
    try:
        result = train(cfg, run_dir, extra_callbacks=callbacks, progress_label=f"trial {trial.number}")
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
        float(result.parameter_count) if o.metric == PARAMETER_COUNT else result.metrics[o.metric].mean
        for o in settings.objectives
    ]
    return TrialState.COMPLETE, values


def config_fingerprint(cfg: DictConfig) -> str:
    """A hash of everything that shapes training (not where it is written)."""
    import hashlib

    training = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in NOT_REPRODUCED}
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(training)).encode()).hexdigest()[:16]


def completed_twin(study: optuna.Study, fingerprint: str) -> FrozenTrial | None:
    """A complete trial with the very same training config, if the sampler proposed it again.

    Training is seeded and deterministic (one thread, same seed), so a repeat would only
    reproduce the twin's numbers: samplers over small integer spaces repeat often.
    """
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get("config_fingerprint") == fingerprint and "duplicate_of" not in trial.user_attrs:
            return trial
    return None


def reuse_twin(trial: optuna.Trial, twin: FrozenTrial) -> tuple[TrialState, list[float]]:
    """Complete `trial` with its twin's values and run folder instead of training again."""
    trial.set_user_attr("duplicate_of", twin.number)
    for key in ("run_dir", "epochs", "parameter_count", "metrics"):
        if key in twin.user_attrs:
            trial.set_user_attr(key, twin.user_attrs[key])
    trial.set_user_attr("duration_s", 0.0)
    return TrialState.COMPLETE, list(twin.values)


def _failed(trial: optuna.Trial, reason: str) -> tuple[TrialState, None]:
    trial.set_user_attr("fail_reason", reason)
    return TrialState.FAIL, None


def _record_run(trial: optuna.Trial, run_dir: Path) -> None:
    """Copy the run's metrics.json essentials into the trial, for the summary and plots."""
    import json

    path = run_dir / "metrics.json"
    if not path.exists():
        return
    data = json.loads(path.read_text())
    trial.set_user_attr("epochs", data["epochs"])
    trial.set_user_attr("parameter_count", data["parameter_count"])
    trial.set_user_attr("duration_s", data["duration_s"])
    trial.set_user_attr(
        "metrics", {key: {k: v for k, v in summary.items() if k != "members"} for key, summary in data["metrics"].items()}
    )


# ---- workers -------------------------------------------------------------------------


def worker_study(settings: SweepSettings, storage: optuna.storages.RDBStorage, worker_index: int) -> optuna.Study:
    """The study as worker `worker_index` sees it: its own seeded sampler, the pruner."""
    return optuna.load_study(
        study_name=settings.study_name,
        storage=storage,
        sampler=make_sampler(settings, worker_index),
        pruner=make_pruner(settings),
    )


def training_overrides(overrides: Sequence[str]) -> list[str]:
    """The command line minus the sweep's own keys: what every trial's config starts from."""
    return [o for o in overrides if not o.startswith("sweep.")]


def run_trials(
    study: optuna.Study,
    settings: SweepSettings,
    storage: optuna.storages.RDBStorage,
    base_overrides: Sequence[str],
    on_trial_end: Callable[[optuna.Study], None] | None = None,
) -> int:
    """Ask, train, tell, until the study has n_trials. Returns the trials this worker ran."""
    ran = 0
    while (trial := next_trial(study, settings, storage)) is not None:
        with optuna.storages._heartbeat.get_heartbeat_thread(trial._trial_id, storage):
            try:
                state, values = run_trial(trial, settings, base_overrides)
            except KeyboardInterrupt:
                _requeue_interrupted(study, trial, storage)
                raise
        study.tell(trial, values, state=state)
        ran += 1
        if on_trial_end is not None:
            on_trial_end(study)
    return ran


def _requeue_interrupted(study: optuna.Study, trial: optuna.Trial, storage: optuna.storages.RDBStorage) -> None:
    """Ctrl-C mid-trial: fail it and queue it again, as a dead worker's trial would be."""
    trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); queued again")
    study.tell(trial, state=TrialState.FAIL)
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        callback(study, study._storage.get_trial(trial._trial_id))


def worker_process_main(overrides: list[str], worker_index: int) -> None:
    """Entry of a spawned worker process: it composes and opens everything itself; quiet,
    and Ctrl-C ends it without a traceback."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        settings = parse_settings(compose(overrides))
        storage = open_storage(settings)
        run_trials(worker_study(settings, storage, worker_index), settings, storage, training_overrides(overrides))
    except KeyboardInterrupt:
        sys.exit(130)


# ---- the launcher --------------------------------------------------------------------


class SweepProgress:
    """One bar over the study's trials: finished, pruned, failed, and the best so far."""

    def __init__(self, settings: SweepSettings, enabled: bool) -> None:
        from tqdm import tqdm

        self.settings = settings
        self.bar = tqdm(
            total=settings.n_trials, desc=f"sweep {settings.study_name}", unit="trial",
            file=sys.stderr, disable=not enabled, dynamic_ncols=True,
        )

    def refresh(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)  # one read of the storage per refresh
        counts = state_counts(trials)
        self.bar.n = min(counts["complete"] + counts["pruned"] + counts["failed"], self.settings.n_trials)
        postfix = {"done": counts["complete"], "pruned": counts["pruned"], "failed": counts["failed"]}
        best = best_value_text(trials, self.settings)
        if best:
            postfix["best"] = best
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def best_value_text(trials: Sequence[FrozenTrial], settings: SweepSettings) -> str:
    """The first objective's best value among complete trials, for the progress bar."""
    values = [t.values[0] for t in trials if t.state == TrialState.COMPLETE]
    if not values:
        return ""
    first = settings.objectives[0]
    return f"{first.metric} {(max if first.direction == 'maximize' else min)(values):.4f}"


def launch(cfg: DictConfig, overrides: Sequence[str]) -> int:
    """Check everything, create the study once, run the workers, then report the best."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = parse_settings(cfg)
    _reject_fixed_search_keys(settings, overrides)
    storage = open_storage(settings)
    study = load_or_create_study(settings, storage)
    first_worker = worker_study(settings, storage, 0)  # a sampler or pruner argument error shows now
    settings.study_dir.mkdir(parents=True, exist_ok=True)
    write_study_pointer(settings)
    progress = SweepProgress(settings, enabled=not cfg.quiet)
    progress.refresh(study)
    try:
        if settings.workers == 1:
            run_trials(first_worker, settings, storage, training_overrides(overrides), on_trial_end=progress.refresh)
        else:
            run_worker_processes(settings, overrides, study, progress)
    finally:
        progress.refresh(study)
        progress.close()
    return report_best(study, settings)


def write_study_pointer(settings: SweepSettings) -> None:
    """`study.json`: how `make summary` finds this study's storage (password masked)."""
    import json

    pointer = {
        "study_name": settings.study_name,
        "storage": settings.storage_display,
        "storage_has_password": settings.storage_display != settings.storage_url,
        "objectives": [{"metric": o.metric, "direction": o.direction} for o in settings.objectives],
        "n_trials": settings.n_trials,
        "space": [spec.path for spec in settings.space],
    }
    (settings.study_dir / "study.json").write_text(json.dumps(pointer, indent=2) + "\n")


def _reject_fixed_search_keys(settings: SweepSettings, overrides: Sequence[str]) -> None:
    fixed = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    for spec in settings.space:
        if spec.path in fixed:
            raise ConfigError(f"{spec.path}: is searched (sweep.space) and cannot also be set on the command line")


def run_worker_processes(
    settings: SweepSettings, overrides: Sequence[str], study: optuna.Study, progress: SweepProgress
) -> None:
    """N worker processes on the same storage; this process only watches the study."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=worker_process_main, args=(list(overrides), index), name=f"worker-{index}")
        for index in range(settings.workers)
    ]
    for process in processes:
        process.start()
    try:
        while any(process.is_alive() for process in processes):
            for process in processes:
                process.join(timeout=1.0 / len(processes))
            progress.refresh(study)
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=30)
        raise
    failed = [p.name for p in processes if p.exitcode not in (0, None)]
    if failed:
        print(f"warning: {', '.join(failed)} ended with an error; re-run the command to resume", file=sys.stderr)


def report_best(study: optuna.Study, settings: SweepSettings) -> int:
    """Write best.yaml, print the Pareto front (if any) and the reproduce line; exit 1 if nothing completed."""
    trials = study.get_trials(deepcopy=False)
    counts = state_counts(trials)
    print(
        f"study {settings.study_name} ({settings.storage_display}): {counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['failed']} failed of sweep.n_trials={settings.n_trials}"
    )
    if not counts["complete"]:
        print("error: no trial completed; see the trials' fail_reason (make summary)", file=sys.stderr)
        return 1
    front = study.best_trials if settings.multi_objective else [study.best_trial]
    sign = 1 if settings.objectives[0].direction == "maximize" else -1
    best = max(front, key=lambda t: sign * t.values[0])  # on a front: the best first objective
    write_best_yaml(best, settings)
    if settings.multi_objective:
        print("Pareto front:")
        for trial in sorted(front, key=lambda t: t.values[1:]):
            print(f"  trial {trial.number}: {_values_text(trial, settings)}  {_params_text(trial)}")
    print(f"best trial {best.number}: {_values_text(best, settings)}  {_params_text(best)}")
    print(f"reproduce: {best.user_attrs.get('reproduce', '?')}")
    print(f"best config: {settings.study_dir / 'best.yaml'}")
    print(f"the full summary (which network fits, how sure): make summary STUDY={settings.study_dir}")
    return 0


def _values_text(trial: FrozenTrial, settings: SweepSettings) -> str:
    return ", ".join(f"{o.metric} {v:.4g}" for o, v in zip(settings.objectives, trial.values, strict=True))


def _params_text(trial: FrozenTrial) -> str:
    return " ".join(f"{k}={v}" for k, v in trial.params.items())


def write_best_yaml(trial: FrozenTrial, settings: SweepSettings) -> None:
    """The best trial's full resolved config (its run's config.yaml), written atomically."""
    import os

    source = Path(trial.user_attrs.get("run_dir", "")) / "config.yaml"
    target = settings.study_dir / "best.yaml"
    header = f"# best trial {trial.number} of study {settings.study_name}\n# reproduce: {trial.user_attrs.get('reproduce', '?')}\n"
    body = source.read_text() if source.exists() else "# (trial folder not on this machine)\n"
    partial = target.with_suffix(".yaml.tmp")
    partial.write_text(header + body)
    os.replace(partial, target)
