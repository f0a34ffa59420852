"""A trial's training config: its overrides, the command that reproduces it, its fingerprint.

Each trial is an ordinary `python src/train.py` run composed by Hydra from the sweep's
command line plus the sampled parameters, so a trial can be reproduced by hand. Training
is seeded and deterministic, so a trial whose config equals a complete one (samplers over
small integer spaces repeat often) reuses that twin's result instead of training again.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from mlpsweep.config import ConfigError, compose, compose_unchecked, output_only_keys, validate
from mlpsweep.storage import mask_url
from mlpsweep.sweep.settings import NOT_REPRODUCED, ParamSpec, SweepSettings

_MISSING = object()


def training_overrides(overrides: Sequence[str]) -> list[str]:
    """The command line every trial's config starts from: all of it, the `sweep.*` keys too.

    The sweep's keys do not shape training (`NOT_REPRODUCED`: the fingerprint and the
    reproduce line leave them out), but each trial's config.yaml, and so best.yaml, must
    record the `sweep:` block that ran (its n_trials, study_name, space), not the default's.
    """
    return list(overrides)


def trial_overrides(base_overrides: Sequence[str], params: dict[str, Any]) -> list[str]:
    sampled = [f"{path}={_override_value(value)}" for path, value in params.items()]
    return [*base_overrides, *sampled, "quiet=true"]


def trial_config(base_overrides: Sequence[str], params: dict[str, Any]) -> DictConfig:
    """The trial's checked config: exactly `compose(trial_overrides(base_overrides, params))`.

    Composing from scratch took about 0.15 s a trial, a quarter of what a trial costs
    outside training in the full map. So Hydra composes the sweep's command line once per
    worker, and each trial applies its sampled values to a copy as Hydra applies a
    `key=value` override: the value parsed by Hydra's grammar, then `OmegaConf.update`
    with merge (`ConfigLoaderImpl._apply_overrides_to_config`). A key that is not a value
    of the composed config (a group, or absent) takes the slow way, for Hydra's own error.
    """
    base = _composed_command_line(tuple(base_overrides))
    if base is None or not all(_is_value(base, path) for path in params):
        return _storage_masked(compose(trial_overrides(base_overrides, params)))
    cfg = copy.deepcopy(base)
    for path, value in params.items():
        OmegaConf.update(cfg, path, _parsed_override(path, value), merge=True)
    return _storage_masked(validate(cfg))


def _storage_masked(cfg: DictConfig) -> DictConfig:
    """`sweep.storage` with its password masked: the trial's config.yaml (and best.yaml) is
    written in plain text, and training never reads the storage from it."""
    storage = OmegaConf.select(cfg, "sweep.storage")
    if isinstance(storage, str) and mask_url(storage) != storage:
        OmegaConf.update(cfg, "sweep.storage", mask_url(storage))
    return cfg


@functools.lru_cache(maxsize=4)
def _composed_command_line(base_overrides: tuple[str, ...]) -> DictConfig | None:
    try:
        return compose_unchecked([*base_overrides, "quiet=true"])
    except ConfigError:
        return None


def _is_value(cfg: DictConfig, path: str) -> bool:
    node = OmegaConf.select(cfg, path, default=_MISSING, throw_on_missing=False)
    return node is not _MISSING and not isinstance(node, (DictConfig, ListConfig))


def _parsed_override(path: str, value: Any) -> Any:
    """`value` as Hydra reads it on the command line (`_override_value`'s text, parsed)."""
    return _override_parser().parse_override(f"{path}={_override_value(value)}").value()


@functools.cache
def _override_parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def check_space_composes(settings: SweepSettings, base_overrides: Sequence[str]) -> None:
    """Each searched key has a value (a bound or a choice) the training config accepts.

    Otherwise every trial would fail on its config: refused before any study is created.
    One bad choice among good ones is allowed (that trial fails, and says why).
    """
    for spec in settings.space:
        errors = []
        for value in _candidates(spec):
            try:
                compose(trial_overrides(base_overrides, {spec.path: value}))
                break
            except ConfigError as error:
                errors.append(error)
        else:
            raise ConfigError(
                f"sweep.space.{spec.path}: no value of it gives a valid training config "
                f"(with {spec.path}={_candidates(spec)[0]!r}: {errors[0]})"
            )


def _candidates(spec: ParamSpec) -> list[Any]:
    if spec.kind == "categorical":
        return list(spec.choices)
    cast = int if spec.kind == "int" else float
    return [cast(spec.low), cast(spec.high)]


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
    """`python src/train.py ...` with every training key that differs from the defaults.

    Keys that only change what a run writes or shows (`logger.*`, `trainer.checkpoint`:
    `config.output_only_keys`) are left out: the line reproduces what is learnt, and the
    sweep's own output choices (`logger.image_every=0`) are no part of that.
    """
    defaults = default_training_config()
    chosen = OmegaConf.to_container(trial_cfg, resolve=True)
    assert isinstance(chosen, dict)
    left_out = set(output_only_keys())
    changed = [
        f"{path}={_override_value(value)}"
        for path, value in _flatten(chosen)
        if path.split(".")[0] not in NOT_REPRODUCED
        and path not in left_out
        and _lookup(defaults, path) != value
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


def config_fingerprint(cfg: DictConfig) -> str:
    """A hash of everything that shapes training (not where it is written)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    training = {key: value for key, value in resolved.items() if key not in NOT_REPRODUCED}
    text = OmegaConf.to_yaml(OmegaConf.create(training))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def completed_twin(study: optuna.Study, fingerprint: str) -> FrozenTrial | None:
    """A complete trial with the very same training config, if the sampler proposed it again.

    Training is seeded and deterministic (one thread, same seed), so a repeat would only
    reproduce the twin's numbers: samplers over small integer spaces repeat often.
    """
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        same_config = trial.user_attrs.get("config_fingerprint") == fingerprint
        if same_config and "duplicate_of" not in trial.user_attrs:
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
