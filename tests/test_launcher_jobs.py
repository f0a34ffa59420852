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


def parent_of(pid: str) -> int | None:
    """The parent's pid, from /proc/<pid>/stat (after the command name, which may hold
    spaces and parentheses, come the state and then the parent's pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def children(pid: int) -> list[int]:
    """Every descendant process of `pid`, by each process's parent in /proc/*/stat: the
    kernel's /proc/<pid>/task/<tid>/children is not there on every host (it needs
    CONFIG_PROC_CHILDREN), every process's stat is."""
    parents = {int(p.name): parent_of(p.name) for p in Path("/proc").glob("[0-9]*")}
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, its_parent in parents.items() if its_parent == parent]
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
        # a run's folder holds the logger's events file and, after logger.flush_every
        # epochs, its loss curve's: count folders, not files
        started = {path.parent for path in tmp_path.glob("*/events.out.tfevents.*")}
        jobs = [pid for pid in children(multirun.pid) if "loky" in cmdline(pid)
                and "resource_tracker" not in cmdline(pid)]
        return jobs if len(started) == 2 and jobs else []

    victim = wait_for(both_training, 420, "both jobs training")[0]
    os.kill(victim, signal.SIGKILL)
    result = finish(multirun, 120)
    line = assert_one_error_line(result, "did not complete", "model.hidden=", code=1)
    assert "#0" in line or "#1" in line


# ---- the sweep's workers as launcher jobs (issue 20) ---------------------------------

SEARCH = (
    "-m", "hparams_search=arch", "sweep.workers=2", "sweep.batch=1", "sweep/pruner=none",
    "logger.image_every=0", "quiet=true", "sweep.heartbeat_interval=1", "sweep.grace_period=60",
)


def study_of(out: Path):
    import optuna

    storage = f"sqlite:///{out / 'mlp_arch' / 'study.db'}"
    return optuna.load_study(study_name="mlp_arch", storage=storage)


def training(out: Path, count: int):
    from optuna.trial import TrialState

    def ready():
        try:
            running = study_of(out).get_trials(states=(TrialState.RUNNING,))
        except Exception:  # not created yet
            return None
        trials = [t for t in running if t.user_attrs.get("run_dir")]
        return trials if len(trials) >= count else None

    return ready


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_two_launcher_jobs_finish_a_six_trial_study_between_them(
    tmp_path: Path, launcher: str
) -> None:
    from optuna.trial import TrialState

    result = finish(start(
        *SEARCH, f"hydra/launcher={launcher}", "sweep.n_trials=6", "trainer.max_epochs=60",
        "trainer.val_every=20", f"sweep.output_dir={tmp_path}",
    ), 400)
    assert result.returncode == 0, result.stderr
    assert "best trial" in result.stdout and "[HYDRA]" not in result.stdout
    trials = study_of(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert len({t.user_attrs["pid"] for t in trials}) == 2, "told by two job processes"
    assert os.getpid() not in {t.user_attrs["pid"] for t in trials}
    assert (tmp_path / "mlp_arch" / "best.yaml").is_file()


@pytest.mark.slow
def test_a_killed_job_has_its_trials_queued_again_and_the_study_still_completes(
    tmp_path: Path,
) -> None:
    from optuna.trial import TrialState

    command = start(
        *SEARCH, "hydra/launcher=joblib", "sweep.n_trials=4", "trainer.max_epochs=3000",
        "trainer.val_every=1000", f"sweep.output_dir={tmp_path}",
    )
    victim = wait_for(training(tmp_path, 2), 240, "both jobs training")[0]
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)
    result = finish(command, 600)
    assert result.returncode == 0, result.stderr
    trials = study_of(tmp_path).get_trials()
    assert trials[victim.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4


@pytest.mark.slow
def test_ctrl_c_on_the_command_stops_its_jobs_and_queues_their_trials(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    command = start(
        *SEARCH, "hydra/launcher=submitit_local", "sweep.n_trials=2",
        "trainer.max_epochs=30000", "trainer.val_every=1000", f"sweep.output_dir={tmp_path}",
    )
    running = wait_for(training(tmp_path, 2), 240, "both jobs training")
    command.send_signal(signal.SIGINT)
    result = finish(command, 120)
    assert result.returncode == 130, result.stderr
    assert "queued again" in result.stderr and "Traceback" not in result.stderr
    time.sleep(1.0)
    for trial in running:
        with pytest.raises(ProcessLookupError):
            os.kill(trial.user_attrs["pid"], 0)
    trials = study_of(tmp_path).get_trials()
    for trial in running:
        assert trials[trial.number].state == TrialState.FAIL
        copies = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
        assert [t.state for t in copies] == [TrialState.WAITING]


FAKE_SBATCH = """#!/bin/sh
# a fake sbatch: keep the job script and whether the password came by the environment
cp "$(eval echo \\${$#})" "$FAKE_SLURM_DIR/job.sh"
echo "$@" > "$FAKE_SLURM_DIR/args"
echo "${PGPASSWORD:+PGPASSWORD set}" > "$FAKE_SLURM_DIR/env"
echo "sbatch: error: this is a test, no job was submitted" >&2
exit 1
"""


@pytest.mark.postgres
def test_a_slurm_job_script_holds_no_password(tmp_path: Path, postgres_url: str) -> None:
    from urllib.parse import urlsplit

    password = urlsplit(postgres_url).password
    assert password, "the test needs a storage URL with a password"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(FAKE_SBATCH)
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit checks that it exists
    for program in ("sbatch", "srun"):
        (fake / program).chmod(0o755)
    slurm = tmp_path / "slurm"
    slurm.mkdir()
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "FAKE_SLURM_DIR": str(slurm)}
    env.pop("PGPASSWORD", None)
    result = subprocess.run(
        [sys.executable, "src/train.py", *SEARCH, "hydra/launcher=submitit_slurm",
         f"sweep.storage={postgres_url}", "sweep.n_trials=2", "trainer.max_epochs=60",
         f"sweep.output_dir={tmp_path / 'out'}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    script = (slurm / "job.sh").read_text()
    assert "#SBATCH" in script, script
    secret = f":{password}@"
    assert secret not in script and secret not in (slurm / "args").read_text()
    assert (slurm / "env").read_text().strip() == "PGPASSWORD set", "the jobs get it by env"
    assert secret not in result.stdout + result.stderr
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr


def test_sweep_py_takes_the_same_launcher_choice_and_its_storage_rule(tmp_path: Path) -> None:
    """`src/sweep.py hydra/launcher=...` is the same door: submitit_slurm with the default
    SQLite file is one line naming the way out, and nothing is created."""
    result = subprocess.run(
        [sys.executable, "src/sweep.py", "hydra/launcher=submitit_slurm",
         f"sweep.output_dir={tmp_path / 'out'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert_one_error_line(result, "hydra/launcher=submitit_slurm", "sweep.storage=postgresql://")
    assert not (tmp_path / "out").exists()
