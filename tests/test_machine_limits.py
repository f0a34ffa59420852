"""A run or a sweep the machine cannot hold is one line before anything is built (issue 19,
items 5 and 10): the run's memory is estimated at the widths the engine stores, and a sweep's
workers are counted against the cores and the free memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, assert_one_error_line
from mlpsweep.config import ConfigError, compose
from mlpsweep.resources import (
    RunSize,
    check_run_fits,
    check_workers_fit,
    usable_cores,
)
from mlpsweep.sweep.settings import parse_settings

GIB = 2**30


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, script, *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (("model.ensemble=100000000",), "model.ensemble=100000000"),
        (("model.hidden=100000", "model.layers=2"), "model.hidden=100000 model.layers=2"),
    ],
)
def test_a_run_that_cannot_fit_in_memory_is_one_line_and_no_folder(
    tmp_path: Path, overrides: tuple[str, ...], named: str
) -> None:
    result = run("src/train.py", *overrides, f"output_dir={tmp_path / 'runs'}")
    assert_one_error_line(result, named, "of memory", "free")
    assert not (tmp_path / "runs").exists()


def test_the_issues_ensemble_is_refused_where_its_memory_is_not_free() -> None:
    cfg = compose(["model.ensemble=100000"])
    with pytest.raises(ConfigError) as caught:
        check_run_fits(cfg, available=8 * GIB)
    assert "model.ensemble=100000" in str(caught.value)
    assert "stored 32 units wide" in str(caught.value), "model.hidden=20 is computed 32 wide"
    check_run_fits(cfg, available=64 * GIB)  # about 17 GiB: it fits there


def test_the_estimate_counts_the_widths_the_engine_stores() -> None:
    def size(hidden: int) -> int:
        return RunSize.of(compose([f"model.hidden={hidden}", "model.layers=3"])).tensor_bytes()

    assert size(17) == size(32), "17 units are stored as 32"
    assert size(16) < size(17)


def test_the_tutorials_run_fits_in_half_a_gibibyte() -> None:
    check_run_fits(compose([]), available=GIB // 2)


@pytest.mark.parametrize("workers", [1000, 60])
def test_more_workers_than_the_machine_holds_is_one_line_with_its_figures(
    tmp_path: Path, workers: int
) -> None:
    out = tmp_path / "sweeps"
    result = run("src/sweep.py", f"sweep.workers={workers}", f"sweep.output_dir={out}")
    assert_one_error_line(
        result, f"sweep.workers={workers}", f"{usable_cores()} cores", "GiB free", "at most"
    )
    assert not out.exists()


def test_workers_are_counted_against_cores_and_memory() -> None:
    def check(workers: int, cores: int, available: float, *extra: str) -> None:
        cfg = compose(["sweep=default", f"sweep.workers={workers}", *extra])
        check_workers_fit(cfg, parse_settings(cfg), available=int(available), cores=cores)

    check(2, cores=2, available=24 * GIB)  # the default sweep on the issue's machine
    with pytest.raises(ConfigError, match=r"2 cores and 24\.0 GiB free: at most 4 workers here"):
        check(60, cores=2, available=24 * GIB)
    with pytest.raises(ConfigError, match="at most 3 workers here"):
        check(4, cores=64, available=2 * GIB)  # memory, not cores, is the limit
    with pytest.raises(ConfigError, match="not even one fits"):
        # a batch of 4 trials of up to 4 layers of 20000 units: 4 x 4 x 3 x 20000^2 floats
        check(1, 64, 24 * GIB, "sweep.space.model.hidden.high=20000")
