"""A study's fixed training settings: stored when it is created, compared on every resume.

A trial's value depends on every training setting, not only on the searched ones: a study
resumed with `trainer.max_epochs=3000` after 500-epoch trials would rank 500- and
3000-epoch trials together. So the settings that shape what a run learns
(`config.hyperparameter_keys`, minus the searched keys) are kept in the study's user
attributes, and a resume with any of them changed is refused before a trial is asked.
Keys that only change speed or what is written (`trainer.threads`, `model.fused_adam`,
`trainer.checkpoint`, `logger.*`, `quiet`, `output_dir`) may differ between resumes.
"""

from __future__ import annotations

from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from mlpsweep.config import ConfigError, hyperparameter_keys
from mlpsweep.sweep.settings import SweepSettings

FIXED_SETTINGS_ATTR = "fixed_training_settings"


def fixed_training_settings(cfg: DictConfig, settings: SweepSettings) -> dict[str, Any]:
    """`{config path: value}` of every setting that shapes training and is not searched."""
    searched = {spec.path for spec in settings.space}
    return {
        path: _plain(OmegaConf.select(cfg, path))
        for path in hyperparameter_keys()
        if path not in searched
    }


def _plain(value: Any) -> Any:
    """A JSON value, as the storage keeps it (so a resume compares like with like)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def first_difference(
    stored: dict[str, Any], current: dict[str, Any]
) -> tuple[str, Any, Any] | None:
    """The first key fixed in both whose values differ: (key, stored value, current value)."""
    for path, value in current.items():
        if path in stored and stored[path] != value:
            return path, stored[path], value
    return None


def record_or_check(
    study: optuna.Study, settings: SweepSettings, fixed: dict[str, Any]
) -> None:
    """Store `fixed` in a study that has none (new, or older than this check); refuse a
    resume whose settings differ, in one line naming the key, both values and the way out."""
    stored = study.user_attrs.get(FIXED_SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(FIXED_SETTINGS_ATTR, fixed)
        return
    difference = first_difference(stored, fixed)
    if difference is not None:
        path, was, now = difference
        raise ConfigError(
            f"{path}={now!r}: study '{settings.study_name}' was run with {path}={was!r}; "
            f"resume it with {path}={was!r}, or start a new study with "
            f"sweep.study_name=<another name>"
        )
