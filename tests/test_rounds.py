"""The grid's rounds of new initialisations, planned on hand-built studies: which cells get
more members, with which seeds, when planning waits, and where it stops."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.distributions import IntDistribution

from mlpsweep.config import ConfigError, compose
from mlpsweep.sweep.grid import check_study_grid
from mlpsweep.sweep.rounds import ROUND_ATTR, SEED_ATTR, plan_round, round_overrides
from mlpsweep.sweep.settings import parse_settings
from mlpsweep.sweep.trial_config import config_fingerprint, trial_config

SPACE = {"model.hidden": IntDistribution(1, 8), "model.layers": IntDistribution(1, 1)}


def settings_for(*extra: str) -> Any:
    return parse_settings(compose(["sweep=grid", "sweep.space.model.hidden.high=8",
                                   "sweep.space.model.layers.high=1", *extra]))


def add_cell(study: optuna.Study, hidden: int, fits: int, members: int = 4,
             attrs: dict[str, Any] | None = None) -> None:
    values = {"train/acc": [1.0] * fits + [0.9] * (members - fits), "val/acc": [1.0] * members}
    study.add_trial(optuna.create_trial(
        params={"model.hidden": hidden, "model.layers": 1}, distributions=SPACE, values=[0.9],
        user_attrs={"member_values": values, **(attrs or {})},
    ))


def study_of(rows: list[tuple[int, int]]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for hidden, fits in rows:
        add_cell(study, hidden, fits)
    return study


CLEAR = [(1, 0), (2, 0), (3, 0), (4, 2), (5, 3), (6, 4), (7, 4), (8, 4)]


def queued(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING"]


def hidden_of(trial: optuna.trial.FrozenTrial) -> int:
    """A queued trial's width: its fixed params, which `enqueue_trial` keeps."""
    return int(trial.system_attrs["fixed_params"]["model.hidden"])


def test_a_round_doubles_the_deciding_cells_with_seeds_the_cell_never_used() -> None:
    study = study_of(CLEAR)
    count = plan_round(study, settings_for())
    new = queued(study)
    assert count == len(new) > 0
    widths = {hidden_of(t) for t in new}
    assert widths <= {4, 5, 6, 7, 8} and {4, 5} <= widths  # 0 of 4 below 4: decided
    for width in widths:
        mine = [t for t in new if hidden_of(t) == width]
        assert len(mine) == 1  # 4 members more: one trial of model.ensemble=4
        assert mine[0].user_attrs[ROUND_ATTR] == 1 and mine[0].user_attrs[SEED_ATTR] != 0


def test_a_rounds_trial_is_a_new_config_not_a_twin_of_its_cell() -> None:
    study = study_of(CLEAR)
    plan_round(study, settings_for())
    trial = study.ask()  # takes the queued trial, as a worker does
    base = ["sweep=grid", "trainer.max_epochs=60"]
    params = {"model.hidden": trial.params.get("model.hidden", trial.suggest_int(
        "model.hidden", 1, 8)), "model.layers": trial.suggest_int("model.layers", 1, 1)}
    extra = round_overrides(trial)
    assert extra == {"seed": trial.user_attrs[SEED_ATTR]}
    again = config_fingerprint(trial_config([o for o in base if "sweep" not in o],
                                            params | extra))
    first = config_fingerprint(trial_config([o for o in base if "sweep" not in o], params))
    assert again != first


def test_no_round_while_a_depth_still_trains_or_before_round_zero_is_asked() -> None:
    study = study_of(CLEAR[:-1])  # 7 of 8 cells: round 0 not all asked
    assert plan_round(study, settings_for()) == 0
    study = study_of(CLEAR)
    study.ask()  # a trial of this depth is running
    assert plan_round(study, settings_for()) == 0


def test_rounds_stop_at_max_members_and_are_off_at_the_ensemble() -> None:
    assert plan_round(study_of(CLEAR), settings_for("sweep.max_members=4")) == 0
    study = study_of(CLEAR)
    for hidden, fits in CLEAR:  # 8 members per cell already
        add_cell(study, hidden, fits, attrs={ROUND_ATTR: 1, SEED_ATTR: 1})
    assert plan_round(study, settings_for("sweep.max_members=8")) == 0
    planned = plan_round(study, settings_for("sweep.max_members=32"))
    seeds = {t.user_attrs[SEED_ATTR] for t in queued(study)}
    assert planned > 0 and seeds == {2, 3}  # 8 more members: two trials, seeds 0 and 1 used


def test_a_grid_study_with_rounds_is_still_this_grid() -> None:
    settings = settings_for()
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"model.hidden": 3, "model.layers": 1}, user_attrs={ROUND_ATTR: 1})
    study.tell(study.ask(), 0.5)
    check_study_grid(study, settings)  # no error: a round's trial has no grid id


@pytest.mark.parametrize(("override", "message"), [
    ("sweep.max_members=2", "sweep.max_members=2: must be >= model.ensemble=4"),
    ("sweep.max_members=4.5", "sweep.max_members=4.5: expected an integer"),
    ("+sweep.space.model.lr={type:float,low:0.001,high:0.1}",
     "sweep.space.model.lr: a grid over a float needs a step"),
])
def test_bad_round_settings_are_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        settings_for(override)


def test_a_grid_over_four_keys_is_refused() -> None:
    extra = ["+sweep.space.model.lr={type:categorical,choices:[0.01,0.02]}",
             "+sweep.space.data.normalize={type:categorical,choices:[false,true]}"]
    with pytest.raises(ConfigError, match="a grid searches at most 3 keys"):
        settings_for(*extra)


def test_the_progress_counts_a_maps_later_rounds_and_stays_open_between_them() -> None:
    """After round 0 the count read 8/8, and in a log file nothing more was printed while
    the rounds trained for many minutes; the rounds' trials raise the total instead."""
    from mlpsweep.sweep.launcher import SweepProgress

    settings = settings_for()
    study = study_of(CLEAR)
    progress = SweepProgress(settings, enabled=True)
    printed: list[str] = []
    progress.say = printed.append  # type: ignore[method-assign]
    progress.refresh(study)
    assert progress.finished == progress.goal == settings.n_trials == 8
    assert not progress.done(), "a worker may still plan the next round"
    assert plan_round(study, settings) > 0
    progress.refresh(study)
    later = len(queued(study))
    assert progress.goal == 8 + later and progress.bar.total == 8 + later
    assert printed[-1].startswith(f"sweep {settings.study_name}: 8/{8 + later} trials finished, "
                                  f"{later} of them later rounds")


def test_a_retried_round_trial_counts_once_in_the_progress() -> None:
    """A dead worker's round trial (FAIL) and the copy Optuna queues in its place are one
    trial of the study: counting both would leave the bar one short of its total forever."""
    from mlpsweep.sweep.launcher import SweepProgress

    settings = settings_for()
    study = study_of(CLEAR)
    planned = plan_round(study, settings)
    assert planned > 0
    dead = study.ask()  # a queued round trial, asked by a worker that then dies
    study._storage.set_trial_state_values(dead._trial_id, optuna.trial.TrialState.FAIL)
    study.enqueue_trial(dead.params, user_attrs=dict(study.trials[dead.number].user_attrs))
    waiting = queued(study)[-1]
    study._storage.set_trial_system_attr(waiting._trial_id, "retry_history", [dead.number])
    progress = SweepProgress(settings, enabled=True)
    progress.say = lambda line: None  # type: ignore[method-assign]
    progress.refresh(study)
    assert progress.goal == 8 + planned, "the dead trial and its copy are one"
    assert progress.finished == 8, "the dead trial is not a finished one"
