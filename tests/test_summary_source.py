"""Which storage the summary reads, and that it only reads it (issue 19, items 7, 12, 13, 20):
a damaged or empty study.db is one line and stays as it was, a copied study folder is
summarised from its own study.db, a misspelled study name gets the studies that exist."""

from __future__ import annotations

import csv
import hashlib
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution

from conftest import REPO_ROOT, assert_one_error_line
from mlpsweep.config import compose
from mlpsweep.summary.study_source import (
    SummaryError,
    find_study_folder,
    open_readonly_storage,
)
from mlpsweep.sweep import launch

SPACE = {"model.hidden": IntDistribution(1, 64), "model.layers": IntDistribution(1, 4)}


def summarize(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "src/summarize.py", *args], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=300,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-trial sweep's folder (40 epochs a trial)."""
    out = tmp_path_factory.mktemp("sweeps")
    overrides = [
        "sweep=default", "trainer.max_epochs=40", "trainer.val_every=20", "quiet=true",
        "sweep.workers=1", "sweep.n_trials=2", "sweep/pruner=none", f"sweep.output_dir={out}",
    ]
    assert launch(compose(overrides), overrides) == 0
    return out / "mlp_arch"


def many_trials_study(folder: Path) -> Path:
    """A study of 40 trials with padded attributes: a file of many pages to damage."""
    folder.mkdir(parents=True)
    database = folder / "study.db"
    study = optuna.create_study(
        study_name=folder.name, storage=f"sqlite:///{database}", direction="maximize"
    )
    for hidden in range(1, 41):
        study.add_trial(optuna.create_trial(
            params={"model.hidden": hidden, "model.layers": 1}, distributions=SPACE,
            value=0.5, user_attrs={"note": "x" * 500},
        ))
    return database


def test_a_damaged_study_db_is_one_line_and_left_as_it_was(tmp_path: Path) -> None:
    database = many_trials_study(tmp_path / "broken")
    # Zero the pages of the trials' attributes only: the storage opens, and the damage
    # was met later, wherever the summary first read them (a 108-line traceback).
    with closing(sqlite3.connect(database)) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = [number for (number,) in db.execute(
            "SELECT pageno FROM dbstat WHERE name = 'trial_user_attributes' AND pagetype = 'leaf'"
        )]
    data = bytearray(database.read_bytes())
    for number in pages:
        data[(number - 1) * page_size:number * page_size] = bytes(page_size)
    database.write_bytes(data)
    before = sha256(database)
    result = summarize(str(database.parent))
    assert_one_error_line(result, str(database), "is damaged (")
    assert sha256(database) == before
    assert not (database.parent / "summary.md").exists()


def test_an_empty_study_db_is_one_line_and_stays_empty(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "study.db").touch()
    result = summarize(str(folder))
    assert_one_error_line(result, "study.db", "empty")
    assert (folder / "study.db").stat().st_size == 0, "the summary wrote Optuna's schema into it"


def test_the_summary_opens_the_storage_read_only(small_study: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(small_study, folder)
    storage = open_readonly_storage(f"sqlite:///{folder / 'study.db'}")
    assert [study.study_name for study in storage.get_all_studies()] == ["mlp_arch"]
    with pytest.raises(optuna.exceptions.StorageInternalError) as caught:
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "another")
    assert "readonly database" in str(caught.value.__cause__)
    storage.engine.dispose()
    before = sha256(folder / "study.db")
    result = summarize(str(folder))
    assert result.returncode == 0, result.stderr
    assert sha256(folder / "study.db") == before


def test_a_copied_study_folder_is_summarised_from_its_own_study_db(
    small_study: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "elsewhere" / "mlp_arch"
    shutil.copytree(small_study, copy)
    original = f"sqlite:///{small_study / 'study.db'}"
    # the original goes on (a third trial), the copy keeps the two it was copied with
    optuna.load_study(study_name="mlp_arch", storage=original).add_trial(
        optuna.create_trial(state=optuna.trial.TrialState.FAIL)
    )
    result = summarize(str(copy))
    assert result.returncode == 0, result.stderr
    assert f"sqlite:///{(copy / 'study.db').resolve()}" in result.stdout, "says what it read"
    assert str(small_study / "study.db") not in result.stdout
    with open(copy / "trials.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2


def test_a_misspelled_study_name_gets_the_closest_and_the_studies_there(tmp_path: Path) -> None:
    for name in ("mlp_arch", "mlp_grid"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "study.json").write_text("{}")
    with pytest.raises(SummaryError) as caught:
        find_study_folder("mlp_gird", tmp_path)
    message = str(caught.value)
    assert "did you mean mlp_grid?" in message and "mlp_arch, mlp_grid" in message
    result = summarize("mlp_aarch", "--sweeps-dir", str(tmp_path))
    assert_one_error_line(result, "mlp_aarch", "did you mean mlp_arch?", "mlp_arch, mlp_grid")
