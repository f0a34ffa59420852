"""`conf/sweep/*.yaml` checked and turned into `SweepSettings`, before any study is touched.

Like `config.TrainSchema` for the training keys, `SweepSchema` fixes each sweep key's type
(a string where an integer belongs fails naming the key) and `RANGE_CHECKS` each key's
values; `parse_settings` then keeps only what spans several keys (the grace period against
the heartbeat) and the two nested lists a schema cannot type: the objectives and the
search space, whose leaves are plain training-config paths. Every problem is one
`ConfigError` line: key, value, what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from mlpsweep.config import METRICS, ConfigError
from mlpsweep.storage import mask_url

if TYPE_CHECKING:
    import optuna

PARAMETER_COUNT = "parameter_count"
OBJECTIVE_METRICS = (*METRICS, PARAMETER_COUNT)
NOT_REPRODUCED = ("sweep", "output_dir", "quiet")  # top-level keys that do not shape training
SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "nsgaii": "NSGAIISampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
    "cmaes": "CmaEsSampler",
    "grid": "GridSampler",  # built by mlpsweep.sweep.grid from sweep.space, not from arguments
}
GRID_SAMPLER = "grid"
GRID_LIMIT = 10_000  # cells; the full default map is 256
PRUNERS = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
    "none": "NopPruner",
}


@dataclass
class SweepSchema:
    """The types of `cfg.sweep`; the nested objectives, space, sampler and pruner are checked
    by `parse_settings` (their keys are the user's: config paths and Optuna arguments)."""

    study_name: str = MISSING
    storage: Optional[str] = None  # noqa: UP045 (OmegaConf's schema needs typing.Optional)
    n_trials: Optional[int] = MISSING  # noqa: UP045 (null: the grid's size, grid sampler only)
    workers: int = MISSING
    batch: int = MISSING
    output_dir: str = MISSING
    objectives: Any = None
    space: Any = None
    sampler: Any = None
    pruner: Any = None
    heartbeat_interval: int = MISSING
    grace_period: int = MISSING
    max_retry: int = MISSING
    max_members: int = 32  # a grid cell's members over all its rounds (sweep=grid)
    # true: sweep.storage's SQLite file is on a file system every launcher job reaches
    storage_shared: bool = False


Check = tuple[str, Callable[[Any], bool], str]

RANGE_CHECKS: tuple[Check, ...] = (
    ("study_name", lambda name: bool(name) and "/" not in name, "a non-empty name without '/'"),
    ("n_trials", lambda count: count is None or count >= 1, "an integer >= 1"),
    ("workers", lambda count: count >= 1, "an integer >= 1"),
    ("batch", lambda count: count >= 1, "an integer >= 1 (1 = one trial at a time)"),
    ("heartbeat_interval", lambda seconds: seconds >= 1, "an integer >= 1"),
    ("grace_period", lambda seconds: seconds >= 1, "an integer >= 1"),
    ("max_retry", lambda count: count >= 0, "an integer >= 0"),
    ("max_members", lambda count: count >= 1, "an integer >= 1"),
)
GRID_KEY_LIMIT = 3  # hidden x layers and one facet: a map, curves and an answer per value


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
            return trial.suggest_int(
                self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        if self.kind == "float":
            return trial.suggest_float(
                self.path, float(self.low), float(self.high), step=self.step, log=self.log
            )
        return trial.suggest_categorical(self.path, list(self.choices))

    def grid_count(self) -> int:
        """How many values `grid_values` gives, counted without listing them (a tiny float
        step must fail the size check, not fill the memory)."""
        if self.kind == "categorical":
            return len(self.choices)
        low, high, step = self._grid_axis()
        return int((high - low) // step) + 1

    def grid_values(self) -> tuple[Any, ...]:
        """Every value a grid trains: an int every integer of [low, high] (by `step` if
        given; `log` only shapes sampling, so a grid ignores it), a float low..high by its
        `step` as exact decimals (0.1 + 0.2 is 0.3 here), a categorical its choices."""
        if self.kind == "categorical":
            return self.choices
        low, _, step = self._grid_axis()
        cast = int if self.kind == "int" else float
        return tuple(cast(low + index * step) for index in range(self.grid_count()))

    def _grid_axis(self) -> tuple[Decimal, Decimal, Decimal]:
        where = f"sweep.space.{self.path}"
        if self.step is None and self.kind == "float":
            raise ConfigError(
                f"{where}: a grid over a float needs a step, e.g. {where}.step=0.01 "
                f"(low={self.low}, high={self.high})"
            )
        step = 1 if self.step is None else self.step
        valid = isinstance(step, int | float) and not isinstance(step, bool) and step > 0
        if not valid or (self.kind == "int" and not float(step).is_integer()):
            kind = "an integer" if self.kind == "int" else "a number"
            raise ConfigError(f"{where}.step={step!r}: must be {kind} > 0")
        return Decimal(str(self.low)), Decimal(str(self.high)), Decimal(str(step))


@dataclass(frozen=True)
class SweepSettings:
    study_name: str
    storage_url: str
    study_dir: Path
    n_trials: int
    workers: int
    batch: int
    objectives: tuple[Objective, ...]
    space: tuple[ParamSpec, ...]
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    heartbeat_interval: int
    grace_period: int
    max_retry: int
    # the grid's rounds (`sweep.rounds`): members per cell at most, per trial, seed, fit bar
    max_members: int = 32
    ensemble: int = 1
    seed: int = 0
    fit_val_acc: float = 0.99

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def storage_display(self) -> str:
        return mask_url(self.storage_url)

    @property
    def is_postgres(self) -> bool:
        return self.storage_url.startswith("postgresql")


def parse_settings(cfg: DictConfig) -> SweepSettings:
    """Check `cfg.sweep` and resolve defaults; every problem is one ConfigError line."""
    if cfg.get("sweep") is None:
        raise ConfigError(
            "sweep: no sweep config selected (use sweep=default, sweep=pareto or sweep=grid)"
        )
    sweep = typed_sweep(cfg.sweep)
    study_dir = Path(sweep.output_dir) / sweep.study_name
    storage = sweep.storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    if sweep.grace_period <= sweep.heartbeat_interval:
        raise ConfigError(
            f"sweep.grace_period={sweep.grace_period}: must exceed "
            f"sweep.heartbeat_interval={sweep.heartbeat_interval}"
        )
    _check_storage_url(storage)
    space = parse_space(cfg, sweep.space)
    sampler = _sampler_settings(sweep.sampler)
    _check_grid_rounds(cfg, sweep, space, sampler)
    return SweepSettings(
        study_name=sweep.study_name,
        storage_url=storage,
        study_dir=study_dir,
        n_trials=resolve_n_trials(sweep.n_trials, space, sampler),
        workers=sweep.workers,
        batch=sweep.batch,
        objectives=parse_objectives(sweep.objectives),
        space=space,
        sampler=sampler,
        pruner=_plain_dict(sweep.pruner, "sweep.pruner", PRUNERS),
        heartbeat_interval=sweep.heartbeat_interval,
        grace_period=sweep.grace_period,
        max_retry=sweep.max_retry,
        max_members=sweep.max_members,
        ensemble=_ensemble(cfg),
        seed=int(OmegaConf.select(cfg, "seed", default=0)),
        fit_val_acc=float(OmegaConf.select(cfg, "trainer.fit_val_acc", default=0.99)),
    )


def _ensemble(cfg: DictConfig) -> int:
    return int(OmegaConf.select(cfg, "model.ensemble", default=1))


def _check_grid_rounds(
    cfg: DictConfig, sweep: Any, space: tuple[ParamSpec, ...], sampler: dict[str, Any]
) -> None:
    """A grid's members per cell start at model.ensemble, so the cap cannot be below it; a
    grid over more than 3 keys has no map, curves and answer per value to show."""
    if sampler["name"] != GRID_SAMPLER:
        return
    if sweep.max_members < _ensemble(cfg):
        raise ConfigError(
            f"sweep.max_members={sweep.max_members}: must be >= model.ensemble="
            f"{_ensemble(cfg)} (a cell's first trial already has that many members)"
        )
    if len(space) > GRID_KEY_LIMIT:
        keys = ", ".join(spec.path for spec in space)
        raise ConfigError(
            f"sweep.space: a grid searches at most {GRID_KEY_LIMIT} keys (model.hidden, "
            f"model.layers and one facet), not {len(space)} ({keys})"
        )


def typed_sweep(node: Any) -> Any:
    """`cfg.sweep` merged into `SweepSchema`: types first, then each key's range.

    Interpolations (`seed: ${seed}`) are resolved first, against the whole config.
    """
    resolved = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    try:
        typed = OmegaConf.merge(OmegaConf.structured(SweepSchema), resolved)
    except OmegaConfBaseException as error:
        key = str(getattr(error, "full_key", "") or "?")
        if isinstance(error, ConfigKeyError):
            raise ConfigError(_unknown_key_message(key)) from error
        value = OmegaConf.select(node, key, default="?") if key != "?" else "?"
        raise ConfigError(f"sweep.{key}={value!r}: expected {_expected_type(key)}") from error
    missing = sorted(OmegaConf.missing_keys(typed))  # a key deleted with `~`
    if missing:
        raise ConfigError(f"sweep.{missing[0]} has no value: set it as sweep.{missing[0]}=<value>")
    for key, allowed, description in RANGE_CHECKS:
        value = typed[key]
        if not allowed(value):
            raise ConfigError(f"sweep.{key}={value!r}: must be {description}")
    return typed


def _expected_type(key: str) -> str:
    declared = typing.get_type_hints(SweepSchema).get(key)
    kinds = [kind for kind in typing.get_args(declared) if kind is not type(None)] or [declared]
    names = {int: "an integer", str: "a string"}
    return names.get(kinds[0], "a value of the right type")


def _unknown_key_message(key: str) -> str:
    known = [schema_field.name for schema_field in dataclasses.fields(SweepSchema)]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean sweep.{close[0]}? " if close else ""
    return (
        f"unknown key 'sweep.{key}': no such sweep setting; {hint}"
        "`python src/sweep.py --cfg` lists all keys"
    )


def _check_storage_url(storage: str) -> None:
    if "://" not in storage or not storage.split("://")[0]:
        raise ConfigError(
            f"sweep.storage={mask_url(storage)!r}: expected a database URL such as "
            "sqlite:///path/study.db or postgresql://user:password@host:5432/db"
        )


def _plain_dict(node: Any, key: str, known: dict[str, str]) -> dict[str, Any]:
    settings = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else None
    if not isinstance(settings, dict) or settings.get("name") not in known:
        name = settings.get("name") if isinstance(settings, dict) else node
        raise ConfigError(f"{key}.name={name!r}: must be one of {', '.join(known)}")
    return settings


def resolve_n_trials(
    n_trials: int | None, space: tuple[ParamSpec, ...], sampler: dict[str, Any]
) -> int:
    """The budget: a grid's defaults to its size (null), may be narrowed, never exceeded
    (the extra trials would train cells twice); other samplers need a number."""
    if sampler["name"] != GRID_SAMPLER:
        if n_trials is None:
            raise ConfigError(
                f"sweep.n_trials=null: null means the grid's size, only with "
                f"sweep/sampler={GRID_SAMPLER}; sweep/sampler={sampler['name']} needs an "
                "integer >= 1"
            )
        return n_trials
    arguments = sorted(key for key in sampler if key != "name")
    if arguments:
        raise ConfigError(
            f"sweep.sampler.{arguments[0]}: the grid sampler takes no arguments (its order is "
            "fixed, so every worker walks the same grid)"
        )
    size = grid_size(space)
    if n_trials is not None and n_trials > size:
        raise ConfigError(
            f"sweep.n_trials={n_trials}: larger than the grid's {size} cells "
            f"({grid_shape(space)}); leave it null to train the whole grid"
        )
    return size if n_trials is None else n_trials


def grid_size(space: tuple[ParamSpec, ...]) -> int:
    """The number of cells a grid over `space` trains; over `GRID_LIMIT` is refused."""
    size = math.prod(spec.grid_count() for spec in space)
    if size > GRID_LIMIT:
        raise ConfigError(
            f"sweep.space: the grid {grid_shape(space)} has {size:,} cells, over the "
            f"{GRID_LIMIT:,} allowed; narrow a key's low/high or give it a larger step"
        )
    return size


def grid_shape(space: tuple[ParamSpec, ...]) -> str:
    """`model.hidden 64 x model.layers 4`: each key with its number of values."""
    return " x ".join(f"{spec.path} {spec.grid_count()}" for spec in space)


def _sampler_settings(node: Any) -> dict[str, Any]:
    """`sweep.sampler`; its seed must be an integer, since each worker adds its number to it."""
    sampler = _plain_dict(node, "sweep.sampler", SAMPLERS)
    seed = sampler.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"sweep.sampler.seed={seed!r}: must be an integer >= 0 or null")
    return sampler


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
                f"sweep.objectives[{index}].metric={metric!r}: "
                f"must be one of {', '.join(OBJECTIVE_METRICS)}"
            )
        if direction not in ("maximize", "minimize"):
            raise ConfigError(
                f"sweep.objectives[{index}].direction={direction!r}: must be maximize or minimize"
            )
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
            raise ConfigError(
                f"sweep.space.{path}={value!r}: expected {{type: int|float|categorical, ...}}"
            )
        if "type" in value:
            yield path, value
        else:
            yield from _space_leaves(value, f"{path}.")


def _leaf_spec(cfg: DictConfig, path: str, leaf: dict[str, Any]) -> ParamSpec:
    where = f"sweep.space.{path}"
    is_training_key = OmegaConf.select(cfg, path, default=_MISSING) is not _MISSING
    if path.split(".")[0] in NOT_REPRODUCED or not is_training_key:
        raise ConfigError(
            f"{where}: unknown key '{path}': not a training setting "
            "(see python src/train.py --cfg)"
        )
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
        raise ConfigError(
            f"{where}: low={low!r}, high={high!r}: both must be integers for type int"
        )
    if low > high:
        raise ConfigError(f"{where}: low={low} > high={high}: low must not exceed high")
    if log and low <= 0:
        raise ConfigError(f"{where}.low={low}: must be > 0 with log: true")
    return ParamSpec(path, kind, low, high, log, leaf.get("step"))


_MISSING = object()
