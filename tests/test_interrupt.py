"""Ctrl-C: a run keeps its partial folder and says so; a sweep queues the trial again.

Lightning turns Ctrl-C into `sys.exit(1)` and ignores SIGINT afterwards; these tests prove
the project turns it back into an interrupt a user and a sweep can act on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

REPO_ROOT = Path(__file__).resolve().parents[1]


def interrupt_after(
    args: list[str], ready: callable, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Start `python args...`, send SIGINT once `ready()` is true, return what it printed."""
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(args, process.returncode, out, err)


@pytest.mark.slow
def test_ctrl_c_keeps_the_partial_run_and_exits_130(tmp_path: Path) -> None:
    def training_started() -> bool:
        return any(tmp_path.glob("*/events.out.tfevents.*"))

    result = interrupt_after(
        ["src/train.py", f"output_dir={tmp_path}", "quiet=true"], training_started
    )
    assert result.returncode == 130
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted at epoch"), result.stderr
    assert "Traceback" not in result.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and 0 <= metrics["epochs"] < 7000


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_queues_the_trial_again(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'mlp_arch' / 'study.db'}"
    args = [
        "src/sweep.py",
        "sweep=default",
        f"sweep.output_dir={tmp_path}",
        "sweep.n_trials=1",
        "sweep.workers=1",
        "sweep/pruner=none",
        "quiet=true",
        "trainer.val_every=20",
    ]

    def trial_training() -> bool:
        return any((tmp_path / "mlp_arch" / "trials").glob("*/events.out.tfevents.*"))

    result = interrupt_after([*args, "trainer.max_epochs=5000"], trial_training)
    assert result.returncode == 130 and "re-run the same command" in result.stderr
    study = optuna.load_study(study_name="mlp_arch", storage=storage)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]  # failed, and queued again
    resumed = subprocess.run(
        [sys.executable, *args, "trainer.max_epochs=5000"],  # a resume keeps its settings
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    trials = optuna.load_study(study_name="mlp_arch", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params
