"""The answer to the tutorial's question: the smallest network that fits, and how sure.

An architecture fits when every member of its ensemble (independent initialisations)
reaches the threshold, so the answer never rests on a lucky seed; repeats of one
architecture are one piece of evidence, judged by their most convincing trial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlpsweep.summary.trial_rows import TrialRow

DEFAULT_THRESHOLD = 0.99
ANSWER_METRIC = "val/acc"
ANSWER_DEFINITION = (
    "An architecture *fits* when **every** member of its ensemble (independent initialisations, "
    "same data and training) ends with {metric} >= {threshold:g} on the validation grid, so the "
    "answer does not rest on a lucky seed. Only complete trials are judged (pruned trials "
    "stopped early). The smallest fitting architecture by parameter count wins (ties: higher "
    "mean {metric}); the runner-up is the next smallest different architecture that fits."
)


@dataclass(frozen=True)
class Candidate:
    """A complete trial judged against the threshold by its ensemble members."""

    row: TrialRow
    reached: int
    members: int

    @property
    def fits(self) -> bool:
        """Every member reached the threshold: the architecture fits for any seed we tried."""
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


def judge(rows: Sequence[TrialRow], threshold: float) -> tuple[list[Candidate], list[int]]:
    """Candidates from complete trials with per-member values; the rest are listed as
    unjudged."""
    candidates, unjudged = [], []
    for row in rows:
        if row.state != "complete":
            continue
        values = row.members.get(ANSWER_METRIC)
        if not values or row.parameter_count is None:
            unjudged.append(row.number)
            continue
        reached = sum(1 for value in values if value >= threshold)
        candidates.append(Candidate(row, reached, len(values)))
    return candidates, unjudged


def fitting_candidates(rows: Sequence[TrialRow], threshold: float) -> list[Candidate]:
    """Every complete trial whose members all reach `threshold` (repeats included)."""
    candidates, _ = judge(rows, threshold)
    return [candidate for candidate in candidates if candidate.fits]


def threshold_answer(rows: Sequence[TrialRow], threshold: float = DEFAULT_THRESHOLD) -> Answer:
    """The smallest architecture whose members all reach `threshold`, its runner-up, and
    context."""
    candidates, unjudged = judge(rows, threshold)
    per_architecture = _best_per_architecture(candidates)
    fitting = sorted(
        (candidate for candidate in per_architecture if candidate.fits),
        key=lambda candidate: (candidate.size, -candidate.mean, candidate.row.number),
    )
    winner = fitting[0] if fitting else None
    runner_up = fitting[1] if len(fitting) > 1 else None
    limit = winner.size if winner else math.inf
    partial = sorted(
        (
            candidate
            for candidate in per_architecture
            if 0 < candidate.reached < candidate.members and candidate.size < limit
        ),
        key=lambda candidate: (candidate.size, -candidate.reached),
    )
    closest = None if winner else max(candidates, key=_convincing, default=None)
    definition = ANSWER_DEFINITION.format(metric=ANSWER_METRIC, threshold=threshold)
    return Answer(
        threshold, definition, winner, runner_up, partial, closest, len(candidates), unjudged
    )


def _share(candidate: Candidate) -> float:
    """The fraction of members that reached the threshold."""
    return candidate.reached / candidate.members


def _convincing(candidate: Candidate) -> tuple[float, float]:
    """How convincing a candidate is: the share of members that fit, then their mean."""
    return _share(candidate), candidate.mean


def _best_per_architecture(candidates: Sequence[Candidate]) -> list[Candidate]:
    """One candidate per architecture (its most convincing trial): repeats are not new
    evidence."""
    best: dict[tuple[tuple[str, Any], ...], Candidate] = {}
    for candidate in candidates:
        key = candidate.row.architecture()
        current = best.get(key)
        if current is None or _convincing(candidate) > _convincing(current):
            best[key] = candidate
    return list(best.values())
