"""The sweep under races, several launchers, resumes with other settings, and bad input.

What a user sees is tested through `python src/sweep.py` (and `src/train.py`) subprocesses:
exit codes, one `error:` line, nothing left behind. Worker numbering and seeding are
tested in-process, where two launchers' first proposals can be compared exactly.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest

from conftest import assert_one_error_line
from mlpsweep.config import ConfigError, compose
from mlpsweep.sweep import SweepSettings, launch, parse_settings
from mlpsweep.sweep.fixed_settings import FIXED_SETTINGS_ATTR, first_difference
from mlpsweep.sweep.launcher import open_study
from mlpsweep.sweep.optuna_private import study_storage
from mlpsweep.sweep.optuna_setup import WORKER_COUNTER_ATTR, worker_study
from mlpsweep.training import MemberSummary, RunResult, learned_nothing_warning

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ("trainer.max_epochs=10", "trainer.val_every=5", "logger.image_every=0", "quiet=true")


def sweep_args(out: Path, *extra: str) -> list[str]:
    return ["sweep=default", *TINY, "sweep.workers=1", f"sweep.output_dir={out}", *extra]


def start_sweep(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "src/sweep.py", *args], cwd=REPO_ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, script, *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=300,
    )


def load(storage: str, name: str = "mlp_arch") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def workers_started(study: optuna.Study) -> int:
    storage = study_storage(study)
    return storage.get_study_system_attrs(storage.get_study_id_from_name(study.study_name))[
        WORKER_COUNTER_ATTR
    ]


# ---- two commands starting one new study at the same instant -------------------------


def start_at_once(commands: Sequence[Sequence[str]]) -> list[tuple[int, str]]:
    processes = [start_sweep(*command) for command in commands]
    return [(process.wait(timeout=300), process.communicate()[1]) for process in processes]


def test_three_commands_starting_one_new_sqlite_study_at_once_all_share_it(tmp_path: Path) -> None:
    args = sweep_args(tmp_path, "sweep.n_trials=3")
    outcomes = start_at_once([args] * 3)
    assert [code for code, _ in outcomes] == [0, 0, 0], [stderr for _, stderr in outcomes]
    study = load(f"sqlite:///{tmp_path / 'mlp_arch' / 'study.db'}")
    assert len(study.trials) == 3 and all(trial.state.is_finished() for trial in study.trials)
    assert workers_started(study) == 3, "each command's worker got its own number"


@pytest.mark.postgres
def test_two_commands_starting_one_new_postgresql_study_at_once_both_share_it(
    tmp_path: Path, postgres_url: str
) -> None:
    args = sweep_args(tmp_path, "sweep.n_trials=2", f"sweep.storage={postgres_url}")
    outcomes = start_at_once([args] * 2)
    assert [code for code, _ in outcomes] == [0, 0], [stderr for _, stderr in outcomes]
    study = load(postgres_url)
    assert len(study.trials) == 2 and workers_started(study) == 2


# ---- several launchers on one study: workers seeded apart ----------------------------


def launcher_view(out: Path, *extra: str) -> tuple[optuna.Study, int, SweepSettings]:
    """What one launcher does before training: open the study, take worker numbers."""
    cfg = compose(sweep_args(out, "sweep/sampler=random", *extra))
    settings = parse_settings(cfg)
    storage, _, first_number = open_study(settings, cfg)
    return worker_study(settings, storage, first_number), first_number, settings


def propose(study: optuna.Study, settings: SweepSettings) -> dict[str, object]:
    """The architecture the study's sampler proposes next (as a worker asks it)."""
    trial = study.ask()
    return {spec.path: spec.suggest(trial) for spec in settings.space}


def test_two_launchers_on_one_study_get_different_worker_numbers_and_first_proposals(
    tmp_path: Path,
) -> None:
    first_study, first_number, settings = launcher_view(tmp_path)
    second_study, second_number, _ = launcher_view(tmp_path)
    assert (first_number, second_number) == (0, 1)
    assert propose(first_study, settings) != propose(second_study, settings)


def test_a_launcher_of_two_workers_takes_two_numbers(tmp_path: Path) -> None:
    _, first, _ = launcher_view(tmp_path, "sweep.workers=2")
    _, second, _ = launcher_view(tmp_path, "sweep.workers=2")
    assert (first, second) == (0, 2)


def test_one_launcher_on_a_fresh_study_is_seeded_from_seed_alone(tmp_path: Path) -> None:
    study, number, settings = launcher_view(tmp_path, "seed=5")
    assert number == 0
    reference = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    proposals = [propose(study, settings) for _ in range(3)]
    assert proposals == [propose(reference, settings) for _ in range(3)]


# ---- a resume with other training settings -------------------------------------------


def test_resume_with_changed_max_epochs_is_refused_naming_the_key(tmp_path: Path) -> None:
    args = sweep_args(tmp_path, "sweep.n_trials=1")
    assert launch(compose(args), args) == 0
    storage = f"sqlite:///{tmp_path / 'mlp_arch' / 'study.db'}"
    assert load(storage).user_attrs[FIXED_SETTINGS_ATTR]["trainer.max_epochs"] == 10
    changed = [*sweep_args(tmp_path, "sweep.n_trials=2"), "trainer.max_epochs=20"]
    result = run_script("src/sweep.py", *changed)
    assert_one_error_line(
        result, "trainer.max_epochs=20", "trainer.max_epochs=10", "sweep.study_name="
    )
    assert len(load(storage).trials) == 1, "no trial added"


def test_resume_with_only_speed_settings_changed_goes_on(tmp_path: Path) -> None:
    args = sweep_args(tmp_path, "sweep.n_trials=1")
    assert launch(compose(args), args) == 0
    faster = [*sweep_args(tmp_path, "sweep.n_trials=2"), "trainer.threads=2"]
    assert launch(compose(faster), faster) == 0
    assert len(load(f"sqlite:///{tmp_path / 'mlp_arch' / 'study.db'}").trials) == 2


def test_only_keys_fixed_in_both_the_study_and_the_command_are_compared() -> None:
    assert first_difference({"model.lr": 0.01}, {"model.lr": 0.02}) == ("model.lr", 0.01, 0.02)
    assert first_difference({"model.lr": 0.01}, {"seed": 3}) is None, "only keys fixed in both"


def test_the_stored_settings_leave_out_the_searched_keys(tmp_path: Path) -> None:
    study, _, _ = launcher_view(tmp_path)
    fixed = study.user_attrs[FIXED_SETTINGS_ATTR]
    assert "model.hidden" not in fixed and "model.layers" not in fixed
    assert fixed["model.ensemble"] == 4 and "trainer.threads" not in fixed


# ---- bad input: one line, exit 2, nothing created ------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["sweep.sampler.seed=abc"], "sweep.sampler.seed='abc'"),
        (["+sweep.sampler.bogus=1"], "bogus"),
        (["+sweep.pruner.bogus=1"], "bogus"),
        (["sweep.space.model.layers.low=0", "sweep.space.model.layers.high=0"], "layers=0"),
        (["sweep.storage=postgresql://someone:secret@127.0.0.1:1/db"], "127.0.0.1:1"),
    ],
)
def test_a_rejected_sweep_setting_creates_nothing(
    tmp_path: Path, overrides: list[str], named: str
) -> None:
    out = tmp_path / "sweeps"
    result = run_script("src/sweep.py", *sweep_args(out, "sweep.n_trials=1"), *overrides)
    assert_one_error_line(result, named)
    assert not out.exists(), sorted(str(path) for path in out.rglob("*"))


@pytest.mark.parametrize("place", ["/proc/mlpsweep", "/sys/mlpsweep"])
def test_an_output_dir_that_cannot_be_created_is_one_line(place: str) -> None:
    result = run_script("src/sweep.py", *sweep_args(Path(place), "sweep.n_trials=1"))
    assert_one_error_line(result, "sweep.output_dir", place)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_sqlite_file_of_another_program_is_refused_and_left_untouched(tmp_path: Path) -> None:
    database = tmp_path / "mlp_arch" / "study.db"
    database.parent.mkdir()
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE foo (x INTEGER)")
    before = sha256(database)
    result = run_script("src/sweep.py", *sweep_args(tmp_path, "sweep.n_trials=1"))
    assert_one_error_line(result, "not an Optuna storage", "foo")
    assert sha256(database) == before
    assert sorted(path.name for path in database.parent.iterdir()) == ["study.db"]


def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    database = tmp_path / "notes.txt"
    database.write_text("my notes, not a database\n" * 10)
    storage = f"sweep.storage=sqlite:///{database}"
    result = run_script("src/sweep.py", *sweep_args(tmp_path / "out", "sweep.n_trials=1"), storage)
    assert_one_error_line(result, "not an SQLite database")
    assert database.read_text() == "my notes, not a database\n" * 10


def test_searched_key_fixed_on_the_command_line_creates_no_folder(tmp_path: Path) -> None:
    args = sweep_args(tmp_path / "sweeps", "model.hidden=5")
    with pytest.raises(ConfigError, match="model.hidden"):
        launch(compose(args), args)
    assert not (tmp_path / "sweeps").exists()


# ---- runs that overflow or learn nothing ---------------------------------------------


def test_an_lr_beyond_float32_with_the_plain_adam_is_one_line(tmp_path: Path) -> None:
    result = run_script(
        "src/train.py", "model.lr=1e39", "model.fused_adam=false", "trainer.max_epochs=5",
        "quiet=true", f"output_dir={tmp_path}",
    )
    assert_one_error_line(result, "overflowed", "model.lr", code=1)


def test_a_sweep_trial_whose_adam_step_overflows_fails_with_the_reason(tmp_path: Path) -> None:
    args = [*sweep_args(tmp_path, "sweep.n_trials=1"), "model.lr=1e39", "model.fused_adam=false"]
    result = run_script("src/sweep.py", *args)
    assert_one_error_line(result, "no trial completed", code=1)
    (trial,) = load(f"sqlite:///{tmp_path / 'mlp_arch' / 'study.db'}").trials
    assert "overflowed float32" in trial.user_attrs["fail_reason"]


def test_a_run_with_saturated_sigmoids_ends_with_a_learned_nothing_warning(tmp_path: Path) -> None:
    result = run_script(
        "src/train.py", "model.lr=1e10", "trainer.max_epochs=100", "quiet=true",
        f"output_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("completed:")
    (warning,) = result.stderr.strip().splitlines()
    assert warning.startswith("warning: the run learned nothing") and "0.57" in warning


def result_with_train_acc(*members: float) -> RunResult:
    return RunResult(
        Path("run"), "completed", 100, 61, 1.0, {"train/acc": MemberSummary.of(members)}
    )


def test_learned_nothing_means_no_better_than_the_more_common_label() -> None:
    assert learned_nothing_warning(result_with_train_acc(0.57, 0.57)) is not None
    assert learned_nothing_warning(result_with_train_acc(0.43)) is not None
    assert learned_nothing_warning(result_with_train_acc(0.58)) is None
    assert learned_nothing_warning(result_with_train_acc(0.5, 0.9)) is None, "the mean counts"


# ---- a configuration proposed while its twin still trains ----------------------------


ONE_POINT_SPACE = (
    "~sweep.space.model", "+sweep.space.model.hidden={type:categorical,choices:[3]}",
    "sweep/pruner=none",
)


@pytest.mark.slow
def test_two_workers_asking_one_config_at_once_train_it_once(tmp_path: Path) -> None:
    """Both workers ask while the other's trial still trains: the later one is a repeat."""
    args = [
        *sweep_args(tmp_path, "sweep.n_trials=2", *ONE_POINT_SPACE), "sweep.workers=2",
        "sweep.batch=1", "trainer.max_epochs=3000", "trainer.val_every=1000",
    ]
    result = run_script("src/sweep.py", *args)
    assert result.returncode == 0, result.stderr
    first, second = load(f"sqlite:///{tmp_path / 'mlp_arch' / 'study.db'}").get_trials()
    assert first.user_attrs["pid"] != second.user_attrs["pid"], "asked by the two workers"
    assert [first.state, second.state] == [optuna.trial.TrialState.COMPLETE] * 2
    assert "duplicate_of" not in first.user_attrs
    assert second.user_attrs["duplicate_of"] == first.number and second.values == first.values
    assert sorted(p.name for p in (tmp_path / "mlp_arch" / "trials").iterdir()) == ["0"]
