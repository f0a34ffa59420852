"""Optuna's private API that the sweep relies on still exists where it is expected.

The sweep runs its own ask -> train -> tell loop, as `Study.optimize` does inside, and so
reaches three private names. An Optuna upgrade that moves one must fail here, naming it,
rather than deep inside a sweep.
"""

from __future__ import annotations

import time
import warnings

import optuna
from optuna.trial import TrialState

from mlpsweep.sweep.optuna_private import grid_cells, study_storage, trial_id
from mlpsweep.sweep.worker import TrialHeartbeats


def sqlite_study(tmp_path, heartbeat_interval: int | None = None) -> optuna.Study:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=heartbeat_interval,
        grace_period=2 * heartbeat_interval if heartbeat_interval else None,
    )
    return optuna.create_study(storage=storage)


def test_a_trial_still_has_its_storage_id(tmp_path) -> None:
    study = sqlite_study(tmp_path)
    trial = study.ask()
    assert isinstance(getattr(trial, "_trial_id", None), int), (
        "optuna.Trial._trial_id is gone: update mlpsweep.sweep.optuna_private.trial_id"
    )
    assert study_storage(study).get_trial(trial_id(trial)).number == trial.number


def test_a_study_still_has_its_storage(tmp_path) -> None:
    study = sqlite_study(tmp_path)
    assert isinstance(getattr(study, "_storage", None), optuna.storages.BaseStorage), (
        "optuna.Study._storage is gone: update mlpsweep.sweep.optuna_private.study_storage"
    )


def test_a_batch_heartbeat_keeps_its_untold_trials_alive_and_lets_a_done_one_go_stale(
    tmp_path,
) -> None:
    study = sqlite_study(tmp_path, heartbeat_interval=1)  # stale after a 2 s silence
    # a silence is waited out for 3.5 s: SQLite keeps the times to the whole second, so a
    # 2.5 s silence can read as 2 s, not stale yet (seen once in CI)
    silence = 3.5
    kept, released = study.ask(), study.ask()
    with TrialHeartbeats(study_storage(study), [kept, released]) as heartbeats:
        time.sleep(2.5)
        optuna.storages.fail_stale_trials(study)
        assert [t.state for t in study.trials] == [TrialState.RUNNING] * 2
        heartbeats.done(released)  # told trials stop beating; the other one keeps going
        time.sleep(silence)
        optuna.storages.fail_stale_trials(study)
        assert [t.state for t in study.trials] == [TrialState.RUNNING, TrialState.FAIL]
    time.sleep(silence)
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == TrialState.FAIL  # silent since the batch ended: stale


def test_grid_sampler_keeps_its_cells_in_all_grids_in_sorted_name_order() -> None:
    sampler = optuna.samplers.GridSampler({"b": [1, 2], "a": ["x", "y", "z"]}, seed=1)
    cells = getattr(sampler, "_all_grids", None)
    assert isinstance(cells, list), (
        "optuna.samplers.GridSampler._all_grids is gone: "
        "update mlpsweep.sweep.optuna_private.grid_cells"
    )
    assert grid_cells(sampler) is cells
    # each cell's values follow the sorted parameter names: (a, b)
    assert sorted(cells) == [(a, b) for a in ("x", "y", "z") for b in (1, 2)]


def test_grid_sampler_gives_trial_n_the_nth_cell_of_all_grids() -> None:
    sampler = optuna.samplers.GridSampler({"a": [1, 2, 3], "b": [10, 20]}, seed=1)
    wanted = sorted(grid_cells(sampler), reverse=True)
    grid_cells(sampler)[:] = wanted
    study = optuna.create_study(sampler=sampler)
    for cell in wanted:  # asked, not told: GridSampler's last tell would call study.stop()
        trial = study.ask()
        assert (trial.suggest_int("a", 1, 3), trial.suggest_int("b", 10, 20)) == cell, (
            "GridSampler no longer maps trial n to _all_grids[n]: "
            "update mlpsweep.sweep.grid.OrderedGridSampler"
        )
