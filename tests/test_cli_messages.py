"""What the command line tells a person: how to quote a value Hydra cannot read bare, what
each key means in --help, and a refused storage URL that leaves nothing behind (issue 19,
items 11, 14 and 21)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO_ROOT, assert_one_error_line
from mlpsweep.config import compose, schema_keys
from mlpsweep.key_help import key_comments
from mlpsweep.sweep.settings import SweepSchema


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, script, *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("script", "override", "quoted"),
    [
        ("src/sweep.py", "sweep.study_name=é日本", "sweep.study_name='é日本'"),
        ("src/train.py", "output_dir=runs[1", "output_dir='runs[1'"),
    ],
)
def test_a_value_hydra_reads_only_quoted_is_one_line_with_the_quoting_that_works(
    tmp_path: Path, script: str, override: str, quoted: str
) -> None:
    where = f"sweep.output_dir={tmp_path}" if "sweep" in script else f"output_dir={tmp_path}"
    result = run(script, override, where)
    line = assert_one_error_line(result, override, f'"{quoted}"')
    assert "Exception" not in line, "a person's words, not the lexer's class name"
    assert not list(tmp_path.iterdir())
    key, _, value = quoted.partition("=")  # what the shell hands on from the suggestion
    assert OmegaConf.select(compose(["sweep=default", quoted]), key) == value.strip("'")


@pytest.mark.parametrize(
    "storage", ["mysql://someone:secret@127.0.0.1:1/db", "nosuchdb://someone:secret@host/db"]
)
def test_a_refused_storage_url_leaves_no_lock_file_or_folder(tmp_path: Path, storage: str) -> None:
    out = tmp_path / "sweeps"
    result = run(
        "src/sweep.py", "sweep.workers=1", "sweep.n_trials=1", f"sweep.output_dir={out}",
        f"sweep.storage={storage}",
    )
    assert_one_error_line(result, "sweep.storage=", "cannot open")
    assert "secret" not in result.stderr
    assert not out.exists(), sorted(str(path) for path in out.rglob("*"))


def test_train_help_shows_what_each_key_means() -> None:
    shown = run("src/train.py", "--help")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"\n  hidden: 20 +# units per hidden layer\n", shown.stdout), shown.stdout
    assert re.search(r"\n  max_epochs: 7000 +# epochs to train", shown.stdout)
    assert re.search(r"\nseed: 0 +# every random draw", shown.stdout)


def test_sweep_help_shows_what_each_sweep_key_means_and_cfg_stays_plain_yaml() -> None:
    shown = run("src/sweep.py", "--help", "sweep.n_trials=7")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"\n  n_trials: 7 +# the study's total of finished trials", shown.stdout)
    assert re.search(r"\n  workers: 2 +# worker processes on this machine", shown.stdout)
    plain = run("src/sweep.py", "--cfg")
    assert plain.returncode == 0 and "#" not in plain.stdout


def test_every_key_a_user_can_set_is_explained_in_conf() -> None:
    import dataclasses

    comments = key_comments()
    keys = [key.path for key in schema_keys() if key.path != "sweep"]
    # a sampler or pruner is a group of its own: its `name` says what it is
    sections = {"sampler": "sweep.sampler.name", "pruner": "sweep.pruner.name"}
    keys += [
        sections.get(field.name, f"sweep.{field.name}")
        for field in dataclasses.fields(SweepSchema)
    ]
    unexplained = [key for key in keys if key not in comments]
    assert not unexplained, f"keys without a comment in conf/*.yaml: {unexplained}"
