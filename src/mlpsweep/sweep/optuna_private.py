"""The three pieces of Optuna's private API the sweep needs, each behind one named function.

The sweep runs its own ask -> train -> tell loop (so it can count the budget under a lock),
which is what `Study.optimize` does internally; Optuna's public API has no hook for the
trial id that loop needs, nor for the order in which `GridSampler` walks
its grid. Each function below names where Optuna itself does the same, and
`tests/test_optuna_private.py` fails loudly when an upgrade moves one.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.samplers import GridSampler
from optuna.storages import BaseStorage


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of a live trial (not its number within the study).

    Optuna reads `trial._trial_id` the same way in `optuna/study/_optimize.py` (`_run_trial`).
    """
    return trial._trial_id


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage a loaded study reads and writes.

    Optuna reads `study._storage` the same way in `optuna/storages/_heartbeat.py`
    (`fail_stale_trials`) and `optuna/study/_optimize.py` (`_run_trial`).
    """
    return study._storage


def grid_cells(sampler: GridSampler) -> list[tuple[Any, ...]]:
    """The sampler's own list of grid cells (not a copy), to reorder in place.

    `GridSampler.__init__` builds `self._all_grids` as the product of the value lists in
    sorted parameter-name order and shuffles it with its seed; `before_trial` then gives
    trial number n (while n < the grid's size) the cell `self._all_grids[n]`, and
    `sample_independent` reads each value from it. Optuna has no public way to set the order.
    """
    return sampler._all_grids
