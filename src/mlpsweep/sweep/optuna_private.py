"""The two pieces of Optuna's private API the sweep needs, each behind one named function.

The sweep runs its own ask -> train -> tell loop (so it can count the budget under a lock),
which is what `Study.optimize` does internally; Optuna's public API has no hook for the
trial id that loop needs. Each function below names where Optuna itself
does the same, and `tests/test_optuna_private.py` fails loudly when an upgrade moves one.
"""

from __future__ import annotations

import optuna
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
