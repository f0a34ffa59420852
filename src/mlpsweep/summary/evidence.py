"""The study's trials as evidence for P(fit): cells pooled over trials, the answers per depth.

A trial counts when it completed, is no repeat (`duplicate_of`: its twin's result again) and
its members' train/acc and val/acc are known (from its folder's metrics.json, or the
`member_values` the worker keeps in the trial). Its cell is its architecture and the values
of the other searched keys (the *facet*: one map, curve and answer per value). A study whose
other keys include a continuous float has no finite facets, so it gets no curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mlpsweep import fit_rule
from mlpsweep.summary.probability import (
    CellEvidence,
    DepthAnswer,
    Facet,
    answers_by_depth,
    capacity_floor,
    pool_cells,
)
from mlpsweep.summary.search_space import MAP_KEYS, SearchSpace
from mlpsweep.summary.trial_rows import TrialRow

ANSWER_METRIC = "val/acc"
TRAIN_METRIC = "train/acc"


@dataclass(frozen=True)
class Probability:
    """Everything the probability answer shows: cells, answers, what they rest on."""

    cells: dict[tuple[Facet, int, int], CellEvidence]
    answers: list[DepthAnswer]
    facet_keys: tuple[str, ...]
    trials: int  # trials whose members are counted (complete, not repeats, members known)
    reason: str = ""  # why there is no curve, when there is none
    floor: dict[str, int] = field(default_factory=capacity_floor)

    @property
    def members(self) -> int:
        return sum(cell.members for cell in self.cells.values())

    @property
    def architectures(self) -> int:
        return len({(layers, hidden) for _, layers, hidden in self.cells})

    def uniform_members(self) -> tuple[int, int]:
        """(the most members any cell holds, the members every cell holding that many would
        make): the uniform map the rounds are weighed against, since they spend members
        only where they decide an answer."""
        most = max((cell.members for cell in self.cells.values()), default=0)
        return most, most * len(self.cells)

    def cell(self, hidden: int, layers: int, facet: Facet = ()) -> CellEvidence | None:
        return self.cells.get((facet, layers, hidden))

    @property
    def facets(self) -> list[Facet]:
        return list(dict.fromkeys(answer.facet for answer in self.answers))


def facet_keys(space: SearchSpace) -> tuple[str, ...] | None:
    """The searched keys besides hidden and layers, if all have countable values."""
    others = sorted(space.names - MAP_KEYS)
    if any(name in space.continuous for name in others):
        return None
    return tuple(others)


def member_fits(row: TrialRow, threshold: float) -> tuple[int, int] | None:
    """(members, fits) of a countable trial; None if it does not count."""
    if row.state != "complete" or row.duplicate_of is not None:
        return None
    values, train = row.members.get(ANSWER_METRIC), row.members.get(TRAIN_METRIC)
    if not values or not train or len(values) != len(train):
        return None
    return len(values), fit_rule.fitting_members(train, values, threshold)


def build_probability(
    rows: Sequence[TrialRow], space: SearchSpace, threshold: float
) -> Probability:
    keys = facet_keys(space)
    if not MAP_KEYS <= space.names or keys is None:
        searched = ", ".join(sorted(space.names)) or "nothing"
        why = (
            "P(fit | width, depth) needs model.hidden and model.layers searched, and any other "
            f"searched key countable (a categorical, an int, a float with step); searched: "
            f"{searched}"
        )
        return Probability({}, [], (), 0, why)
    counted = []
    for row in rows:
        found = member_fits(row, threshold)
        if found is None:
            continue
        facet = tuple((key, row.params.get(key)) for key in keys)
        hidden, layers = int(row.params["model.hidden"]), int(row.params["model.layers"])
        counted.append((row.number, hidden, layers, found[0], found[1], facet))
    cells = pool_cells(counted)
    if not cells:
        return Probability({}, [], keys, 0, "no complete trial with its members' values yet")
    return Probability(cells, answers_by_depth(cells.values()), keys, len(counted))


def facet_text(facet: Facet) -> str:
    """'data.normalize=True', or '' without facets."""
    return ", ".join(f"{key}={value}" for key, value in facet)
