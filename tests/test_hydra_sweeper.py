"""`python src/train.py -m hparams_search=...`: the Optuna search through Hydra's sweeper door.

The door must lead to the very engine behind `python src/sweep.py`, so the search is run
both ways on the same settings and the studies, trial folders, best.yaml and printed
results are compared. Every command runs as a user types it (a subprocess), in a fresh
working folder, so anything either door writes outside `sweep.output_dir` shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import REPO_ROOT, TRAIN_SCRIPT, assert_one_error_line

SWEEP_SCRIPT = REPO_ROOT / "src" / "sweep.py"
TINY = (
    "trainer.max_epochs=30",
    "trainer.val_every=10",
    "logger.image_every=0",
    "sweep.n_trials=3",
    "sweep.workers=1",
)
NARROW_GRID = ("sweep.space.model.hidden.high=2", "sweep.space.model.layers.high=2")


def run_in(
    cwd: Path, script: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python <script> args...` started in `cwd`, as a user in that folder types it."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load_study(study_dir: Path) -> optuna.Study:
    return optuna.load_study(
        study_name=study_dir.name, storage=f"sqlite:///{study_dir / 'study.db'}"
    )


def trial_record(study: optuna.Study) -> list[tuple[int, dict, TrialState, float | None]]:
    return [(t.number, t.params, t.state, t.value) for t in study.get_trials()]



@pytest.fixture(scope="module")
def both_doors(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """The same small search once through Hydra's door and once through src/sweep.py."""
    doors = {}
    for door, script, first in (
        ("hydra", TRAIN_SCRIPT, ("-m", "hparams_search=arch")),
        ("sweep.py", SWEEP_SCRIPT, ()),
    ):
        cwd = tmp_path_factory.mktemp(door)
        process = run_in(cwd, script, *first, *TINY, f"sweep.output_dir={cwd / 'sweeps'}")
        doors[door] = (cwd, process)
    return doors


def test_hparams_search_arch_makes_the_study_src_sweep_py_makes(both_doors) -> None:
    cwd, process = both_doors["hydra"]
    assert process.returncode == 0, process.stderr
    study_dir = cwd / "sweeps" / "mlp_arch"
    study = load_study(study_dir)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 3
    for trial in study.get_trials():
        folder = study_dir / "trials" / str(trial.number)
        assert Path(trial.user_attrs["run_dir"]) == folder.resolve()
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["status"] == "completed"
        assert metrics["metrics"]["val/acc"]["mean"] == pytest.approx(trial.value)
        assert (folder / "config.yaml").exists()
    assert yaml.safe_load((study_dir / "best.yaml").read_text())["model"]["ensemble"] == 4
    assert json.loads((study_dir / "study.json").read_text())["n_trials"] == 3

    sweep_cwd, sweep_process = both_doors["sweep.py"]
    assert sweep_process.returncode == 0, sweep_process.stderr
    sweep_study_dir = sweep_cwd / "sweeps" / "mlp_arch"
    assert trial_record(study) == trial_record(load_study(sweep_study_dir)), "one engine, one seed"
    assert (study_dir / "best.yaml").read_text().replace(str(cwd), "<cwd>") == (
        sweep_study_dir / "best.yaml"
    ).read_text().replace(str(sweep_cwd), "<cwd>")
    assert process.stdout.replace(str(cwd), "<cwd>") == sweep_process.stdout.replace(
        str(sweep_cwd), "<cwd>"
    )


def test_the_search_writes_only_under_sweep_output_dir(both_doors) -> None:
    cwd, process = both_doors["hydra"]
    assert process.returncode == 0, process.stderr
    assert [p.name for p in cwd.iterdir()] == ["sweeps"], "no outputs/multirun, no .hydra folder"


def test_the_same_command_again_resumes_and_adds_nothing_through_either_door(both_doors) -> None:
    cwd, _ = both_doors["hydra"]
    study_dir = cwd / "sweeps" / "mlp_arch"
    before = trial_record(load_study(study_dir))
    again = run_in(
        cwd, TRAIN_SCRIPT, "-m", "hparams_search=arch", *TINY, f"sweep.output_dir={cwd / 'sweeps'}"
    )
    assert again.returncode == 0, again.stderr
    assert "3 complete, 0 pruned, 0 failed of sweep.n_trials=3" in again.stdout
    by_sweep_py = run_in(cwd, SWEEP_SCRIPT, *TINY, f"sweep.output_dir={cwd / 'sweeps'}")
    assert by_sweep_py.returncode == 0, by_sweep_py.stderr
    assert trial_record(load_study(study_dir)) == before
    assert sorted(p.name for p in (study_dir / "trials").iterdir()) == ["0", "1", "2"]


def test_a_resume_with_other_training_settings_is_the_engines_one_error_line(both_doors) -> None:
    cwd, _ = both_doors["hydra"]
    changed = [*TINY[1:], "trainer.max_epochs=40"]
    process = run_in(
        cwd,
        TRAIN_SCRIPT,
        "-m",
        "hparams_search=arch",
        *changed,
        f"sweep.output_dir={cwd / 'sweeps'}",
    )
    assert process.returncode == 2, process.stderr
    assert process.stderr.splitlines()[-1].startswith(
        "error: trainer.max_epochs=40: study 'mlp_arch'"
    )
    assert "Traceback" not in process.stderr


def test_hparams_search_grid_trains_each_cell_of_a_narrowed_space_once(tmp_path) -> None:
    args = ("-m", "hparams_search=grid", *TINY[:3], "sweep.workers=1", *NARROW_GRID)
    process = run_in(tmp_path, TRAIN_SCRIPT, *args, f"sweep.output_dir={tmp_path / 'sweeps'}")
    assert process.returncode == 0, process.stderr
    study = load_study(tmp_path / "sweeps" / "mlp_grid")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    cells = sorted((t.params["model.hidden"], t.params["model.layers"]) for t in trials)
    assert cells == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert (tmp_path / "sweeps" / "mlp_grid" / "best.yaml").exists()


@pytest.mark.parametrize(
    "args,fragments",
    [
        (("-m", "hparams_search=arch", "sweep.workers=0"), ("sweep.workers=0", "integer >= 1")),
        (("-m", "hparams_search=arch", "sweep.n_trails=3"), ("sweep.n_trails",)),
        (("-m", "hparams_search=arch", "sweep/sampler=nope"), ("sweep/sampler/nope", "tpe")),
        (("-m", "hparams_search=arch", "model.hidden=5,10"), ("model.hidden=5,10", "sweep.space")),
        (("-m", "hparams_search=arch", "model.layers=2"), ("model.layers", "searched")),
        (  # its jobs may run on other machines: the default SQLite file is refused
            ("-m", "hparams_search=arch", "hydra/launcher=submitit_slurm"),
            ("hydra/launcher=submitit_slurm", "sweep.storage=postgresql://"),
        ),
        (
            ("-m", "hparams_search=arch", "hydra.sweep.dir=elsewhere"),
            ("hydra.sweep.dir", "sweep.output_dir"),
        ),
        (("-m", "hparams_search=nope"), ("hparams_search/nope", "arch, grid")),
        (("hparams_search=arch",), ("hparams_search=arch", "add -m")),
    ],
)
def test_a_bad_search_command_is_one_error_line_and_creates_nothing(
    tmp_path, args, fragments
) -> None:
    process = run_in(
        tmp_path,
        TRAIN_SCRIPT,
        *args,
        *TINY[:3],
        f"sweep.output_dir={tmp_path / 'sweeps'}",
        timeout=120,
    )
    assert_one_error_line(process, *fragments)
    assert list(tmp_path.iterdir()) == [], "nothing created"


def test_info_plugins_and_help_list_the_sweeper_and_its_configs(tmp_path) -> None:
    info = run_in(tmp_path, TRAIN_SCRIPT, "--info", "plugins", timeout=120)
    assert info.returncode == 0, info.stderr
    sweepers = info.stdout.split("Sweeper:", 1)[1].split("\n\n", 1)[0]
    assert "MlpsweepOptunaSweeper" in sweepers and "BasicSweeper" in sweepers
    shown = run_in(tmp_path, TRAIN_SCRIPT, "--help", timeout=120)
    assert "hparams_search: arch, grid" in shown.stdout
    hydra_node = run_in(
        tmp_path, TRAIN_SCRIPT, "hparams_search=arch", "--cfg", "hydra", timeout=120
    )
    assert hydra_node.returncode == 0, hydra_node.stderr
    sweeper = yaml.safe_load(hydra_node.stdout)["hydra"]["sweeper"]
    assert sweeper["_target_"].endswith("mlpsweep_sweeper.MlpsweepOptunaSweeper")
