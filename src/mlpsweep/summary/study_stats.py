"""Statistics over the whole study: importances, the best trial, the top trials, the front.

Optuna computes them (PED-ANOVA importances, best trial, Pareto front); this module picks
the target Optuna needs on a multi-objective study and says in words why importances are
missing when they would not mean anything.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from mlpsweep.summary.trial_rows import TrialRow
from mlpsweep.sweep.settings import Objective

TOP_N = 10
MIN_TRIALS_FOR_IMPORTANCE = 3


@dataclass(frozen=True)
class Importances:
    values: dict[str, float] | None
    reason: str
    target_name: str


def param_importances(study: optuna.Study, objectives: Sequence[Objective]) -> Importances:
    """Optuna's parameter importances for the first objective, or why they are not
    meaningful."""
    target_name = objectives[0].metric
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        reason = (
            f"too few complete trials ({len(complete)}; "
            f"at least {MIN_TRIALS_FOR_IMPORTANCE} needed)"
        )
        return Importances(None, reason, target_name)
    searched = sorted({name for trial in complete for name in trial.params})
    if len(searched) < 2:
        only = searched[0] if searched else "none"
        reason = f"only one parameter was searched ({only}): its importance is 1 by construction"
        return Importances(None, reason, target_name)
    if len({trial.values[0] for trial in complete}) < 2:
        reason = f"every complete trial has the same {target_name}: nothing to attribute"
        return Importances(None, reason, target_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(
                study, evaluator=importance_evaluator(), target=importance_target(study)
            )
    except Exception as error:  # Optuna refuses odd studies (e.g. a param with one value)
        reason = f"Optuna could not estimate them ({type(error).__name__}: {error})"
        return Importances(None, reason, target_name)
    return Importances(dict(values), "PED-ANOVA (Optuna's default evaluator)", target_name)


def importance_evaluator() -> optuna.importance.BaseImportanceEvaluator:
    """Optuna's default, PED-ANOVA: deterministic (same study, same importances) and no
    sklearn."""
    return optuna.importance.PedAnovaImportanceEvaluator()


def primary_target(study: optuna.Study) -> Callable[[FrozenTrial], float] | None:
    """Optuna's plots need one target on a multi-objective study: the first objective."""
    return (lambda trial: trial.values[0]) if len(study.directions) > 1 else None


def importance_target(study: optuna.Study) -> Callable[[FrozenTrial], float] | None:
    """PED-ANOVA takes any explicit target as lower-is-better, so a maximised one is
    negated."""
    if len(study.directions) == 1:
        return None
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return lambda trial: sign * trial.values[0]


def best_row(
    study: optuna.Study, rows: Sequence[TrialRow], objectives: Sequence[Objective]
) -> TrialRow | None:
    """Optuna's best trial; on a Pareto study the front's best on the first objective
    (best.yaml's)."""
    by_number = {row.number: row for row in rows}
    if not any(row.state == "complete" for row in rows):
        return None
    if len(objectives) == 1:
        return original(by_number[study.best_trial.number], by_number)
    sign = 1 if objectives[0].direction == "maximize" else -1
    front = study.best_trials
    if not front:
        return None
    leader = max(front, key=lambda trial: sign * trial.values[0])
    return original(by_number[leader.number], by_number)


def original(row: TrialRow, by_number: dict[int, TrialRow]) -> TrialRow:
    """A repeat's twin: the trial that was trained (a repeat only copied its values)."""
    twin = by_number.get(row.duplicate_of) if row.duplicate_of is not None else None
    return twin or row


def top_rows(
    rows: Sequence[TrialRow], objectives: Sequence[Objective], count: int = TOP_N
) -> list[TrialRow]:
    sign = -1 if objectives[0].direction == "maximize" else 1
    complete = [
        row for row in rows
        if row.state == "complete" and row.values and row.duplicate_of is None
    ]

    def rank(row: TrialRow) -> tuple[float, int]:
        return sign * row.values[0], row.number  # type: ignore[index]

    return sorted(complete, key=rank)[:count]


def pareto_rows(study: optuna.Study, rows: Sequence[TrialRow]) -> list[TrialRow]:
    if len(study.directions) < 2:
        return []
    numbers = {trial.number for trial in study.best_trials}
    front = [row for row in rows if row.number in numbers and row.duplicate_of is None]
    return sorted(front, key=lambda row: (row.values or [0.0])[1:])


def objectives_of(study: optuna.Study, pointer: dict[str, Any]) -> tuple[Objective, ...]:
    """From study.json when there, else the storage's metric names and directions."""
    listed = pointer.get("objectives")
    if isinstance(listed, list) and len(listed) == len(study.directions):
        return tuple(Objective(str(item["metric"]), str(item["direction"])) for item in listed)
    names = study.metric_names or [f"objective {index}" for index in range(len(study.directions))]
    pairs = zip(names, study.directions, strict=True)
    return tuple(Objective(name, direction.name.lower()) for name, direction in pairs)
