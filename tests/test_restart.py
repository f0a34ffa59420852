"""A sweep under crashes: restarted at once, a worker killed, its launcher killed.

Each case is a real `python src/sweep.py` killed with SIGKILL, as a crash or an impatient
user would. The grace period is left long (60 s) on purpose: what must rescue the trials is
the sweep noticing that their process is gone, not Optuna's heartbeat timing out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from mlpsweep.sweep import state_counts

REPO_ROOT = Path(__file__).resolve().parents[1]
SLOW_TRIALS = (
    "sweep=default", "sweep/pruner=none", "sweep.heartbeat_interval=5", "sweep.grace_period=60",
    "trainer.max_epochs=4000", "trainer.val_every=1000", "logger.image_every=0", "quiet=true",
)


def sweep_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "src/sweep.py", *SLOW_TRIALS, f"sweep.output_dir={out}", *extra]


def study_of(out: Path) -> optuna.Study:
    storage = f"sqlite:///{out / 'mlp_arch' / 'study.db'}"
    return optuna.load_study(study_name="mlp_arch", storage=storage)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # the storage may not exist yet, or be mid-write
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def training_trials(out: Path, count: int) -> list[optuna.trial.FrozenTrial]:
    """Wait until `count` trials are RUNNING inside training (their folder exists)."""
    def ready():
        running = study_of(out).get_trials(states=(TrialState.RUNNING,))
        in_training = [t for t in running if t.user_attrs.get("run_dir")]
        return in_training if len(in_training) >= count else None

    trials = wait_for(ready, 120, f"{count} trials training")
    time.sleep(1.0)
    return trials


def assert_each_retried_once_and_complete(study: optuna.Study, numbers) -> None:
    trials = study.get_trials()
    for number in numbers:
        assert trials[number].state == TrialState.FAIL
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE, number
        assert retries[0].params == trials[number].params


@pytest.mark.slow
def test_a_sweep_rerun_right_after_a_crash_finishes_the_study(tmp_path: Path) -> None:
    # every epoch trained, long enough that both trials are still training at the kill (with
    # the compiled step a small trial fits within a second and would be told complete first)
    args = (
        "sweep.n_trials=2", "sweep.workers=1", "trainer.max_epochs=20000",
        "trainer.stop_at_val_acc=null",
    )
    crashed = subprocess.Popen(sweep_command(tmp_path, *args), cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        killed = [t.number for t in training_trials(tmp_path, 2)]
        crashed.send_signal(signal.SIGKILL)
        crashed.wait(timeout=30)
    finally:
        if crashed.poll() is None:
            crashed.kill()
    # at once, well inside the 60 s grace period
    # the same command (a resume may not change settings)
    result = subprocess.run(sweep_command(tmp_path, *args), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    study = study_of(tmp_path)
    assert_each_retried_once_and_complete(study, killed)
    assert state_counts(study.get_trials())["complete"] == 2


@pytest.mark.slow
def test_a_killed_worker_leaves_its_trials_to_the_other_and_the_launcher_exits_0_complete(
    tmp_path: Path,
) -> None:
    # every epoch trained (no early stop), long enough that the victim is still training when
    # it is killed (a small trial of the compiled step runs 1000 epochs in well under a
    # second), short enough for four to finish
    args = (
        "sweep.n_trials=4", "sweep.workers=2", "sweep.batch=1", "trainer.max_epochs=12000",
        "trainer.stop_at_val_acc=null",
    )
    launcher = subprocess.Popen(sweep_command(tmp_path, *args), cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = training_trials(tmp_path, 2)[0]
        os.kill(victim.user_attrs["pid"], signal.SIGKILL)
        out, err = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    study = study_of(tmp_path)
    assert launcher.returncode == 0, err
    assert_each_retried_once_and_complete(study, [victim.number])
    counts = state_counts(study.get_trials())
    assert counts["complete"] == 4 and counts["running"] == 0


@pytest.mark.slow
def test_killing_the_launcher_ends_its_workers_and_queues_their_trials_again(
    tmp_path: Path,
) -> None:
    # trials that outlast the test: both must still be training when the launcher dies
    args = (
        "sweep.n_trials=2", "sweep.workers=2", "sweep.batch=1", "trainer.max_epochs=100000",
        "trainer.stop_at_val_acc=null",
    )
    launcher = subprocess.Popen(sweep_command(tmp_path, *args), cwd=REPO_ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        running = training_trials(tmp_path, 2)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    pids = {trial.user_attrs["pid"] for trial in running}

    def workers_gone() -> bool:
        gone = True
        for pid in pids:
            try:
                os.kill(pid, 0)
                gone = False
            except ProcessLookupError:
                pass
        return gone

    wait_for(workers_gone, 30, "the orphaned workers to end")
    trials = study_of(tmp_path).get_trials()
    for trial in running:
        assert trials[trial.number].state == TrialState.FAIL
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
        assert len(retries) == 1 and retries[0].state == TrialState.WAITING
