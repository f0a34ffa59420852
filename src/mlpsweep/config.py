"""Compose the Hydra config from `conf/` and check it before anything is built.

Hydra composes (groups, overrides, unknown keys); a structured schema then fixes the types
(a string where a number belongs fails here, naming the key) and `check_ranges` the values
Lightning or torch would otherwise accept and misbehave on (`max_epochs=-1` trains
forever). Every problem becomes one `ConfigError` line: key, value, what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")  # logged per run; members' means


class ConfigError(ValueError):
    """A user's configuration mistake, worded as the one line they will see."""


@dataclass
class DataSchema:
    batch_size: int = MISSING
    shuffle: bool = MISSING
    normalize: bool = MISSING
    val_points: int = MISSING


@dataclass
class ModelSchema:
    hidden: int = MISSING
    layers: int = MISSING
    lr: float = MISSING
    ensemble: int = MISSING
    fused_adam: bool = MISSING


@dataclass
class TrainerSchema:
    max_epochs: int = MISSING
    val_every: int = MISSING
    threads: int = MISSING
    checkpoint: bool = MISSING
    stop_at_val_acc: Optional[float] = None  # noqa: UP045 (OmegaConf's schema needs typing.Optional)


@dataclass
class LoggerSchema:
    image_every: int = MISSING
    flush_every: int = MISSING
    pictures: bool = MISSING


@dataclass
class TrainSchema:
    data: DataSchema = field(default_factory=DataSchema)
    model: ModelSchema = field(default_factory=ModelSchema)
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    logger: LoggerSchema = field(default_factory=LoggerSchema)
    seed: int = MISSING
    quiet: bool = MISSING
    output_dir: str = MISSING
    ckpt_path: Optional[str] = None  # noqa: UP045
    sweep: Any = None


Check = tuple[str, Callable[[Any], bool], str]

RANGE_CHECKS: tuple[Check, ...] = (
    ("trainer.stop_at_val_acc", lambda v: v is None or 0 < v <= 1, "null or a number in (0, 1]"),
    ("model.hidden", lambda v: v >= 1, "an integer >= 1"),
    ("model.layers", lambda v: v >= 1, "an integer >= 1"),
    ("model.ensemble", lambda v: v >= 1, "an integer >= 1"),
    ("model.lr", lambda v: 0 < v < float("inf"), "a positive finite number"),
    ("data.batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("data.val_points", lambda v: v >= 10, "an integer >= 10"),
    ("trainer.max_epochs", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.val_every", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.threads", lambda v: v >= 1, "an integer >= 1"),
    ("logger.image_every", lambda v: v >= 0, "an integer >= 0 (0 = no pictures during training)"),
    ("logger.flush_every", lambda v: v >= 1, "an integer >= 1"),
    ("seed", lambda v: v >= 0, "an integer >= 0"),
)


def compose(overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """Compose `conf/<config_name>.yaml` with Hydra overrides, then type- and range-check it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name, overrides=list(overrides))
    except Exception as error:  # Hydra's errors are many classes; all are the user's words
        raise ConfigError(describe_hydra_error(error, overrides)) from error
    return validate(cfg)


def describe_hydra_error(error: BaseException, overrides: Sequence[str] = ()) -> str:
    """Hydra's multi-line messages, reduced to one line that names the key."""
    cause = error.__cause__
    full_key = getattr(cause, "full_key", None)
    if full_key and not isinstance(cause, (ConfigKeyError, ConfigAttributeError)):  # a wrong type
        given = next((o for o in overrides if o.lstrip("+~").split("=", 1)[0] == full_key), full_key)
        return f"{given}: {str(cause).splitlines()[0]}"
    if full_key:
        return unknown_key_message(full_key, overrides)
    first, *rest = str(error).strip().splitlines() or ["invalid override"]
    if "Could not find" in first:
        options = [line.strip() for line in rest if line.startswith("\t") and "provider=" not in line]
        missing = first.split(': ', 1)[-1]
        return plugin_hint(missing, options) or f"{missing}; available: {', '.join(options) or 'none'}"
    if "Error parsing override" in first and rest:
        return f"{first}: {rest[0]} (write key=value)"
    return first


# Hydra plugins a user may name, and the package that provides each (Hydra's own list).
PLUGIN_PACKAGES = {
    "hydra/launcher": {
        "joblib": "hydra-joblib-launcher",
        "submitit_local": "hydra-submitit-launcher",
        "submitit_slurm": "hydra-submitit-launcher",
        "ray_aws": "hydra-ray-launcher",
        "ray": "hydra-ray-launcher",
        "rq": "hydra-rq-launcher",
    },
    "hydra/sweeper": {
        "optuna": "hydra-optuna-sweeper",
        "ax": "hydra-ax-sweeper",
        "nevergrad": "hydra-nevergrad-sweeper",
    },
}


def plugin_hint(missing: str, options: Sequence[str]) -> str | None:
    """`hydra/launcher=joblib: not installed; pip install hydra-joblib-launcher`, or None."""
    found = re.search(r"'(hydra/(?:launcher|sweeper))/([^']+)'", missing)
    if not found:
        return None
    group, name = found.groups()
    available = f"available: {', '.join(options) or 'none'}"
    package = PLUGIN_PACKAGES[group].get(name)
    if package:
        return f"{group}={name}: not installed; pip install {package} ({available})"
    return f"{group}={name}: no such {group.split('/')[1]}; {available}"


def validate(cfg: DictConfig) -> DictConfig:
    """Types by the schema, then ranges; returns the typed config."""
    schema = OmegaConf.structured(TrainSchema)
    try:
        typed = OmegaConf.merge(schema, cfg)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "?")
        if isinstance(error, ConfigKeyError):  # a key added with `+` that the schema lacks
            raise ConfigError(unknown_key_message(key, [f"{key}={OmegaConf.select(cfg, key)}"])) from error
        value = OmegaConf.select(cfg, key, default="?") if key != "?" else "?"
        expected = _expected_type(key)
        raise ConfigError(f"{key}={value!r}: expected {expected}") from error
    assert isinstance(typed, DictConfig)
    missing = sorted(OmegaConf.missing_keys(typed))  # a key deleted with `~`
    if missing:
        raise ConfigError(f"{missing[0]} has no value: set it as {missing[0]}=<value>")
    check_ranges(typed)
    return typed


def _expected_type(key: str) -> str:
    """The schema's declared type of `key` (OmegaConf.get_type would give the MISSING value's: str)."""
    kind: Any = TrainSchema
    for part in key.split("."):
        kind = typing.get_type_hints(kind).get(part) if dataclasses.is_dataclass(kind) else None
    declared = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]  # Optional[float] -> float
    kind = declared[0]
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        kind, "a value of the right type"
    )


def unknown_key_message(key: str, overrides: Sequence[str] = ()) -> str:
    """`unknown key 'model.hiden' in model.hiden=3: ...; did you mean model.hidden?`"""
    given = next((o.lstrip("+~") for o in overrides if f"{o.lstrip('+~').split('=', 1)[0]}.".startswith(f"{key}.")), key)
    prefix, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in _schema_keys(TrainSchema) if k.rpartition(".")[0] == prefix}
    close = [siblings[m] for m in difflib.get_close_matches(leaf, siblings, n=1)]
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown key '{key}' in {given}: no such setting; {hint}`python src/train.py --cfg` lists all keys"


def _schema_keys(kind: Any, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(kind)
    keys = []
    for name, sub in hints.items():
        keys += _schema_keys(sub, f"{prefix}{name}.") if dataclasses.is_dataclass(sub) else [prefix + name]
    return keys


def check_ranges(cfg: DictConfig) -> None:
    """Raise ConfigError on the first value outside what the training can use."""
    for key, allowed, description in RANGE_CHECKS:
        value = OmegaConf.select(cfg, key)
        if not allowed(value):
            raise ConfigError(f"{key}={value}: must be {description}")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
