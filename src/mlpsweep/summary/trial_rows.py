"""One row per trial: what the storage knows, plus the per-member values of its folder.

The storage holds each trial's means (copied there by the worker); the ensemble members'
individual values, which the answer judges, are only in the trial folder's metrics.json.
A folder on another machine leaves those empty rather than failing the summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from mlpsweep.sweep.settings import PARAMETER_COUNT
from mlpsweep.sweep.trial_states import retried_as, retried_numbers, state_name

ARCHITECTURE_KEYS = ("model.hidden", "model.layers")
ROUND_ATTR = "round"  # the user attribute a round's trial carries (`mlpsweep.sweep.rounds`)


@dataclass
class TrialRow:
    """One trial as the summary sees it: storage fields plus its folder's per-member values."""

    number: int
    state: str
    params: dict[str, Any]
    values: list[float] | None
    metrics: dict[str, dict[str, float]]
    members: dict[str, list[float]]
    epochs: int | None
    duration_s: float | None
    parameter_count: int | None
    fail_reason: str
    reproduce: str
    host: str
    started: datetime | None
    completed: datetime | None
    folder: Path | None
    # the sweep reused trial K's result for this same configuration (not trained again)
    duplicate_of: int | None = None
    # a dead worker's trial: the number of the copy Optuna queued in its place
    retried_as: int | None = None
    # 0: the cell's first trial; 1, 2, ...: a later round of new initialisations (`sweep.rounds`)
    round: int = 0
    # per member, the epoch at which it fit and left its batch (None: it did not)
    epochs_to_fit: tuple[int | None, ...] = ()

    def metric(self, key: str, stat: str = "mean") -> float | None:
        value = self.metrics.get(key, {}).get(stat)
        return float(value) if value is not None else None

    def architecture(self) -> tuple[tuple[str, Any], ...]:
        """The architecture's identity: hidden x layers when searched, else all searched
        params."""
        keys = [key for key in ARCHITECTURE_KEYS if key in self.params] or sorted(self.params)
        return tuple((key, self.params[key]) for key in keys)


def trial_folder(study_folder: Path, trial: FrozenTrial) -> Path | None:
    """The trial's folder in one form for every trial (see `project_path`).

    `trials/<n>/` beside the storage; a repeat's is its twin's `trials/<k>/`; else the
    absolute run_dir the worker recorded, if it is on this machine.
    """
    twin = _trial_number(trial.user_attrs.get("duplicate_of"))
    numbers = [trial.number] if twin is None else [trial.number, twin]
    recorded = trial.user_attrs.get("run_dir")
    candidates = [study_folder / "trials" / str(number) for number in numbers]
    candidates += [Path(recorded)] if recorded else []
    found = next((folder for folder in candidates if folder.is_dir()), None)
    return project_path(found) if found is not None else None


def project_path(path: Path) -> Path:
    """Relative to the project (the directory `make summary` runs in), absolute only when
    the folder lies outside it, so trials.csv and summary.md name folders one way, however
    the study was named on the command line or recorded by its workers."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve())
    except ValueError:
        return resolved


def read_run_metrics(folder: Path | None) -> dict[str, Any]:
    """metrics.json of a trial folder ({} while the trial runs, or if the folder is
    elsewhere)."""
    if folder is None or not (folder / "metrics.json").is_file():
        return {}
    try:
        data = json.loads((folder / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def collect_rows(study: optuna.Study, study_folder: Path) -> list[TrialRow]:
    trials = study.get_trials(deepcopy=False)
    retried, copies = retried_numbers(trials), retried_as(trials)
    rows = [_row(trial, study_folder, retried) for trial in trials]
    for row in rows:
        row.retried_as = copies.get(row.number)
    return rows


def _row(trial: FrozenTrial, study_folder: Path, retried: set[int]) -> TrialRow:
    attrs = trial.user_attrs
    state = state_name(trial, retried)
    folder = trial_folder(study_folder, trial)
    run = read_run_metrics(folder)
    run_metrics = run.get("metrics", {}) if isinstance(run.get("metrics"), dict) else {}
    metrics = attrs.get("metrics") or {
        key: {stat: value for stat, value in summary.items() if stat != "members"}
        for key, summary in run_metrics.items()
    }
    members = {
        key: list(summary["members"])
        for key, summary in run_metrics.items()
        if isinstance(summary, dict) and summary.get("members")
    } or _kept_members(attrs)
    return TrialRow(
        number=trial.number,
        state=state,
        params=dict(trial.params),
        values=list(trial.values) if trial.values is not None else None,
        metrics=metrics,
        members=members,
        epochs=attrs.get("epochs", run.get("epochs")),
        duration_s=attrs.get("duration_s", run.get("duration_s")),
        parameter_count=attrs.get(PARAMETER_COUNT, run.get(PARAMETER_COUNT)),
        fail_reason=_fail_reason(state, attrs),
        reproduce=str(attrs.get("reproduce", "")),
        host=str(attrs.get("host", "")),
        started=trial.datetime_start,
        completed=trial.datetime_complete,
        folder=folder,
        duplicate_of=_trial_number(attrs.get("duplicate_of")),
        round=_trial_number(attrs.get(ROUND_ATTR)) or 0,
        epochs_to_fit=_fit_epochs(attrs.get("epochs_to_fit", run.get("epochs_to_fit"))),
    )


def _fit_epochs(value: Any) -> tuple[int | None, ...]:
    """Each member's fit epoch as recorded (attributes or metrics.json); () when unknown."""
    if not isinstance(value, list):
        return ()
    return tuple(_trial_number(epoch) for epoch in value)


def _kept_members(attrs: dict[str, Any]) -> dict[str, list[float]]:
    """The members' values the worker keeps in the trial (`member_values`), for a trial
    whose folder is on another machine."""
    kept = attrs.get("member_values")
    if not isinstance(kept, dict):
        return {}
    return {key: list(values) for key, values in kept.items() if isinstance(values, list)}


def _fail_reason(state: str, attrs: dict[str, Any]) -> str:
    """Only a trial that failed has a reason: a retry copies its dead attempt's attributes
    (older studies kept them), and a retry that completed did not fail."""
    return str(attrs.get("fail_reason", "")) if state in ("failed", "retried") else ""


def _trial_number(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
