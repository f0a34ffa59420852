"""`sweep=grid`: every cell of `sweep.space` trained once, deepest first, then by width.

The grid's expansion and order are checked on Optuna objects alone; real tiny grids (30
epochs) check coverage and resume; `python src/sweep.py` subprocesses check what a user sees
for bad input (one line, exit 2, no study folder).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from conftest import assert_picture_has_content
from mlpsweep.config import ConfigError, compose
from mlpsweep.sweep import launch, parse_settings
from mlpsweep.sweep.grid import OrderedGridSampler
from mlpsweep.sweep.optuna_private import grid_cells
from mlpsweep.sweep.optuna_setup import make_sampler
from mlpsweep.sweep.settings import ParamSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = (
    "trainer.max_epochs=30", "trainer.val_every=10", "logger.image_every=0", "quiet=true",
    "sweep.workers=1",
)
SMALL_GRID = ("sweep.space.model.hidden.high=3", "sweep.space.model.layers.high=2")
SMALL_CELLS = {(hidden, layers) for hidden in (1, 2, 3) for layers in (1, 2)}


def grid_overrides(out: Path, *extra: str) -> list[str]:
    return ["sweep=grid", *TINY, f"sweep.output_dir={out}", *extra]


def run_grid(out: Path, *extra: str) -> optuna.Study:
    overrides = grid_overrides(out, *extra)
    cfg = compose(overrides)
    assert launch(cfg, overrides) == 0
    settings = parse_settings(cfg)
    return optuna.load_study(study_name=settings.study_name, storage=settings.storage_url)


def cells(study: optuna.Study) -> list[tuple[int, int]]:
    """(hidden, layers) of each trial, in trial-number order."""
    return [(t.params["model.hidden"], t.params["model.layers"]) for t in study.get_trials()]


# ---- the grid's values and order -------------------------------------------------------


def test_an_int_expands_to_every_integer_and_ignores_log() -> None:
    spec = ParamSpec("model.hidden", "int", 1, 6, log=True)
    assert spec.grid_values() == (1, 2, 3, 4, 5, 6) and spec.grid_count() == 6
    assert ParamSpec("model.hidden", "int", 2, 9, step=3).grid_values() == (2, 5, 8)


def test_a_float_expands_by_its_step_to_exact_decimals() -> None:
    spec = ParamSpec("model.lr", "float", 0.1, 0.3, step=0.1)
    assert spec.grid_values() == (0.1, 0.2, 0.3)  # not 0.30000000000000004
    assert ParamSpec("model.lr", "float", 0.01, 0.05, step=0.02).grid_values() == (0.01, 0.03, 0.05)


def test_a_categorical_expands_to_its_choices() -> None:
    assert ParamSpec("model.act", "categorical", choices=("a", "b")).grid_values() == ("a", "b")


def test_the_default_grid_is_the_full_default_space_with_ensembles_of_four() -> None:
    cfg = compose(["sweep=grid"])
    settings = parse_settings(cfg)
    assert settings.n_trials == 256 and settings.study_name == "mlp_grid"
    assert settings.sampler == {"name": "grid"} and settings.pruner["name"] == "none"
    assert cfg.model.ensemble == 4
    # a cell stops once all its members fit, by the fit definition's own bar
    assert cfg.trainer.stop_at_val_acc == cfg.trainer.fit_val_acc == 0.99
    assert parse_settings(compose(["sweep=grid", *SMALL_GRID])).n_trials == 6


def test_the_ordered_grid_walks_deepest_first_then_hidden_then_other_keys() -> None:
    space = {"model.lr": [0.1, 0.01], "model.hidden": [1, 2, 3], "model.layers": [1, 2]}
    study = optuna.create_study(sampler=OrderedGridSampler(space))
    order = []
    for _ in range(12):
        trial = study.ask()
        params = (
            trial.suggest_int("model.layers", 1, 2), trial.suggest_int("model.hidden", 1, 3),
            trial.suggest_categorical("model.lr", [0.1, 0.01]),
        )
        order.append(params)
        study.tell(trial, 0.0)  # the last tell must not raise (GridSampler's study.stop())
    # layers most significant, deepest first; the others in the order each key lists them
    # (lr 0.1 before 0.01)
    assert order == list(itertools.product([2, 1], [1, 2, 3], [0.1, 0.01]))


def test_a_grid_without_layers_or_hidden_is_ordered_by_key_name() -> None:
    sampler = OrderedGridSampler({"b": [2, 1], "a": ["y", "x"]})
    assert grid_cells(sampler) == [("y", 2), ("y", 1), ("x", 2), ("x", 1)]  # (a, b) cells


def test_telling_the_last_cell_of_a_grid_does_not_raise(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, sampler=OrderedGridSampler({"x": [1, 2]}))
    for _ in range(2):
        trial = study.ask()
        trial.suggest_int("x", 1, 2)
        study.tell(trial, 1.0)
    assert len(study.get_trials()) == 2


def test_every_worker_walks_the_same_grid_whatever_the_seed() -> None:
    settings = parse_settings(compose(["sweep=grid", *SMALL_GRID, "seed=5"]))
    assert grid_cells(make_sampler(settings, 0)) == grid_cells(make_sampler(settings, 3))
    other_seed = parse_settings(compose(["sweep=grid", *SMALL_GRID, "seed=9"]))
    assert grid_cells(make_sampler(other_seed, 1)) == grid_cells(make_sampler(settings, 0))


# ---- real tiny grids --------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
    out = tmp_path_factory.mktemp("grid")
    return out, run_grid(out, *SMALL_GRID)


def test_a_small_grid_trains_each_cell_exactly_once(small_grid) -> None:
    _, study = small_grid
    trained = cells(study)
    assert len(trained) == len(SMALL_CELLS) and set(trained) == SMALL_CELLS
    assert all(t.state.is_finished() for t in study.get_trials())
    assert all(len(t.user_attrs["metrics"]) > 0 for t in study.get_trials())


def test_a_finished_map_ends_with_its_answer_curves_and_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_grid(tmp_path, *SMALL_GRID)
    printed = capsys.readouterr().out
    assert "## The answer: how likely one initialisation is to fit, per depth" in printed
    assert "| 1 | 3 of 3 | 12 |" in printed and "| 2 | 3 of 3 | 12 |" in printed
    assert "*Capacity floor.* The training labels change value 6 times" in printed
    study_dir = tmp_path / "mlp_grid"
    assert f"curves: {study_dir / 'plots' / 'curves.png'}" in printed
    for name in ("curves", "map"):
        assert_picture_has_content(study_dir / "plots" / f"{name}.png", name)
    assert (study_dir / "summary.json").is_file() and (study_dir / "summary.md").is_file()


def test_a_map_whose_summary_fails_says_so_and_keeps_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlpsweep.summary import summarize
    from mlpsweep.summary.study_source import SummaryError

    def refuse(*args: object, **kwargs: object) -> None:
        raise SummaryError("the storage went away")

    monkeypatch.setattr(summarize, "summarize_study", refuse)
    run_grid(tmp_path, "sweep.space.model.hidden.high=1", "sweep.space.model.layers.high=1")
    captured = capsys.readouterr()
    assert "warning: the map's summary was not written: the storage went away" in captured.err
    assert "## The answer" not in captured.out


def test_the_grid_trains_deepest_first_then_by_hidden(small_grid) -> None:
    _, study = small_grid
    assert cells(study) == sorted(SMALL_CELLS, key=lambda cell: (-cell[1], cell[0]))


def test_re_running_a_finished_grid_trains_nothing(small_grid) -> None:
    out, study = small_grid
    before = [(t.number, t.params, t.datetime_complete) for t in study.get_trials()]
    again = run_grid(out, *SMALL_GRID)
    assert [(t.number, t.params, t.datetime_complete) for t in again.get_trials()] == before
    assert len(list((out / "mlp_grid" / "trials").iterdir())) == len(SMALL_CELLS)


def test_a_half_done_grid_is_completed_with_each_cell_once(tmp_path: Path) -> None:
    grid = ("sweep.space.model.hidden.high=2", "sweep.space.model.layers.high=2")
    first = cells(run_grid(tmp_path, *grid, "sweep.n_trials=2"))
    assert len(first) == 2
    trained = cells(run_grid(tmp_path, *grid))  # n_trials back to the grid's size
    assert trained[:2] == first
    assert sorted(trained) == sorted(itertools.product([1, 2], [1, 2]))


def test_a_different_grid_in_the_same_study_is_refused(small_grid) -> None:
    out, _ = small_grid
    with pytest.raises(ConfigError, match="sweep.study_name='mlp_grid'.*another grid"):
        run_grid(out, "sweep.space.model.hidden.high=4", "sweep.space.model.layers.high=2")


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["+sweep.space.model.lr={type:float,low:0.001,high:0.1}"], "sweep.space.model.lr"),
        (
            ["+sweep.space.model.lr={type:float,low:0.001,high:1.0,step:0.001}"],
            "model.hidden 64 x model.layers 4 x model.lr 1000 has 256,000 cells",
        ),
        (["sweep.n_trials=257"], "sweep.n_trials=257"),
        (["sweep/sampler=tpe"], "sweep.n_trials=null"),
        (["+sweep.sampler.seed=3"], "sweep.sampler.seed"),
    ],
)
def test_bad_grid_input_is_one_line_before_anything_is_created(
    tmp_path: Path, overrides: list[str], named: str
) -> None:
    result = subprocess.run(
        [sys.executable, "src/sweep.py", *grid_overrides(tmp_path / "out"), *overrides],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()


def test_a_null_budget_outside_a_grid_is_refused() -> None:
    with pytest.raises(ConfigError, match="sweep.n_trials=null"):
        parse_settings(compose(["sweep=default", "sweep.n_trials=null"]))
