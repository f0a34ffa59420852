"""Jobs of Hydra's launchers that die: a multirun's runs, and the sweep's workers as jobs.

Each case is a real `python src/train.py -m ...` whose job process is killed with SIGKILL,
as the out-of-memory killer or an impatient user would. A job's process is found as a
descendant of the command (read from /proc: psutil is not a dependency).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_one_error_line

REPO_ROOT = Path(__file__).resolve().parents[1]


def children(pid: int) -> list[int]:
    """Every descendant process of `pid`."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            frontier += kids
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "src/train.py", *args], cwd=REPO_ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


# ---- a multirun's job killed (issue 19, item 6) --------------------------------------


@pytest.mark.slow
def test_a_killed_joblib_job_of_a_multirun_is_one_line_naming_the_runs_that_did_not_complete(
    tmp_path: Path,
) -> None:
    multirun = start(
        "-m", "model.hidden=2,3", "hydra/launcher=joblib", "trainer.max_epochs=50000",
        "trainer.val_every=1000", "logger.image_every=0", "quiet=true",
        f"hydra.sweep.dir={tmp_path}",
    )

    def both_training() -> list[int]:
        started = list(tmp_path.glob("*/events.out.tfevents.*"))
        jobs = [pid for pid in children(multirun.pid) if "loky" in cmdline(pid)
                and "resource_tracker" not in cmdline(pid)]
        return jobs if len(started) == 2 and jobs else []

    victim = wait_for(both_training, 180, "both jobs training")[0]
    os.kill(victim, signal.SIGKILL)
    result = finish(multirun, 120)
    line = assert_one_error_line(result, "did not complete", "model.hidden=", code=1)
    assert "#0" in line or "#1" in line
