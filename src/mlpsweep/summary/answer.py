"""The answer to the tutorial's question: the smallest network that fits, and how sure.

A member fits by `mlpsweep.fit_rule` (every training point right and val/acc >= the
threshold); an architecture fits when every member of its ensemble (independent
initialisations) fits, so the answer never rests on a lucky seed. A repeated configuration
(`duplicate_of`: the sweep reused its twin's result) is not evidence of its own and is not
judged; two trials of one architecture that differ in another searched key are judged by
their most convincing trial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlpsweep import fit_rule
from mlpsweep.summary.trial_rows import TrialRow

DEFAULT_THRESHOLD = fit_rule.FIT_VAL_ACC
ANSWER_METRIC = "val/acc"
TRAIN_METRIC = "train/acc"
ANSWER_DEFINITION = (
    "{member} Here an architecture *fits* when **every** member of a trial (independent "
    "initialisations, same data and training) fits: K of K members are K samples of its p, "
    "which a lucky seed can give, so the probability answer is the one to act on. Only "
    "complete trials are judged (pruned trials stopped early; a repeated "
    "configuration reuses its twin's result). The smallest fitting architecture by parameter "
    "count wins (ties: higher mean {metric}); the runner-up is the next smallest different "
    "architecture that fits."
)


@dataclass(frozen=True)
class Candidate:
    """A complete trial judged by the fit rule, member by member (`reached`: members that fit)."""

    row: TrialRow
    reached: int
    members: int

    @property
    def fits(self) -> bool:
        """Every member fits: the architecture fits for every seed we tried."""
        return self.members > 0 and self.reached == self.members

    @property
    def size(self) -> int:
        return int(self.row.parameter_count or 0)

    @property
    def mean(self) -> float:
        return sum(self.row.members[ANSWER_METRIC]) / self.members


@dataclass
class Answer:
    threshold: float
    definition: str
    winner: Candidate | None
    runner_up: Candidate | None
    partial: list[Candidate]
    closest: Candidate | None
    judged: int
    unjudged: list[int] = field(default_factory=list)
    # one per architecture (its most convincing trial): what the map and tables show
    candidates: list[Candidate] = field(default_factory=list)


def judge(rows: Sequence[TrialRow], threshold: float) -> tuple[list[Candidate], list[int]]:
    """Candidates from complete, non-repeat trials with per-member train/acc and val/acc; the
    rest are listed as unjudged (their folder or metrics.json is not here)."""
    candidates, unjudged = [], []
    for row in rows:
        if row.state != "complete" or row.duplicate_of is not None:
            continue
        values, train = row.members.get(ANSWER_METRIC), row.members.get(TRAIN_METRIC)
        if not values or not train or len(train) != len(values) or row.parameter_count is None:
            unjudged.append(row.number)
            continue
        reached = fit_rule.fitting_members(train, values, threshold)
        candidates.append(Candidate(row, reached, len(values)))
    return candidates, unjudged


def fitting_candidates(rows: Sequence[TrialRow], threshold: float) -> list[Candidate]:
    """Every complete trial whose members all fit (repeats excluded: they are their twin)."""
    candidates, _ = judge(rows, threshold)
    return [candidate for candidate in candidates if candidate.fits]


def threshold_answer(rows: Sequence[TrialRow], threshold: float = DEFAULT_THRESHOLD) -> Answer:
    """The smallest architecture whose members all fit, its runner-up, and context."""
    candidates, unjudged = judge(rows, threshold)
    per_architecture = best_per_architecture(candidates)
    fitting = sorted(
        (candidate for candidate in per_architecture if candidate.fits),
        key=lambda candidate: (candidate.size, -candidate.mean, candidate.row.number),
    )
    winner = fitting[0] if fitting else None
    runner_up = fitting[1] if len(fitting) > 1 else None
    limit = winner.size if winner else math.inf
    closest = None if winner else max(candidates, key=_convincing, default=None)
    # with no winner the closest is named on its own; listing it again as "partial" repeats it
    named = closest.row.architecture() if closest else None
    partial = sorted(
        (
            candidate
            for candidate in per_architecture
            if 0 < candidate.reached < candidate.members and candidate.size < limit
            and candidate.row.architecture() != named
        ),
        key=lambda candidate: (candidate.size, -candidate.reached),
    )
    definition = ANSWER_DEFINITION.format(
        member=fit_rule.definition(threshold), metric=ANSWER_METRIC
    )
    return Answer(
        threshold, definition, winner, runner_up, partial, closest, len(candidates), unjudged,
        per_architecture,
    )


def _share(candidate: Candidate) -> float:
    """The fraction of members that reached the threshold."""
    return candidate.reached / candidate.members


def _convincing(candidate: Candidate) -> tuple[float, float]:
    """How convincing a candidate is: the share of members that fit, then their mean."""
    return _share(candidate), candidate.mean


def best_per_architecture(candidates: Sequence[Candidate]) -> list[Candidate]:
    """One candidate per architecture (its most convincing trial): repeats are not new
    evidence."""
    best: dict[tuple[tuple[str, Any], ...], Candidate] = {}
    for candidate in candidates:
        key = candidate.row.architecture()
        current = best.get(key)
        if current is None or _convincing(candidate) > _convincing(current):
            best[key] = candidate
    return list(best.values())
