"""Ctrl-C: a run keeps its partial folder and says so; a sweep queues the trial again.

Lightning turns Ctrl-C into `sys.exit(1)` and ignores SIGINT afterwards; these tests prove
the project turns it back into an interrupt a user and a sweep can act on.
"""

from __future__ import annotations

import json
import os
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


def pids_alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.add(pid)
        except ProcessLookupError:
            pass
    return alive


@pytest.mark.slow
def test_sigint_to_the_launcher_alone_stops_its_workers_and_queues_their_trials(
    tmp_path: Path,
) -> None:
    """`kill -INT <launcher>` (a job manager's Ctrl-C) reaches no worker directly."""
    storage = f"sqlite:///{tmp_path / 'mlp_arch' / 'study.db'}"
    args = [
        "src/sweep.py", "sweep=default", f"sweep.output_dir={tmp_path}", "sweep.n_trials=2",
        "sweep.workers=2", "sweep.batch=1", "sweep/pruner=none", "quiet=true",
        "trainer.max_epochs=30000", "trainer.val_every=1000", "logger.image_every=0",
    ]

    def both_training() -> bool:
        try:
            study = optuna.load_study(study_name="mlp_arch", storage=storage)
        except Exception:
            return False
        running = study.get_trials(states=(TrialState.RUNNING,))
        return len([t for t in running if t.user_attrs.get("run_dir")]) == 2

    started = {}

    def ready() -> bool:
        if both_training():
            study = optuna.load_study(study_name="mlp_arch", storage=storage)
            started.update({t.number: t.user_attrs["pid"] for t in study.trials})
            return True
        return False

    result = interrupt_after(args, ready, timeout=180)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    time.sleep(1.0)
    assert not pids_alive(set(started.values())), "the workers were stopped"
    trials = optuna.load_study(study_name="mlp_arch", storage=storage).get_trials()
    for number in started:
        assert trials[number].state == TrialState.FAIL
        copies = [t for t in trials if t.system_attrs.get("failed_trial") == number]
        assert [t.state for t in copies] == [TrialState.WAITING], "queued again, not trained on"


def test_ctrl_c_after_the_study_is_complete_reports_it_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlpsweep.config import compose
    from mlpsweep.sweep import launch, launcher

    args = [
        "sweep=default", f"sweep.output_dir={tmp_path}", "sweep.n_trials=1", "sweep.workers=1",
        "trainer.max_epochs=10", "trainer.val_every=5", "logger.image_every=0", "quiet=true",
    ]
    assert launch(compose(args), args) == 0
    (tmp_path / "mlp_arch" / "best.yaml").unlink()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(launcher, "run_trials", interrupted)
    assert launch(compose(args), args) == 0
    assert "already complete" in capsys.readouterr().err
    assert (tmp_path / "mlp_arch" / "best.yaml").is_file()
