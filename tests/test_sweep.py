"""The Optuna sweep: real small studies (few trials, few epochs) on SQLite and PostgreSQL.

Sweeps run in-process through `mlpsweep.sweep.launch` where the point is the study's
contents, and as `python src/sweep.py` subprocesses where the point is what a user sees
(exit codes, one-line errors, several worker processes, a SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import pytest
from optuna.trial import TrialState

from mlpsweep.config import ConfigError, compose
from mlpsweep.storage import mask_url, scrub
from mlpsweep.sweep import budget_used, launch, parse_settings, state_counts

REPO_ROOT = Path(__file__).resolve().parents[1]
SWEEP_SCRIPT = "src/sweep.py"

# Small and fast: 60 epochs, validation (and so pruning reports) every 20.
FAST = (
    "trainer.max_epochs=60",
    "trainer.val_every=20",
    "logger.image_every=0",
    "quiet=true",
    "sweep.workers=1",
)


def sweep_overrides(out: Path, *extra: str) -> list[str]:
    return ["sweep=default", *FAST, f"sweep.output_dir={out}", *extra]


def run_sweep_in_process(out: Path, *extra: str) -> tuple[int, optuna.Study]:
    overrides = sweep_overrides(out, *extra)
    cfg = compose(overrides)
    code = launch(cfg, overrides)
    settings = parse_settings(cfg)
    return code, optuna.load_study(study_name=settings.study_name, storage=settings.storage_url)


def run_sweep_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, SWEEP_SCRIPT, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.state.is_finished()]


# ---- a small real sweep --------------------------------------------------------------


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study, int]:
    out = tmp_path_factory.mktemp("sweep")
    code, study = run_sweep_in_process(out, "sweep.n_trials=3", "sweep/pruner=none")
    return out, study, code


def test_small_sweep_leaves_trials_folders_and_best_yaml(small_sweep) -> None:
    out, study, code = small_sweep
    assert code == 0
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for trial in trials:
        folder = out / "mlp_arch" / "trials" / str(trial.number)
        assert Path(trial.user_attrs["run_dir"]) == folder.resolve()
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["status"] == "completed"
        assert metrics["metrics"]["val/acc"]["mean"] == pytest.approx(trial.value)
        assert len(metrics["metrics"]["val/acc"]["members"]) == 4  # the sweep's ensemble
        assert (folder / "config.yaml").exists() and (folder / "fit.png").exists()
        assert list(folder.glob("events.out.tfevents.*"))
    best_yaml = (out / "mlp_arch" / "best.yaml").read_text()
    assert f"best trial {study.best_trial.number}" in best_yaml
    assert f"hidden: {study.best_trial.params['model.hidden']}" in best_yaml
    pointer = json.loads((out / "mlp_arch" / "study.json").read_text())
    assert pointer["study_name"] == "mlp_arch" and pointer["n_trials"] == 3


def test_each_trial_gets_the_sampled_architecture(small_sweep) -> None:
    out, study, _ = small_sweep
    for trial in study.get_trials():
        config = (out / "mlp_arch" / "trials" / str(trial.number) / "config.yaml").read_text()
        assert f"hidden: {trial.params['model.hidden']}\n" in config
        assert f"layers: {trial.params['model.layers']}\n" in config
        assert trial.user_attrs["parameter_count"] > 0
        # written at its first validation for the launcher's bar (then every few seconds)
        assert 0 < trial.system_attrs["trained_share"] <= 1


@pytest.mark.slow
def test_reproduce_line_gives_the_same_val_acc(small_sweep, tmp_path: Path) -> None:
    _, study, _ = small_sweep
    best = study.best_trial
    command = best.user_attrs["reproduce"]
    assert command.startswith("python src/train.py ")
    args = command.split()[2:]
    result = subprocess.run(
        [sys.executable, "src/train.py", *args, f"output_dir={tmp_path}", "quiet=true"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["metrics"]["val/acc"]["mean"] == pytest.approx(best.value, abs=1e-6)


def test_resume_adds_no_duplicates_and_stops_at_n_trials(tmp_path: Path) -> None:
    _, study = run_sweep_in_process(tmp_path, "sweep.n_trials=2")
    first = [(t.number, t.params) for t in study.get_trials()]
    assert len(first) == 2
    _, study = run_sweep_in_process(tmp_path, "sweep.n_trials=2")  # finished: does nothing
    assert [(t.number, t.params) for t in study.get_trials()] == first
    _, study = run_sweep_in_process(tmp_path, "sweep.n_trials=3")  # one more, not three
    trials = study.get_trials()
    assert len(trials) == 3 and [(t.number, t.params) for t in trials[:2]] == first
    assert all(t.state.is_finished() for t in trials)


def test_aggressive_pruner_prunes_and_records_the_epoch(tmp_path: Path) -> None:
    # ThresholdPruner: any trial whose val/acc is below 0.99 at a validation is pruned.
    _, study = run_sweep_in_process(
        tmp_path, "sweep.n_trials=2", "sweep/pruner=threshold", "sweep.pruner.lower=0.99",
        "sweep.pruner.n_warmup_steps=0",
    )
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    for trial in trials:
        assert trial.user_attrs["epochs"] == 20  # stopped at the first validation
        # reported at the epochs done, as TensorBoard's x axis and trainer.val_every count them
        assert list(trial.intermediate_values) == [20]
        metrics = json.loads((Path(trial.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert metrics["status"] == "pruned"
        assert hparams_entries(Path(trial.user_attrs["run_dir"])), (
            "pruned trials belong in the HParams tab too"
        )


def hparams_entries(run_dir: Path) -> dict[str, bytes]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    try:
        return events.PluginTagToContent("hparams")
    except KeyError:  # no hparams plugin data in the run
        return {}


def test_failing_trials_do_not_stop_the_sweep(tmp_path: Path) -> None:
    # hidden=0 is rejected by the training config: those trials FAIL with the reason kept.
    code, study = run_sweep_in_process(
        tmp_path,
        "sweep.n_trials=4",
        "sweep/sampler=random",
        "sweep/pruner=none",
        "~sweep.space.model.hidden",
        "+sweep.space.model.hidden={type:categorical,choices:[0,2]}",
        "seed=3",
    )
    states = [t.state for t in study.get_trials()]
    assert len(states) == 4 and TrialState.FAIL in states and TrialState.COMPLETE in states
    assert code == 0
    for trial in study.get_trials(states=(TrialState.FAIL,)):
        assert trial.params["model.hidden"] == 0
        assert "model.hidden=0" in trial.user_attrs["fail_reason"]


def test_a_repeated_configuration_reuses_its_twin_instead_of_training(tmp_path: Path) -> None:
    # A one-point space: every trial proposes the same architecture.
    _, study = run_sweep_in_process(
        tmp_path, "sweep.n_trials=3", "sweep/pruner=none",
        "~sweep.space.model", "+sweep.space.model.hidden={type:categorical,choices:[3]}",
    )
    first, *repeats = study.get_trials()
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 3
    assert "duplicate_of" not in first.user_attrs
    for trial in repeats:
        assert trial.user_attrs["duplicate_of"] == first.number
        assert trial.values == first.values
        assert trial.user_attrs["run_dir"] == first.user_attrs["run_dir"]
    assert sorted(p.name for p in (tmp_path / "mlp_arch" / "trials").iterdir()) == [
        str(first.number)
    ]


def test_a_changed_training_setting_is_not_a_twin(tmp_path: Path) -> None:
    # A resume may not change a training setting (the study refuses it), so the twin lookup
    # is checked directly: the same architecture with other epochs is a different config.
    from mlpsweep.sweep.trial_config import (
        completed_twin,
        config_fingerprint,
        training_overrides,
        trial_overrides,
    )

    space = (
        "~sweep.space.model",
        "+sweep.space.model.hidden={type:categorical,choices:[3]}",
        "sweep/pruner=none",
    )
    _, study = run_sweep_in_process(tmp_path, "sweep.n_trials=1", *space)
    base = training_overrides([*sweep_overrides(tmp_path), *space])
    same = compose(trial_overrides(base, {"model.hidden": 3}))
    changed = compose(trial_overrides([*base, "trainer.max_epochs=40"], {"model.hidden": 3}))
    assert completed_twin(study, config_fingerprint(same)).number == 0
    assert completed_twin(study, config_fingerprint(changed)) is None


@pytest.mark.parametrize(
    ("base", "params"),
    [
        ((), {"model.hidden": 7, "model.layers": 2}),
        (("experiment=two_layer", "trainer.max_epochs=50"), {"model.lr": 0.003}),
        (("model.hidden=5",), {"model.hidden": 9, "data.shuffle": True, "data.batch_size": 16}),
        (("sweep=grid",), {"trainer.fit_val_acc": 0.95}),  # an interpolated key's source
    ],
)
def test_a_trials_config_is_what_hydra_composes_from_its_overrides(base, params) -> None:
    from omegaconf import OmegaConf

    from mlpsweep.sweep.trial_config import trial_config, trial_overrides

    fast = trial_config(list(base), params)
    composed = compose(trial_overrides(list(base), params))
    assert OmegaConf.to_yaml(fast, resolve=True) == OmegaConf.to_yaml(composed, resolve=True)
    assert OmegaConf.to_yaml(fast) == OmegaConf.to_yaml(composed), "interpolations kept"


@pytest.mark.parametrize(
    "params", [{"model.hidden": 0}, {"model.hiden": 3}, {"model": 3}, {"model.lr": "fast"}]
)
def test_a_trials_bad_value_fails_with_hydras_own_message(params) -> None:
    from mlpsweep.sweep.trial_config import trial_config, trial_overrides

    with pytest.raises(ConfigError) as fast:
        trial_config([], params)
    with pytest.raises(ConfigError) as composed:
        compose(trial_overrides([], params))
    assert str(fast.value) == str(composed.value)


def test_pareto_sweep_lists_the_front(tmp_path: Path) -> None:
    result = run_sweep_script(
        "sweep=pareto",
        *FAST,
        f"sweep.output_dir={tmp_path}",
        "sweep.n_trials=3",
        "trainer.max_epochs=40",
    )
    assert result.returncode == 0, result.stderr
    assert "Pareto front:" in result.stdout
    study = optuna.load_study(
        study_name="mlp_pareto", storage=f"sqlite:///{tmp_path / 'mlp_pareto' / 'study.db'}"
    )
    assert len(study.directions) == 2
    for trial in study.best_trials:
        assert f"trial {trial.number}:" in result.stdout
        assert trial.values[1] == trial.user_attrs["parameter_count"]
    assert (tmp_path / "mlp_pareto" / "best.yaml").exists()


# ---- several workers -----------------------------------------------------------------


def assert_exact_budget(study: optuna.Study, n_trials: int) -> None:
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(finished(study)) == n_trials == len(trials)
    assert len(set(numbers)) == len(numbers)


@pytest.mark.slow
def test_two_workers_on_sqlite_give_exactly_n_trials(tmp_path: Path) -> None:
    result = run_sweep_script(*sweep_overrides(tmp_path, "sweep.n_trials=5", "sweep.workers=2"))
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(
        study_name="mlp_arch", storage=f"sqlite:///{tmp_path / 'mlp_arch' / 'study.db'}"
    )
    assert_exact_budget(study, 5)
    # Repeats reuse a twin's folder.
    trained = [t for t in study.get_trials() if "duplicate_of" not in t.user_attrs]
    assert len({t.user_attrs["run_dir"] for t in trained}) == len(trained) >= 1


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_on_postgresql_give_exactly_n_trials(tmp_path: Path, postgres_url: str) -> None:
    result = run_sweep_script(
        *sweep_overrides(
            tmp_path, "sweep.n_trials=4", "sweep.workers=2", f"sweep.storage={postgres_url}"
        )
    )
    assert result.returncode == 0, result.stderr
    password = urlsplit(postgres_url).password
    # The password never shows; the masked URL does.
    assert f":{password}@" not in result.stdout + result.stderr and ":***@" in result.stdout
    study = optuna.load_study(study_name="mlp_arch", storage=postgres_url)
    assert_exact_budget(study, 4)


@pytest.mark.slow
def test_worker_killed_mid_batch_has_every_trial_of_its_batch_retried_after_restart(
    tmp_path: Path,
) -> None:
    """SIGKILL a worker in the middle of its batch; the same command again completes the study,
    each of the dead batch's trials retried exactly once with its own parameters."""
    args = sweep_overrides(
        tmp_path, "sweep.n_trials=2", "sweep.heartbeat_interval=1", "sweep.grace_period=2",
        # every epoch trained: a trial whose members all fit would leave the batch, and with
        # the compiled step a small one fits within a second, before the kill
        "trainer.max_epochs=10000", "trainer.val_every=500", "sweep/pruner=none",
        "trainer.stop_at_val_acc=null",
    )
    storage = f"sqlite:///{tmp_path / 'mlp_arch' / 'study.db'}"
    worker = subprocess.Popen([sys.executable, SWEEP_SCRIPT, *args], cwd=REPO_ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_running_trial(storage, timeout=120)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    killed_numbers = [
        t.number for t in optuna.load_study(study_name="mlp_arch", storage=storage).get_trials()
        if t.state == TrialState.RUNNING
    ]
    assert len(killed_numbers) == 2, "both trials of the budget were asked as one batch"
    time.sleep(3)  # past the grace period: the trials' heartbeat is stale
    result = run_sweep_script(*args)  # the same command: a resume may not change settings
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="mlp_arch", storage=storage)
    trials = study.get_trials()
    for number in killed_numbers:
        assert trials[number].state == TrialState.FAIL
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
        assert retries[0].params == trials[number].params
        assert "fail_reason" not in retries[0].user_attrs, "the dead attempt's reason stays with it"
    counts = state_counts(trials)
    assert counts["complete"] == 2 and counts["retried"] == 2 and budget_used(trials) == 2


def test_a_dead_workers_trial_is_queued_again_without_the_dead_attempts_attributes(
    tmp_path: Path,
) -> None:
    """The copy Optuna queues keeps what describes the configuration (reproduce line) and drops
    what describes the dead attempt (fail reason, host, process, folder), so a retry that
    completes never shows a fail reason."""
    from mlpsweep.sweep.liveness import mark_owner, requeue_dead_local
    from mlpsweep.sweep.optuna_setup import load_or_create_study, open_sweep_storage

    settings = parse_settings(compose(sweep_overrides(tmp_path)))
    (tmp_path / "mlp_arch").mkdir()
    storage = open_sweep_storage(settings)
    study = load_or_create_study(settings, storage)
    trial = study.ask({"model.hidden": optuna.distributions.IntDistribution(1, 8)})
    mark_owner(trial)
    finished_process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                      capture_output=True, text=True, check=True)
    trial.set_user_attr("pid", int(finished_process.stdout))  # a process that has ended
    trial.set_user_attr("run_dir", str(tmp_path / "mlp_arch" / "trials" / "0"))
    trial.set_user_attr("reproduce", "python src/train.py model.hidden=3")
    assert requeue_dead_local(study, storage) == 1
    dead, copy = study.get_trials()
    assert dead.state == TrialState.FAIL and "died" in dead.user_attrs["fail_reason"]
    assert copy.state == TrialState.WAITING and copy.system_attrs["retry_history"] == [0]
    assert copy.user_attrs == {"reproduce": "python src/train.py model.hidden=3"}


def wait_for_running_trial(storage: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name="mlp_arch", storage=storage)
            running = study.get_trials(states=(TrialState.RUNNING,))
            if running and running[0].user_attrs.get("run_dir"):
                time.sleep(1.0)  # inside training, not just asked
                return running[0].number
        except (KeyError, optuna.exceptions.StorageInternalError, Exception):
            pass
        time.sleep(0.2)
    raise AssertionError("no trial started running in time")


# ---- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("+sweep.space.model.hiddn={type:int,low:1,high:3}", "model.hiddn"),
        ("sweep.space.model.hidden.low=70", "low=70"),
        ("sweep.n_trials=0", "sweep.n_trials=0"),
        ("sweep.n_trials=-3", "sweep.n_trials=-3"),
        ("sweep.workers=0", "sweep.workers=0"),
        ("sweep.storage=notaurl", "notaurl"),
        ("sweep.storage=postgresql://someone:secret@127.0.0.1:1/db", "127.0.0.1:1"),
        ("sweep.n_trial=3", "sweep.n_trial"),
    ],
)
def test_bad_input_is_one_line_and_leaves_the_study_untouched(
    small_sweep, override: str, named: str
) -> None:
    out, study, _ = small_sweep
    database = out / "mlp_arch" / "study.db"
    before = (database.stat().st_mtime_ns, len(study.get_trials()))
    started = time.monotonic()
    result = run_sweep_script(*sweep_overrides(out, "sweep.n_trials=5"), override, timeout=60)
    assert result.returncode == 2
    assert time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "secret" not in result.stderr + result.stdout
    assert (database.stat().st_mtime_ns, len(study.get_trials())) == before


def test_a_misspelled_sweep_key_gets_the_closest_sweep_key_and_where_to_list_them() -> None:
    with pytest.raises(ConfigError) as caught:
        compose(["sweep=default", "sweep.n_trails=3"])
    message = str(caught.value)
    assert "sweep.n_trails" in message and "did you mean sweep.n_trials?" in message
    assert "`python src/sweep.py --cfg` lists all keys" in message
    with pytest.raises(ConfigError, match=r"did you mean sweep\.sampler\.seed\?"):
        compose(["sweep=default", "sweep.sampler.sed=1"])


def test_sweep_cfg_prints_the_sweep_keys_too() -> None:
    shown = run_sweep_script("--cfg", "sweep.n_trials=7", timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "\nsweep:\n" in shown.stdout and "  n_trials: 7\n" in shown.stdout
    assert "  space:\n" in shown.stdout and "\nmodel:\n" in shown.stdout


def test_searched_key_cannot_also_be_fixed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.hidden"):
        run_sweep_in_process(tmp_path, "model.hidden=5")
    assert not (tmp_path / "mlp_arch" / "study.db").exists()


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("postgresql://user:secret@host:5432/db") == "postgresql://user:***@host:5432/db"
    assert mask_url("postgresql://user@host/db") == "postgresql://user@host/db"
    assert mask_url("sqlite:////tmp/a/study.db") == "sqlite:////tmp/a/study.db"
    assert "p@ss" not in mask_url("postgresql://u:p@ss@host/db")
    assert scrub("cannot connect to postgresql://u:p@ss@host/db: refused") == (
        "cannot connect to postgresql://u:***@host/db: refused"
    )


# ---- the launcher's progress bar -------------------------------------------------------


def test_the_bar_moves_within_a_batch_and_stops_when_the_last_trial_finishes() -> None:
    """A batch trains for minutes before any trial finishes: the bar counts the running
    trials' trained shares, and closes (its clock stops) the moment the count is complete,
    not when the workers have exited."""
    from mlpsweep.sweep.launcher import SweepProgress
    from mlpsweep.sweep.trial_states import TRAINED_SHARE

    study = optuna.create_study()
    settings = parse_settings(compose(sweep_overrides(Path("unused"), "sweep.n_trials=3")))
    progress = SweepProgress(settings, enabled=True)
    progress.lines = False  # the bar, as on a terminal
    study.add_trial(optuna.trial.create_trial(value=0.5))
    running = [study.ask(), study.ask()]
    for trial, share in zip(running, (0.25, 0.5), strict=True):
        study._storage.set_trial_system_attr(trial._trial_id, TRAINED_SHARE, share)
    progress.refresh(study)
    assert progress.bar.n == pytest.approx(1.8) and progress.finished == 1
    assert not progress.done()
    for trial in running:
        study.tell(trial, 0.7)
    progress.refresh(study)
    assert progress.bar.n == 3 and progress.done()
    assert progress.bar.disable, "closed: its clock stopped"
