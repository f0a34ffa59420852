"""The searched space as the storage records it, and how much of it a study trained.

The summary never reads the sweep's config: the space is the union of the trials' Optuna
distributions, so it is right for a study of any age, sampler or machine. Its size counts
every value a grid would visit: an int parameter every `step` in [low, high] (`log` changes
how a sampler draws, not which values exist), a categorical its choices, a float with a
`step` its grid points; a float without `step` is continuous and has no size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial

from mlpsweep.summary.trial_rows import ARCHITECTURE_KEYS, TrialRow

MAP_KEYS = frozenset(ARCHITECTURE_KEYS)  # the fit map needs exactly hidden x layers


@dataclass(frozen=True)
class Dimension:
    """One searched key: its distribution, and the values a grid over it would train."""

    name: str
    distribution: BaseDistribution

    @property
    def size(self) -> int | None:
        """How many values; None for a continuous float (no step)."""
        spec = self.distribution
        if isinstance(spec, CategoricalDistribution):
            return len(spec.choices)
        if isinstance(spec, IntDistribution):
            return (spec.high - spec.low) // spec.step + 1
        if isinstance(spec, FloatDistribution) and spec.step is not None:
            return int(math.floor((spec.high - spec.low) / spec.step + 1e-9)) + 1
        return None

    def values(self) -> list[Any] | None:
        """Every value in order (ints ascending, choices as listed); None when continuous."""
        spec = self.distribution
        if isinstance(spec, CategoricalDistribution):
            return list(spec.choices)
        if isinstance(spec, IntDistribution):
            return list(range(spec.low, spec.high + 1, spec.step))
        size = self.size
        if isinstance(spec, FloatDistribution) and size is not None and spec.step is not None:
            return [spec.low + index * spec.step for index in range(size)]
        return None


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]

    @property
    def size(self) -> int | None:
        """The number of configurations; None when a dimension is continuous."""
        sizes = [dimension.size for dimension in self.dimensions]
        return None if None in sizes else math.prod(size for size in sizes if size is not None)

    @property
    def continuous(self) -> list[str]:
        return [dimension.name for dimension in self.dimensions if dimension.size is None]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(dimension.name for dimension in self.dimensions)

    @property
    def is_architecture_map(self) -> bool:
        """Exactly model.hidden x model.layers, both with countable values: one map cell each."""
        return self.names == MAP_KEYS and not self.continuous

    @property
    def noun(self) -> str:
        """'architectures' when only the architecture is searched, else 'configurations'."""
        return "architectures" if self.names <= MAP_KEYS else "configurations"

    def values(self, name: str) -> list[Any]:
        for dimension in self.dimensions:
            if dimension.name == name:
                return dimension.values() or []
        return []


def space_of(trials: Sequence[FrozenTrial]) -> SearchSpace:
    """The union of the trials' distributions; a key's latest distribution wins (a resumed
    sweep with a wider space widens it)."""
    distributions: dict[str, BaseDistribution] = {}
    for trial in trials:
        distributions.update(trial.distributions)
    return SearchSpace(tuple(Dimension(name, spec) for name, spec in distributions.items()))


@dataclass(frozen=True)
class Coverage:
    """'N of M architectures': how much of the space complete trials trained.

    A repeat (`duplicate_of`) is its twin's configuration again and adds nothing; pruned
    configurations without a complete trial are counted apart, since they stopped early.
    """

    trained: int
    space: SearchSpace
    pruned_only: int
    repeats: int

    @property
    def total(self) -> int | None:
        return self.space.size

    @property
    def complete(self) -> bool:
        """Every configuration of the space has a complete trial: the answer is definitive."""
        return self.total is not None and self.trained >= self.total

    def sentence(self) -> str:
        noun = self.space.noun
        if self.total is None:
            keys = ", ".join(self.space.continuous)
            text = (
                f"{self.trained} distinct {noun} trained; the space has no finite size "
                f"({keys}: a float without step is continuous)"
            )
        else:
            text = f"{self.trained} of {self.total} {noun} of the search space trained"
        extra = []
        if self.pruned_only:
            extra.append(f"{self.pruned_only} more only pruned (stopped early)")
        if self.repeats:
            extra.append(f"{self.repeats} repeated proposals not trained again")
        return text + (f" ({'; '.join(extra)})" if extra else "")


def coverage_of(rows: Sequence[TrialRow], space: SearchSpace) -> Coverage:
    def config(row: TrialRow) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted(row.params.items()))

    trained = {config(row) for row in rows if row.state == "complete" and row.params}
    pruned = {config(row) for row in rows if row.state == "pruned" and row.params}
    repeats = sum(1 for row in rows if row.duplicate_of is not None)
    return Coverage(len(trained), space, len(pruned - trained), repeats)
