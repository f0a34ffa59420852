"""`StudySummary`: everything the summary shows, computed once from storage and folders.

The markdown, the pictures and TensorBoard all read this one object, so they never
disagree about the best trial or the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna

from mlpsweep.summary.answer import DEFAULT_THRESHOLD, Answer, threshold_answer
from mlpsweep.summary.evidence import Probability, build_probability
from mlpsweep.summary.fit_map import FitMap, build_fit_map
from mlpsweep.summary.search_space import Coverage, SearchSpace, coverage_of, space_of
from mlpsweep.summary.study_source import StudySource, SummaryError
from mlpsweep.summary.study_stats import (
    Importances,
    best_row,
    objectives_of,
    param_importances,
    pareto_rows,
    top_rows,
)
from mlpsweep.summary.trial_rows import TrialRow, collect_rows
from mlpsweep.sweep.settings import Objective
from mlpsweep.sweep.trial_states import state_counts


@dataclass
class StudySummary:
    """Everything the summary shows, computed once from storage and trial folders."""

    source: StudySource
    study_name: str
    objectives: tuple[Objective, ...]
    rows: list[TrialRow]
    counts: dict[str, int]
    best: TrialRow | None
    top: list[TrialRow]
    pareto: list[TrialRow]
    importances: Importances
    answer: Answer
    n_trials: int | None
    space: SearchSpace
    coverage: Coverage
    fit_map: FitMap
    probability: Probability
    pictures: dict[str, Path] = field(default_factory=dict)
    skipped_pictures: dict[str, str] = field(default_factory=dict)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


def build_summary(
    study: optuna.Study, source: StudySource, threshold: float = DEFAULT_THRESHOLD
) -> StudySummary:
    rows = collect_rows(study, source.folder)
    if not rows:
        raise SummaryError(
            f"study {study.study_name!r} ({source.storage_display}) has no trials yet: "
            "start it with `make sweep`, or wait for its first trial"
        )
    objectives = objectives_of(study, source.pointer)
    n_trials = source.pointer.get("n_trials")
    space = space_of(study.get_trials(deepcopy=False))
    answer = threshold_answer(rows, threshold)
    return StudySummary(
        source=source,
        study_name=study.study_name,
        objectives=objectives,
        rows=rows,
        counts=state_counts(study.get_trials(deepcopy=False)),
        best=best_row(study, rows, objectives),
        top=top_rows(rows, objectives),
        pareto=pareto_rows(study, rows),
        importances=param_importances(study, objectives),
        answer=answer,
        n_trials=int(n_trials) if isinstance(n_trials, int) else None,
        space=space,
        coverage=coverage_of(rows, space),
        fit_map=build_fit_map(answer.candidates, space),
        probability=build_probability(rows, space, threshold),
    )
