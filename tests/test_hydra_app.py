"""`python src/train.py` as a Hydra app: its records, flags, multirun, launchers and resume,
each tried as a user types it (real subprocesses, tiny runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import assert_one_error_line, run_dirs
from mlpsweep import hydra_app

TINY = ("trainer.max_epochs=10", "trainer.val_every=5", "logger.image_every=0", "quiet=true")



def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )


# ---- one run -------------------------------------------------------------------------------


def test_a_run_folder_has_hydras_records_and_a_log_with_the_closing_line(run_train, tmp_path):
    output_dir = tmp_path / "runs"
    typed = [*TINY, "model.hidden=7", f"output_dir={output_dir}"]
    process = run_train(*typed)
    assert process.returncode == 0, process.stderr
    (run_dir,) = run_dirs(output_dir)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{4}", run_dir.name)
    records = run_dir / ".hydra"
    assert yaml.safe_load((records / "overrides.yaml").read_text()) == typed, (
        "what was typed, verbatim"
    )
    assert yaml.safe_load((records / "config.yaml").read_text())["model"]["hidden"] == 7
    hydra_record = yaml.safe_load((records / "hydra.yaml").read_text())["hydra"]
    assert hydra_record["runtime"]["output_dir"] == str(run_dir)
    assert hydra_record["job"]["chdir"] is False
    for artifact in ("config.yaml", "metrics.json", "fit.png", "loss.png", "checkpoints/last.ckpt"):
        assert (run_dir / artifact).exists(), artifact
    closing = process.stdout.strip()
    assert closing.startswith("completed:") and closing in (run_dir / "train.log").read_text()


def test_hydra_run_dir_and_hydra_verbose_are_honoured(run_train, tmp_path):
    run_dir = tmp_path / "exactly" / "here"
    process = run_train(
        *TINY, f"hydra.run.dir={run_dir}", "hydra.verbose=true", f"output_dir={tmp_path / 'runs'}"
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip().endswith(f"-> {run_dir}")
    assert (run_dir / "metrics.json").exists() and (run_dir / ".hydra" / "hydra.yaml").exists()
    assert not (tmp_path / "runs").exists(), "output_dir is only the default hydra.run.dir's base"
    assert "[DEBUG]" in (run_dir / "train.log").read_text(), "verbose: DEBUG records in the log"


def test_the_run_folder_is_claimed_only_once_the_run_starts(tmp_path, monkeypatch):
    prefix = str(tmp_path / "runs" / "2026-01-01_00-00-00")
    shown = Path(hydra_app.unique_dir(prefix))
    assert not shown.exists(), "a run only shown (--cfg, the preflight) makes no folder"
    monkeypatch.setattr(hydra_app, "_reserve_run_dirs", True)
    started = Path(hydra_app.unique_dir(prefix))
    assert started.is_dir() and started.name.startswith("2026-01-01_00-00-00_")


# ---- Hydra's flags -------------------------------------------------------------------------


def test_cfg_job_prints_the_job_config_and_cfg_all_the_run_folder_without_making_it(
    run_train, tmp_path
):
    output_dir = tmp_path / "runs"
    job = run_train("--cfg", "job", "model.layers=3", f"output_dir={output_dir}", timeout=120)
    assert job.returncode == 0, job.stderr
    printed = yaml.safe_load(job.stdout)
    assert printed["model"]["layers"] == 3 and "hydra" not in printed
    shown = run_train("--cfg", "all", "--resolve", f"output_dir={output_dir}", timeout=120)
    assert shown.returncode == 0, shown.stderr
    run_dir = yaml.safe_load(shown.stdout)["hydra"]["run"]["dir"]
    assert run_dir.startswith(str(output_dir) + "/")
    assert not output_dir.exists(), "--cfg makes no folder"
    alone = run_train(
        "--cfg", "hydra", "--resolve", timeout=120
    )  # output_dir is not in Hydra's node
    assert_one_error_line(alone, "--cfg hydra --resolve", "output_dir", "--cfg all --resolve")


def test_help_lists_the_config_groups_and_info_the_defaults(run_train):
    shown = run_train("--help", timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "python src/train.py -m" in shown.stdout, "the app's own help text"
    for group in ("experiment: fits, two_layer", "model: mlp", "sweep: default, grid, pareto"):
        assert group in shown.stdout, group
    info = run_train("--info", "defaults", timeout=120)
    assert info.returncode == 0, info.stderr
    assert "hydra/job_logging/mlpsweep" in info.stdout and "model/mlp" in info.stdout


def test_shell_completion_prints_the_bash_snippet(run_train):
    process = run_train("--shell-completion", "install=bash", timeout=120)
    assert process.returncode == 0, process.stderr
    assert "complete -o nospace -o default -F hydra_bash_completion" in process.stdout


# ---- multirun ------------------------------------------------------------------------------


def test_multirun_gives_each_combination_a_numbered_folder_and_a_closing_line(run_train, tmp_path):
    sweep_dir = tmp_path / "grid"
    process = run_train(
        "-m", "model.hidden=3,4", "model.layers=1,2", *TINY, f"hydra.sweep.dir={sweep_dir}"
    )
    assert process.returncode == 0, process.stderr
    jobs = job_dirs(sweep_dir)
    assert [job.name for job in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["run_dir"] == str(job)
        seen.add((overrides[0], overrides[1]))
        assert list(job.glob("events.out.tfevents.*")), (
            "every job logs to TensorBoard under one logdir"
        )
    assert seen == {(f"model.hidden={h}", f"model.layers={n}") for h in (3, 4) for n in (1, 2)}
    closing = [line for line in process.stdout.splitlines() if line.startswith("completed:")]
    assert len(closing) == 4
    assert (sweep_dir / "multirun.yaml").exists()


def test_multirun_range_sweeps_the_seed(run_train, tmp_path):
    sweep_dir = tmp_path / "seeds"
    process = run_train("-m", "seed=range(0,3)", *TINY, f"hydra.sweep.dir={sweep_dir}")
    assert process.returncode == 0, process.stderr
    seeds = [
        yaml.safe_load((job / "config.yaml").read_text())["seed"] for job in job_dirs(sweep_dir)
    ]
    assert seeds == [0, 1, 2]


@pytest.mark.parametrize(
    "sweep,fragments",
    [
        ("model.hidden=5,0", ["model.hidden=0", ">= 1", "job #1"]),
        ("model.hiden=5,6", ["model.hiden", "did you mean model.hidden"]),
        ("model.lr=0.1,abc", ["model.lr", "abc", "number"]),
        ("experiment=fits,nope", ["experiment/nope", "fits"]),
        ("model.hidden=interval(1,5)", ["model.hidden=interval(1,5)", "range()"]),
    ],
    ids=["out-of-range", "unknown-key", "wrong-type", "unknown-option", "interval"],
)
def test_multirun_checks_every_job_before_the_first_starts(run_train, tmp_path, sweep, fragments):
    sweep_dir = tmp_path / "grid"
    process = run_train("-m", sweep, *TINY, f"hydra.sweep.dir={sweep_dir}", timeout=120)
    assert_one_error_line(process, *fragments)
    assert not sweep_dir.exists(), "nothing trained, no folder"


def test_a_multirun_with_a_failed_run_exits_1_and_names_it(run_train, tmp_path):
    sweep_dir = tmp_path / "grid"
    process = run_train("-m", "model.lr=0.01,1e38", *TINY, f"hydra.sweep.dir={sweep_dir}")
    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 runs did not complete") and "model.lr=1e+38" in last
    assert "#1" in last and "failed" in last
    statuses = [
        json.loads((job / "metrics.json").read_text())["status"] for job in job_dirs(sweep_dir)
    ]
    assert statuses == ["completed", "failed"], "the other run still ran"


# ---- launchers -----------------------------------------------------------------------------


def test_joblib_launcher_runs_the_grid_in_parallel_processes(run_train, tmp_path):
    sweep_dir = tmp_path / "parallel"
    process = run_train(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model.hidden=3,4",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert process.returncode == 0, process.stderr
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 2 and all((job / "metrics.json").exists() for job in jobs)
    # events files are named after the writing process (<pid>.<n>, then the loss curve's
    # label): one worker process per job
    pids = {
        re.search(r"\.(\d+)\.\d+(\.train_loss)?$", event.name).group(1)
        for job in jobs
        for event in job.glob("events.out.tfevents.*")
    }
    assert len(pids) == 2, pids
    assert "Joblib.Parallel(n_jobs=2" in process.stdout


def test_submitit_local_launcher_runs_a_tiny_grid(run_train, tmp_path):
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher", reason="the optional [cluster] extra"
    )
    sweep_dir = tmp_path / "submitit"
    process = run_train(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "model.hidden=3,4",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert process.returncode == 0, process.stderr
    statuses = [
        json.loads((job / "metrics.json").read_text())["status"] for job in job_dirs(sweep_dir)
    ]
    assert statuses == ["completed", "completed"]


@pytest.mark.parametrize(
    "override,fragments",
    [
        (
            "hydra/launcher=ray_aws",
            ["hydra/launcher=ray_aws", "pip install hydra-ray-launcher", "joblib"],
        ),
        (
            "hydra/sweeper=nevergrad",
            ["hydra/sweeper=nevergrad", "pip install hydra-nevergrad-sweeper"],
        ),
        ("hydra/launcher=nope", ["hydra/launcher=nope", "no such launcher", "basic"]),
    ],
    ids=["launcher", "sweeper", "unknown"],
)
def test_a_launcher_or_sweeper_that_is_not_installed_is_one_line(
    run_train, tmp_path, override, fragments
):
    sweep_dir = tmp_path / "grid"
    process = run_train(
        "-m", override, "model.hidden=3,4", f"hydra.sweep.dir={sweep_dir}", timeout=120
    )
    assert_one_error_line(process, *fragments)
    assert not sweep_dir.exists()


def test_an_unwritable_sweep_dir_is_one_line(run_train):
    process = run_train(
        "-m", "model.hidden=3,4", "hydra.sweep.dir=/proc/mlpsweep/grid", timeout=120
    )
    assert_one_error_line(process, "hydra.sweep.dir=/proc/mlpsweep/grid", "cannot write")


# ---- resume --------------------------------------------------------------------------------

RESUMABLE = ("trainer.val_every=50", "logger.image_every=0", "logger.flush_every=50", "quiet=true")


@pytest.fixture(scope="module")
def half_run(tmp_path_factory) -> Path:
    """A finished 100-epoch run, the first half of a 200-epoch one."""
    from conftest import run_train_script

    output_dir = tmp_path_factory.mktemp("half") / "runs"
    process = run_train_script(*RESUMABLE, "trainer.max_epochs=100", f"output_dir={output_dir}")
    assert process.returncode == 0, process.stderr
    (run_dir,) = run_dirs(output_dir)
    return run_dir


def final_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    checkpoint = torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    return checkpoint["state_dict"], checkpoint["mlpsweep"]["epoch_losses"]


def test_resuming_a_checkpoint_continues_the_uninterrupted_run(run_train, tmp_path, half_run):
    straight = run_train(
        *RESUMABLE, "trainer.max_epochs=200", f"output_dir={tmp_path / 'straight'}"
    )
    resumed = run_train(
        *RESUMABLE,
        "trainer.max_epochs=200",
        f"output_dir={tmp_path / 'resumed'}",
        f"ckpt_path={half_run / 'checkpoints' / 'last.ckpt'}",
    )
    assert straight.returncode == 0 and resumed.returncode == 0, straight.stderr + resumed.stderr
    (straight_dir,), (resumed_dir,) = (
        run_dirs(tmp_path / "straight"),
        run_dirs(tmp_path / "resumed"),
    )
    straight_weights, straight_losses = final_state(straight_dir)
    resumed_weights, resumed_losses = final_state(resumed_dir)
    assert resumed_losses.shape == straight_losses.shape == (200, 1), (
        "the curve holds all 200 epochs"
    )
    torch.testing.assert_close(resumed_losses, straight_losses, rtol=1e-5, atol=1e-6)
    for name, weight in straight_weights.items():  # Adam's moments and step were restored too
        torch.testing.assert_close(resumed_weights[name], weight, rtol=1e-5, atol=1e-6)
    record = json.loads((resumed_dir / "metrics.json").read_text())
    assert record["epochs"] == 200
    assert record["metrics"]["val/acc"]["mean"] == pytest.approx(
        json.loads((straight_dir / "metrics.json").read_text())["metrics"]["val/acc"]["mean"]
    )


@pytest.mark.parametrize(
    "overrides,fragments",
    [
        (
            ["model.hidden=10", "trainer.max_epochs=200"],
            ["ckpt_path=", "model.hidden=20", "not model.hidden=10"],
        ),
        (["trainer.max_epochs=100"], ["trainer.max_epochs=100", "100 epochs", "> 100"]),
    ],
    ids=["another-architecture", "no-epochs-left"],
)
def test_a_checkpoint_that_cannot_resume_is_refused_in_one_line(
    run_train, tmp_path, half_run, overrides, fragments
):
    output_dir = tmp_path / "runs"
    process = run_train(
        *RESUMABLE,
        *overrides,
        f"ckpt_path={half_run / 'checkpoints' / 'last.ckpt'}",
        f"output_dir={output_dir}",
        timeout=120,
    )
    assert_one_error_line(process, *fragments)
    assert not output_dir.exists()


@pytest.mark.slow
def test_ctrl_c_leaves_a_checkpoint_the_run_resumes_from(tmp_path):
    from conftest import run_train_script
    from test_interrupt import interrupt_after

    def trained_a_while() -> bool:
        # the loss curve's own file opens after its first chunk (logger.flush_every epochs):
        # the logger's events file opens before epoch 1, and a Ctrl-C then leaves epoch 0
        return any(tmp_path.glob("first/*/events.out.tfevents.*.train_loss"))

    args = ["src/train.py", "quiet=true", "trainer.max_epochs=5000"]
    stopped = interrupt_after([*args, f"output_dir={tmp_path / 'first'}"], trained_a_while)
    assert stopped.returncode == 130, stopped.stderr
    (first,) = run_dirs(tmp_path / "first")
    reached = json.loads((first / "metrics.json").read_text())["epochs"]
    assert 0 < reached < 5000
    resumed = run_train_script(
        *args[1:],
        f"output_dir={tmp_path / 'second'}",
        f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}",
    )
    assert resumed.returncode == 0, resumed.stderr
    (second,) = run_dirs(tmp_path / "second")
    _, losses = final_state(second)
    _, before = final_state(first)
    assert torch.isfinite(losses).all() and losses.shape[0] == 5000
    # Ctrl-C lands inside an epoch, which the resumed run trains again: the curve before it is kept
    torch.testing.assert_close(losses[: reached - 1], before[: reached - 1])
