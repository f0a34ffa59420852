"""`sweep/sampler=grid`: Optuna's GridSampler over `sweep.space`, walked in a fixed order.

Optuna's GridSampler shuffles its cells with its seed. Here the cells are sorted instead, by
`model.layers` from the deepest, then `model.hidden` from the narrowest, then the other
searched keys, so that neighbouring trial numbers are similar networks (same depth, close
widths): batched trials pad little. Deepest first because deep cells cost the most (they
rarely fit, so they train every epoch): started last, the deepest, widest batch of the
full map ran alone for 88 of its 710 s while the other worker idled; started early, the
cheap shallow batches fill in at the end. The order depends on the space only, so every
worker and launcher of a study walks the same grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.samplers import GridSampler
from optuna.trial import FrozenTrial, TrialState

from mlpsweep.config import ConfigError
from mlpsweep.sweep.optuna_private import grid_cells
from mlpsweep.sweep.rounds import ROUND_ATTR
from mlpsweep.sweep.settings import ParamSpec, SweepSettings

ORDER_FIRST = ("model.layers", "model.hidden")  # then the other keys, alphabetically
DESCENDING = frozenset({"model.layers"})  # the deepest first; every other key in its own order


def grid_search_space(space: Sequence[ParamSpec]) -> dict[str, list[Any]]:
    """GridSampler's `search_space`: each searched config path and every value it takes."""
    return {spec.path: list(spec.grid_values()) for spec in space}


def grid_order(names: Sequence[str]) -> list[str]:
    """The keys the grid is sorted by, most significant first."""
    first = [name for name in ORDER_FIRST if name in names]
    return first + sorted(name for name in names if name not in first)


class OrderedGridSampler(GridSampler):
    """GridSampler whose trial n trains the n-th cell in (layers from the deepest, hidden, ...)
    order.

    It is not seeded: the seed would only shuffle, and all workers must share one order.
    """

    def __init__(self, search_space: dict[str, list[Any]]) -> None:
        super().__init__(search_space, seed=0)
        names = sorted(search_space)  # the order of the values inside each cell
        columns = [
            (names.index(name), search_space[name], -1 if name in DESCENDING else 1)
            for name in grid_order(names)
        ]
        grid_cells(self).sort(
            key=lambda cell: tuple(
                sign * values.index(cell[column]) for column, values, sign in columns
            )
        )

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Nothing: GridSampler calls `study.stop()` after the last cell, which raises outside
        `Study.optimize`; with ask/tell the worker's budget ends the sweep instead."""


def grid_sampler(settings: SweepSettings) -> OrderedGridSampler:
    return OrderedGridSampler(grid_search_space(settings.space))


def check_study_grid(study: optuna.Study, settings: SweepSettings) -> None:
    """A grid study holds one grid: trials of another grid (or sampler) would use up the
    budget without covering this grid's cells, so a different grid needs its own study."""
    grid = grid_search_space(settings.space)
    for trial in study.get_trials(deepcopy=False):
        if ROUND_ATTR in trial.user_attrs:
            continue  # a later round's trial: enqueued with fixed params, it has no grid id
        # finished only: a trial just asked by another worker may not have its cell yet
        if trial.state.is_finished() and trial.system_attrs.get("search_space") != grid:
            ranges = ", ".join(f"{name} {values[0]}..{values[-1]}" for name, values in grid.items())
            raise ConfigError(
                f"sweep.study_name={settings.study_name!r}: the study holds trial "
                f"{trial.number} of another grid or sampler, not of this grid ({ranges}); "
                "choose another sweep.study_name"
            )
