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
# The metrics every run logs and records (members' means), in the order a person reads them:
# the answer (val/acc) first.
METRICS = ("val/acc", "train/acc", "val/loss", "train/loss")


def _commented_config(*, _root_: DictConfig) -> str:
    from mlpsweep.key_help import commented_config_resolver

    return commented_config_resolver(_root_=_root_)


# `python src/train.py --help` (conf/hydra/help/mlpsweep.yaml) shows each key with its meaning.
OmegaConf.register_new_resolver("mlpsweep.commented_config", _commented_config, replace=True)


class ConfigError(ValueError):
    """A user's configuration mistake, worded as the one line they will see."""


Check = tuple[Callable[[Any], bool], str]  # (is the value allowed?, what is allowed)

AT_LEAST_ONE: Check = (lambda value: value >= 1, "an integer >= 1")


def setting(
    check: Check | None = None,
    *,
    hyperparameter: bool = True,
    output_only: bool = False,
    default: Any = MISSING,
) -> Any:
    """One config key of the schema: its range check and whether it shapes the result.

    `hyperparameter=False` marks a key that changes how a run is carried out or recorded
    but not what it learns; TensorBoard's HParams tab leaves it out (see `hyperparameter_keys`).
    `output_only=True` (which implies it) marks a key that changes only what is written or
    shown, never a number: reproduce lines leave it out (see `output_only_keys`).
    """
    metadata = {
        "check": check, "hyperparameter": hyperparameter and not output_only,
        "output_only": output_only,
    }
    return field(default=default, metadata=metadata)


def section(schema: type, *, hyperparameter: bool = True, output_only: bool = False) -> Any:
    """A group of keys (`model`, `data`, ...); `hyperparameter=False` or `output_only=True`
    covers all of them."""
    metadata = {"hyperparameter": hyperparameter and not output_only, "output_only": output_only}
    return field(default_factory=schema, metadata=metadata)


@dataclass
class DataSchema:
    batch_size: int = setting(AT_LEAST_ONE)
    shuffle: bool = setting()
    normalize: bool = setting()
    val_points: int = setting((lambda value: value >= 10, "an integer >= 10"))


@dataclass
class ModelSchema:
    hidden: int = setting(AT_LEAST_ONE)
    layers: int = setting(AT_LEAST_ONE)
    lr: float = setting((lambda value: 0 < value < float("inf"), "a positive finite number"))
    ensemble: int = setting(AT_LEAST_ONE)
    fused_adam: bool = setting(hyperparameter=False)  # the same Adam update, in fewer kernels


@dataclass
class TrainerSchema:
    max_epochs: int = setting(AT_LEAST_ONE)
    # a hyperparameter: early stopping and a sweep's pruner act only at validations
    val_every: int = setting(AT_LEAST_ONE)
    threads: int = setting(AT_LEAST_ONE, hyperparameter=False)  # speed only
    checkpoint: bool = setting(output_only=True)  # what is written, not what is learnt
    # the fit definition's val/acc bar (mlpsweep.fit_rule): TensorBoard's fit_rate, the stop
    fit_val_acc: float = setting((lambda value: 0 < value <= 1, "a number in (0, 1]"), default=0.99)
    # null: train every epoch; a bar: stop once every member fits with it (train/acc 1, val/acc >=)
    stop_at_val_acc: Optional[float] = setting(  # noqa: UP045 (OmegaConf needs typing.Optional)
        (lambda value: value is None or 0 < value <= 1, "null or a number in (0, 1]"), default=None
    )


@dataclass
class LoggerSchema:
    image_every: int = setting(
        (lambda value: value >= 0, "an integer >= 0 (0 = no pictures during training)")
    )
    flush_every: int = setting(AT_LEAST_ONE)
    pictures: bool = setting()


@dataclass
class TrainSchema:
    data: DataSchema = section(DataSchema)
    model: ModelSchema = section(ModelSchema)
    trainer: TrainerSchema = section(TrainerSchema)
    logger: LoggerSchema = section(LoggerSchema, output_only=True)
    seed: int = setting((lambda value: value >= 0, "an integer >= 0"))
    quiet: bool = setting(output_only=True)
    output_dir: str = setting(output_only=True)
    ckpt_path: Optional[str] = setting(hyperparameter=False, default=None)  # noqa: UP045
    sweep: Any = setting(hyperparameter=False, default=None)


@dataclass(frozen=True)
class SchemaKey:
    """A leaf of the schema, by its dotted path."""

    path: str
    check: Check | None
    hyperparameter: bool
    output_only: bool = False


def schema_keys(
    schema: Any = TrainSchema,
    prefix: str = "",
    hyperparameter: bool = True,
    output_only: bool = False,
) -> list[SchemaKey]:
    """Every leaf of `schema`, in declaration order; a section's `hyperparameter=False` (or
    `output_only=True`) holds for all its keys."""
    hints = typing.get_type_hints(schema)
    keys: list[SchemaKey] = []
    for declared in dataclasses.fields(schema):
        kind, path = hints[declared.name], prefix + declared.name
        shapes = hyperparameter and declared.metadata.get("hyperparameter", True)
        written = output_only or declared.metadata.get("output_only", False)
        if dataclasses.is_dataclass(kind):
            keys += schema_keys(kind, f"{path}.", shapes, written)
        else:
            keys.append(SchemaKey(path, declared.metadata.get("check"), shapes, written))
    return keys


def hyperparameter_keys() -> tuple[str, ...]:
    """The keys that shape what a run learns, for TensorBoard's HParams tab.

    Every schema leaf but those marked `hyperparameter=False`: `trainer.threads` and
    `model.fused_adam` change the speed, not the update; `trainer.checkpoint`, `logger.*`,
    `quiet` and `output_dir` change what is written. `trainer.val_every` stays: early
    stopping and a sweep's pruner act only at validations, so it moves where a run ends.
    """
    return tuple(key.path for key in schema_keys() if key.hyperparameter)


def output_only_keys() -> tuple[str, ...]:
    """The keys that change only what a run writes or shows (`logger.*`, `trainer.checkpoint`,
    `quiet`, `output_dir`): two runs that differ only in them learn the very same numbers."""
    return tuple(key.path for key in schema_keys() if key.output_only)


def searched_keys(cfg: DictConfig) -> tuple[str, ...]:
    """The config paths a sweep's `sweep.space` searches (none for a plain run).

    A space leaf is a mapping with a `type` (`{type: int, low: 1, high: 64}`); the sweep
    checks the space itself, this only names its paths.
    """
    space = OmegaConf.select(cfg, "sweep.space")
    tree = OmegaConf.to_container(space) if isinstance(space, DictConfig) else {}

    def leaves(node: Any, prefix: str) -> list[str]:
        if not isinstance(node, dict):
            return []
        if "type" in node:
            return [prefix.rstrip(".")]
        return [path for key, value in node.items() for path in leaves(value, f"{prefix}{key}.")]

    return tuple(leaves(tree, ""))


def compose(overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """Compose `conf/<config_name>.yaml` with Hydra overrides, then type- and range-check it."""
    return validate(compose_unchecked(overrides, config_name))


def compose_unchecked(overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """What Hydra composes, before the schema's checks (ConfigError for Hydra's errors)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name, overrides=list(overrides))
    except Exception as error:  # Hydra's errors are many classes; all are the user's words
        raise ConfigError(describe_hydra_error(error, overrides)) from error
    return cfg


def describe_hydra_error(error: BaseException, overrides: Sequence[str] = ()) -> str:
    """Hydra's multi-line messages, reduced to one line that names the key."""
    cause = error.__cause__
    full_key = getattr(cause, "full_key", None)
    if full_key and not isinstance(cause, (ConfigKeyError, ConfigAttributeError)):  # a wrong type
        given = next(
            (o for o in overrides if o.lstrip("+~").split("=", 1)[0] == full_key), full_key
        )
        return f"{given}: {str(cause).splitlines()[0]}"
    if full_key:
        parent = getattr(cause, "parent_node", None)
        present = [str(name) for name in parent] if isinstance(parent, DictConfig) else []
        return unknown_key_message(full_key, overrides, present)
    first, *rest = str(error).strip().splitlines() or ["invalid override"]
    if "Could not find" in first:
        options = [
            line.strip() for line in rest if line.startswith("\t") and "provider=" not in line
        ]
        missing = first.split(": ", 1)[-1]
        return (
            plugin_hint(missing, options) or f"{missing}; available: {', '.join(options) or 'none'}"
        )
    if "Error parsing override" in first and rest:
        return f"{first}: {rest[0]} (write key=value)"
    unquoted = getattr(error, "override", None)
    if type(error).__name__ == "OverrideParseException" and unquoted and "=" in unquoted:
        return needs_quotes_message(unquoted)
    return first


def needs_quotes_message(override: str) -> str:
    """`key=é日本`: Hydra's grammar reads an unquoted value only from ASCII letters, digits and
    a few signs (https://hydra.cc/docs/advanced/override_grammar/basic), and says so as
    `LexerNoViableAltException` (or `mismatched input '['`). The way out: quote the value,
    inside the shell's own quotes, which the shell removes."""
    key, _, value = override.partition("=")
    inner = "'" if "'" not in value else '"'
    outer = '"' if inner == "'" else "'"
    quoted = f"{outer}{key}={inner}{value}{inner}{outer}"
    return (
        f"{override}: Hydra's override grammar reads this value only when quoted (unquoted: "
        f"ASCII letters, digits and a few signs); write {quoted} (the outer quotes are for "
        "the shell)"
    )


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
            given = f"{key}={OmegaConf.select(cfg, key)}"
            raise ConfigError(unknown_key_message(key, [given])) from error
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
    """The schema's declared type of `key` (OmegaConf.get_type gives the MISSING value's: str)."""
    kind: Any = TrainSchema
    for part in key.split("."):
        kind = typing.get_type_hints(kind).get(part) if dataclasses.is_dataclass(kind) else None
    # Optional[float] -> float
    declared = [option for option in typing.get_args(kind) if option is not type(None)] or [kind]
    kind = declared[0]
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        kind, "a value of the right type"
    )


# Lightning Trainer arguments a user may reach for; the run is CPU-only and float32 by design
# (see `mlpsweep.model.MLP`), so these are refused by name with the reason.
NOT_CONFIGURABLE = {
    "trainer.accelerator": "training runs on the CPU only",
    "trainer.devices": "training runs on one CPU device only",
    "trainer.precision": "training runs in float32 only",
}


def unknown_key_message(
    key: str, overrides: Sequence[str] = (), present: Sequence[str] = ()
) -> str:
    """`unknown key 'model.hiden' in model.hiden=3: ...; did you mean model.hidden?`

    Close matches come from the schema, and from `present`: the keys the composed config
    has beside it (the `sweep:` keys, which the training schema does not know)."""
    given = next(
        (
            override.lstrip("+~")
            for override in overrides
            if f"{override.lstrip('+~').split('=', 1)[0]}.".startswith(f"{key}.")
        ),
        key,
    )
    if key in NOT_CONFIGURABLE:
        return (
            f"unknown key '{key}' in {given}: no such setting; {NOT_CONFIGURABLE[key]} "
            "(see mlpsweep.model.MLP)"
        )
    prefix, _, leaf = key.rpartition(".")
    siblings = {
        known.path.rpartition(".")[2]: known.path
        for known in schema_keys()
        if known.path.rpartition(".")[0] == prefix
    }
    for name in present:
        siblings.setdefault(name, f"{prefix}.{name}" if prefix else name)
    close = [siblings[match] for match in difflib.get_close_matches(leaf, siblings, n=1)]
    hint = f"did you mean {close[0]}? " if close else ""
    script = "sweep.py" if key.startswith("sweep.") else "train.py"
    return (
        f"unknown key '{key}' in {given}: no such setting; {hint}"
        f"`python src/{script} --cfg` lists all keys"
    )


def check_ranges(cfg: DictConfig) -> None:
    """Raise ConfigError on the first value outside what the training can use."""
    for key in schema_keys():
        if key.check is None:
            continue
        allowed, description = key.check
        value = OmegaConf.select(cfg, key.path)
        if not allowed(value):
            raise ConfigError(f"{key.path}={value}: must be {description}")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
