"""The study summary (`make summary`): the numbers agree with the storage, the answer follows
its stated definition, every state summarises, and no storage password leaks.

Real small sweeps (in-process through `mlpsweep.sweep.launch`) give the honest end-to-end
case; studies with failed, pruned, retried and running trials are built with Optuna's API
around one real training-run folder, since a sweep cannot be told to produce them on demand.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
import warnings
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from conftest import assert_picture_has_content
from mlpsweep.config import compose
from mlpsweep.storage import mask_url, scrub
from mlpsweep.summary import SummaryError, TrialRow, study_source, summarize_study, threshold_answer
from mlpsweep.sweep import launch, parse_settings, write_study_pointer
from mlpsweep.sweep.optuna_private import study_storage, trial_id

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST = (
    "trainer.max_epochs=100",
    "trainer.val_every=50",
    "logger.image_every=0",
    "quiet=true",
    "sweep.workers=1",
)
SECRET_URL = "postgresql://user:secret@host/db"
SPACE = {"model.hidden": IntDistribution(1, 64, log=True), "model.layers": IntDistribution(1, 4)}
SINGLE_PICTURES = {
    "map", "curves", "best_fit", "architecture", "size_vs_accuracy", "history", "importances"
}


def load_script(name: str) -> ModuleType:
    """`src/<name>.py` as a module, so its main() runs in-process (capsys, monkeypatch)."""
    spec = importlib.util.spec_from_file_location(
        f"script_{name}", REPO_ROOT / "src" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


summarize_script = load_script("summarize")


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "src/summarize.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sweep(out: Path, *extra: str) -> optuna.Study:
    """A real sweep, in-process; returns the study as stored."""
    overrides = ["sweep=default", *FAST, f"sweep.output_dir={out}", *extra]
    cfg = compose(overrides)
    assert launch(cfg, overrides) == 0
    settings = parse_settings(cfg)
    return optuna.load_study(study_name=settings.study_name, storage=settings.storage_url)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ---- a real single-objective sweep ---------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
    out = tmp_path_factory.mktemp("real") / "sweeps"
    study = sweep(out, "sweep.n_trials=4", "sweep/pruner=none")
    return out / "mlp_arch", study


@pytest.mark.slow
def test_best_trial_is_the_storages_best(real) -> None:
    folder, study = real
    report, text = summarize_study(str(folder))
    assert report.best is not None and report.best.number == study.best_trial.number
    assert report.best.values == [study.best_value]
    summary = (folder / "summary.md").read_text()
    assert summary == text
    assert f"## Best trial: {study.best_trial.number} " in summary
    assert f"**{study.best_value:.4f}**" in summary  # the members' mean is the objective
    assert study.best_trial.user_attrs["reproduce"] in summary
    assert "## Top 4 trials" in summary
    assert "- trials: 4 complete, 0 pruned, 0 failed, 0 running" in summary


@pytest.mark.slow
def test_trials_csv_has_one_row_per_trial(real) -> None:
    folder, study = real
    summarize_study(str(folder))
    rows = read_csv(folder / "trials.csv")
    assert [int(r["number"]) for r in rows] == [t.number for t in study.trials]
    for row, trial in zip(rows, study.trials, strict=True):
        assert row["state"] == "complete"
        assert float(row["val/acc_mean"]) == pytest.approx(trial.value)
        assert int(row["model.hidden"]) == trial.params["model.hidden"]
        assert int(row["parameter_count"]) == trial.user_attrs["parameter_count"]
        assert len(row["val/acc_members"].split(";")) == 4


@pytest.mark.slow
def test_pictures_are_pngs_and_in_tensorboard(real) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, _ = real
    report, _ = summarize_study(str(folder))
    drawn = {p.stem for p in report.pictures.values()}
    assert drawn == SINGLE_PICTURES  # no Pareto front on a single-objective study
    assert not (folder / "plots" / "pareto.png").exists()
    for name in SINGLE_PICTURES:
        width, height = png_size(folder / "plots" / f"{name}.png")
        assert 400 <= width <= 3000 and 250 <= height <= 3000, (name, width, height)
    best_fit = folder / "plots" / "best_fit.png"
    assert best_fit.read_bytes() == (report.best.folder / "fit.png").read_bytes()
    pictures = sorted(folder.rglob("*.png"))  # plots/ and every trial's fit.png and loss.png
    assert {p.name for p in pictures} >= {"fit.png", "loss.png"} | {
        f"{name}.png" for name in SINGLE_PICTURES
    }
    for picture in pictures:
        assert_picture_has_content(picture, str(picture.relative_to(folder)))
    events = EventAccumulator(str(folder / "summary"), size_guidance={"images": 0}).Reload()
    assert {f"study/{name}" for name in SINGLE_PICTURES} <= set(events.Tags()["images"])
    for name in SINGLE_PICTURES:
        image = events.Images(f"study/{name}")[-1].encoded_image_string
        assert_picture_has_content(image, f"TensorBoard study/{name}")
    # A rebuild replaces the event file, not piles up.
    assert len(list((folder / "summary").glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_threshold_changes_the_answer(real) -> None:
    """The members are judged by the fit rule at the threshold given; a short sweep's members
    miss training points, so none fits. (How a lower threshold moves the answer to a smaller
    network is checked on a synthetic study in test_fit_map.py, where train/acc is chosen.)"""
    folder, study = real
    fits_at = {}
    for threshold in (0.5, 1.0):
        report, _ = summarize_study(str(folder), threshold=threshold)
        fits_at[threshold] = {c.row.number: c.reached for c in report.answer.candidates}
        for trial in study.trials:
            if "duplicate_of" in trial.user_attrs:
                continue
            run_metrics = folder / "trials" / str(trial.number) / "metrics.json"
            metrics = json.loads(run_metrics.read_text())["metrics"]
            pairs = zip(metrics["train/acc"]["members"], metrics["val/acc"]["members"], strict=True)
            expected = sum(1 for train, val in pairs if train == 1.0 and val >= threshold)
            assert fits_at[threshold][trial.number] == expected
    assert report.answer.winner is None and report.answer.closest is not None
    written = (folder / "summary.md").read_text()
    architectures, trials = len(report.answer.candidates), report.answer.judged
    assert f"None of the {architectures} architectures trained ({trials} trials)" in written


@pytest.mark.slow
def test_a_tpe_sweep_states_how_much_of_the_space_it_trained(real) -> None:
    folder, study = real
    report, text = summarize_study(str(folder))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    trained = {tuple(sorted(trial.params.items())) for trial in complete}
    assert (report.coverage.trained, report.coverage.total) == (len(trained), 64 * 4)
    assert f"- coverage: {len(trained)} of 256 architectures of the search space trained" in text
    if report.answer.winner is not None:
        assert f"Among the {len(trained)} architectures tried (of 256)" in text
    assert report.fit_map.drawable and (folder / "plots" / "map.png").is_file()


@pytest.mark.slow
def test_command_line_prints_and_writes(real) -> None:
    folder, _ = real
    done = run_script(str(folder), "--threshold", "0.5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Study `mlp_arch`")
    assert "val/acc >= 0.5)" in done.stdout and "written:" in done.stdout
    assert "Traceback" not in done.stderr


# ---- the answer's definition, on rows built by hand ----------------------------------


def row(
    number: int, hidden: int, layers: int, members: list[float], state: str = "complete"
) -> TrialRow:
    """A trial whose members all classify every training point right (train/acc 1), so the
    fit rule judges them by val/acc alone."""
    from mlpsweep.model import parameter_count

    train = [1.0] * len(members)
    return TrialRow(
        number=number,
        state=state,
        params={"model.hidden": hidden, "model.layers": layers},
        values=[sum(members) / len(members)],
        metrics={},
        members={"val/acc": members, "train/acc": train},
        epochs=100,
        duration_s=1.0,
        parameter_count=parameter_count(hidden, layers),
        fail_reason="",
        reproduce="",
        host="",
        started=datetime.now(),
        completed=datetime.now(),
        folder=None,
    )


def test_answer_needs_every_member_and_skips_repeats_and_pruned() -> None:
    rows = [
        row(0, 3, 1, [0.995, 0.99, 0.98, 0.999]),      # 10 params, 3 of 4: fits only for some seeds
        row(1, 5, 1, [0.99, 0.992, 0.999, 1.0]),       # 16 params, all 4: the answer
        row(2, 5, 1, [0.99, 0.992, 0.999, 1.0]),       # a repeat of trial 1 is not a runner-up
        row(3, 8, 1, [0.991, 0.995, 0.999, 0.993]),    # 25 params, all 4: runner-up
        row(4, 1, 1, [1.0, 1.0, 1.0, 1.0], "pruned"),  # stopped early: not judged
        row(5, 2, 1, [0.5, 0.5]),
    ]
    rows[5].members = {}  # a complete trial whose folder is elsewhere
    answer = threshold_answer(rows, 0.99)
    assert (answer.winner.row.number, answer.runner_up.row.number) == (1, 3)
    assert [c.row.number for c in answer.partial] == [0]
    assert answer.unjudged == [5]
    assert threshold_answer(rows, 0.98).winner.row.number == 0  # a lower bar: the smallest fits
    strict = threshold_answer(rows, 0.9995)
    # 1 of 4 members, best mean
    assert strict.winner is None and strict.closest.row.number in (1, 2)


# ---- studies with every state --------------------------------------------------------


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real 2-member training run, copied into hand-built studies as their complete trial."""
    from mlpsweep.training import train

    cfg = compose(["quiet=true", "model.hidden=3", "model.layers=1", "model.ensemble=2", *FAST[:3]])
    run_dir = tmp_path_factory.mktemp("run")
    train(cfg, run_dir)
    return run_dir


def add_arch_trial(study: optuna.Study, hidden: int, layers: int, **trial: Any) -> None:
    """A trial of the architecture (hidden, layers) over SPACE; `trial` is the rest of
    `optuna.create_trial`'s fields (state, value, attributes)."""
    study.add_trial(
        optuna.create_trial(
            params={"model.hidden": hidden, "model.layers": layers}, distributions=SPACE, **trial
        )
    )


def build_mixed_study(
    folder: Path, run_dir: Path, fail_reason: str = "NonFiniteLossError: loss is nan"
) -> optuna.Study:
    """complete (real folder), pruned, failed, retried (dead worker) and running trials."""
    folder.mkdir(parents=True)
    study = optuna.create_study(
        study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}", direction="maximize"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val/acc"])
    run = json.loads((run_dir / "metrics.json").read_text())
    shutil.copytree(run_dir, folder / "trials" / "0")
    summaries = {
        k: {s: v for s, v in m.items() if s != "members"} for k, m in run["metrics"].items()
    }
    attrs = {
        "epochs": run["epochs"],
        "parameter_count": run["parameter_count"],
        "duration_s": run["duration_s"],
        "metrics": summaries,
        "reproduce": "python src/train.py model.hidden=3",
        "host": "here",
    }
    add_arch_trial(
        study, 3, 1,
        value=summaries["val/acc"]["mean"],
        user_attrs=attrs,
    )
    add_arch_trial(
        study, 2, 2,
        state=TrialState.PRUNED,
        intermediate_values={50: 0.6},
        user_attrs={**attrs, "epochs": 50},
    )
    add_arch_trial(
        study, 64, 4,
        state=TrialState.FAIL,
        user_attrs={"fail_reason": fail_reason},
    )
    add_arch_trial(
        study, 9, 2,
        state=TrialState.FAIL,
        user_attrs={"fail_reason": "worker died"},
    )
    running = study.ask(SPACE)
    study_storage(study).set_trial_system_attr(trial_id(running), "retry_history", [3])
    return study


@pytest.mark.slow
def test_failed_pruned_retried_and_running_trials_summarise(
    tmp_path: Path, run_folder: Path
) -> None:
    folder = tmp_path / "mixed"
    build_mixed_study(folder, run_folder)
    report, text = summarize_study(str(folder))
    assert "- trials: 1 complete, 1 pruned, 1 failed, 1 running (3 finished); 1 retried" in text
    assert report.best is not None and report.best.number == 0
    assert (
        "NonFiniteLossError: loss is nan" in text
        and "## Running trials" in text
        and "trial 4 (" in text
    )
    assert "Not computed: too few complete trials (1" in text  # importances: stated, not crashed
    states = {int(r["number"]): r["state"] for r in read_csv(folder / "trials.csv")}
    assert states == {0: "complete", 1: "pruned", 2: "failed", 3: "retried", 4: "running"}
    plots = folder / "plots"
    assert (plots / "best_fit.png").exists() and (plots / "architecture.png").exists()
    assert not (folder / "plots" / "importances.png").exists()


def test_a_retried_trial_is_named_retried_and_its_completed_retry_shows_no_fail_reason(
    tmp_path: Path,
) -> None:
    """A dead worker's trial is not a failure: the count says 0 failed, so no list may call it
    failed; its retry completed, so the reason Optuna copied into it (older studies) is not
    shown anywhere."""
    folder = tmp_path / "retried"
    folder.mkdir()
    study = optuna.create_study(study_name="retried", storage=f"sqlite:///{folder / 'study.db'}",
                                direction="maximize")
    died = "its worker process died; queued again"
    metrics = {"val/acc": {"mean": 0.9, "min": 0.9, "max": 0.9, "std": 0.0}}
    add_arch_trial(
        study, 9, 2,
        state=TrialState.FAIL,
        user_attrs={"fail_reason": died},
    )
    add_arch_trial(
        study, 9, 2,
        value=0.9,
        user_attrs={"fail_reason": died, "metrics": metrics},
        system_attrs={"failed_trial": 0, "retry_history": [0]},
    )
    report, text = summarize_study(str(folder))
    assert "1 complete, 0 pruned, 0 failed" in text and "1 retried" in text
    assert "## Failed trials" not in text
    assert (
        "## Retried trials" in text
        and "- trial 0 (model.hidden=9, model.layers=2), retried as trial 1" in text
    )
    assert [row.fail_reason for row in report.rows] == [died, ""]
    assert [row["fail_reason"] for row in read_csv(folder / "trials.csv")] == [died, ""]


def test_only_running_trials_still_summarise(tmp_path: Path) -> None:
    folder = tmp_path / "started"
    folder.mkdir()
    study = optuna.create_study(study_name="started", storage=f"sqlite:///{folder / 'study.db'}")
    study.ask(SPACE)
    report, text = summarize_study(str(folder))
    assert report.best is None and "No trial has completed yet." in text
    assert "**the study is not finished**" in text


# ---- secrets -------------------------------------------------------------------------


def point_at_postgres(folder: Path, study_name: str) -> None:
    """study.json as a sweep on `SECRET_URL` writes it (storage masked, has_password true)."""
    cfg = compose(["sweep=default", f"sweep.storage={SECRET_URL}", f"sweep.study_name={study_name}",
                   f"sweep.output_dir={folder.parent}"])
    write_study_pointer(parse_settings(cfg))


@pytest.mark.slow
def test_password_never_printed_or_written(
    tmp_path: Path, run_folder: Path, monkeypatch, capsys
) -> None:
    folder = tmp_path / "pg"
    sqlite_url = f"sqlite:///{folder / 'study.db'}"
    build_mixed_study(
        folder, run_folder, fail_reason=f"OperationalError: could not connect to {SECRET_URL}"
    )
    point_at_postgres(folder, "pg")
    assert json.loads((folder / "study.json").read_text())["storage_has_password"] is True

    assert summarize_script.main([str(folder)]) == 2  # the password is not kept: ask for it
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and err.startswith("error: ")
        and "--storage" in err
        and "MLPSWEEP_STORAGE" in err
    )

    opened: list[str] = []
    monkeypatch.setattr(study_source, "open_readonly_storage",
                        lambda url: opened.append(url) or optuna.storages.RDBStorage(sqlite_url))
    assert summarize_script.main([str(folder), "--storage", SECRET_URL]) == 0
    monkeypatch.setenv("MLPSWEEP_STORAGE", SECRET_URL)
    assert summarize_script.main([str(folder)]) == 0
    assert opened == [SECRET_URL, SECRET_URL]  # the real URL reached the storage, and nothing else
    printed = capsys.readouterr()
    assert "postgresql://user:***@host/db" in printed.out
    written = [folder / n for n in ("summary.md", "trials.csv", "study.json")]
    written += (folder / "summary").iterdir()
    for text in [printed.out, printed.err, *(p.read_bytes().decode("latin-1") for p in written)]:
        assert "secret" not in text
    assert (
        "could not connect to postgresql://user:***@host/db" in (folder / "trials.csv").read_text()
    )


def test_scrub_masks_urls_inside_sentences() -> None:
    assert scrub(f"failed: {SECRET_URL} (x)") == "failed: postgresql://user:***@host/db (x)"
    assert scrub("postgresql+psycopg://u:p4ss@h:5432/d and sqlite:////tmp/a.db") == (
        "postgresql+psycopg://u:***@h:5432/d and sqlite:////tmp/a.db"
    )


# ---- bad input -----------------------------------------------------------------------


def one_error_line(capsys, *argv: str) -> str:
    code = summarize_script.main(list(argv))
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_bad_inputs_give_one_line(tmp_path: Path, capsys) -> None:
    sweeps = tmp_path / "sweeps"
    assert "no sweep found" in one_error_line(capsys, "--sweeps-dir", str(sweeps))
    (sweeps / "notastudy").mkdir(parents=True)
    assert "not a study folder" in one_error_line(capsys, "notastudy", "--sweeps-dir", str(sweeps))
    assert "no such study folder" in one_error_line(capsys, "missing", "--sweeps-dir", str(sweeps))
    assert "--threshold" in one_error_line(
        capsys, "notastudy", "--sweeps-dir", str(sweeps), "--threshold", "1.5"
    )
    folder = sweeps / "pg"
    folder.mkdir()
    point_at_postgres(folder, "pg")
    unreachable = "postgresql://user:secret@127.0.0.1:1/nodb"
    err = one_error_line(capsys, str(folder), "--storage", unreachable)
    assert (
        "cannot open storage postgresql://user:***@127.0.0.1:1/nodb" in err and "secret" not in err
    )


def test_empty_study_gives_a_clear_message(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    optuna.create_study(study_name="empty", storage=f"sqlite:///{folder / 'study.db'}")
    done = run_script(str(folder))
    assert done.returncode != 0
    assert done.stderr.startswith("error: study 'empty'") and "has no trials yet" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (folder / "summary.md").exists()


def test_latest_sweep_is_the_default(tmp_path: Path) -> None:
    sweeps = tmp_path / "sweeps"
    for name in ("older", "newer"):
        (sweeps / name).mkdir(parents=True)
        (sweeps / name / "study.json").write_text("{}")
    os.utime(sweeps / "older" / "study.json", (time.time() - 60, time.time() - 60))
    assert study_source.find_study_folder(None, sweeps) == sweeps / "newer"
    assert study_source.find_study_folder("older", sweeps) == sweeps / "older"
    with pytest.raises(SummaryError, match="not a study folder"):
        study_source.find_study_folder(str(tmp_path), sweeps)


# ---- multi-objective -----------------------------------------------------------------


@pytest.mark.slow
def test_pareto_study_has_its_front(tmp_path: Path) -> None:
    study = sweep(tmp_path, "sweep=pareto", "sweep.n_trials=3")
    folder = tmp_path / "mlp_pareto"
    report, text = summarize_study(str(folder))
    front = {t.number for t in study.best_trials}
    assert {r.number for r in report.pareto} == front
    assert "## Pareto front: val/acc (maximize) vs parameter_count (minimize)" in text
    sizes = [r.parameter_count for r in report.pareto]
    assert sizes == sorted(sizes)
    assert report.best.number == max(study.best_trials, key=lambda t: t.values[0]).number
    assert png_size(folder / "plots" / "pareto.png")[0] >= 400


# ---- PostgreSQL ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_study_summarises_without_leaking(
    tmp_path: Path, run_folder: Path, capsys, postgres_url: str
) -> None:
    url = postgres_url
    name = f"report_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    folder.mkdir()
    cfg = compose(
        [
            "sweep=default",
            f"sweep.storage={url}",
            f"sweep.study_name={name}",
            f"sweep.output_dir={tmp_path}",
        ]
    )
    write_study_pointer(parse_settings(cfg))
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    try:
        shutil.copytree(run_folder, folder / "trials" / "0")
        value = json.loads((run_folder / "metrics.json").read_text())["metrics"]["val/acc"]["mean"]
        study.add_trial(
            optuna.create_trial(
                params={"model.hidden": 3, "model.layers": 1}, distributions=SPACE, value=value
            )
        )
        study.ask(SPACE)  # a running trial on the shared database
        assert summarize_script.main([str(folder), "--storage", url]) == 0
        out = capsys.readouterr().out
        report, _ = summarize_study(str(folder), storage=url)
        assert report.best.number == study.best_trial.number and report.counts["running"] == 1
        credentials = url.split("://", 1)[1].rpartition("@")[0]  # "user:password"
        summary = (folder / "summary.md").read_text()
        assert mask_url(url) in out and mask_url(url) in summary
        for text in [
            out,
            summary,
            (folder / "trials.csv").read_text(),
            (folder / "study.json").read_text(),
        ]:
            assert credentials not in text
    finally:
        optuna.delete_study(study_name=name, storage=url)


# ---- dashboard -----------------------------------------------------------------------


def test_dashboard_without_its_extra_says_how_to_install(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    assert load_script("dashboard").main([]) == 2
    assert "pip install -e '.[dashboard]'" in capsys.readouterr().err


@pytest.mark.slow
def test_dashboard_serves_the_study_on_localhost(real) -> None:
    folder, _ = real
    port = 18000 + uuid.uuid4().int % 2000
    process = subprocess.Popen(
        [sys.executable, "src/dashboard.py", str(folder), "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/studies", timeout=2
                ) as response:
                    body = json.loads(response.read())
                break
            except OSError:
                assert process.poll() is None and time.time() < deadline, "dashboard did not start"
                time.sleep(0.3)
        assert [s["study_name"] for s in body["study_summaries"]] == ["mlp_arch"]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_importances_state_why_they_are_missing(tmp_path: Path) -> None:
    from mlpsweep.summary import param_importances
    from mlpsweep.sweep import Objective

    objectives = (Objective("val/acc", "maximize"),)
    study = optuna.create_study(direction="maximize")
    assert "too few complete trials (0" in param_importances(study, objectives).reason
    for hidden, value in ((2, 0.6), (8, 0.8), (32, 0.9), (4, 0.7)):
        study.add_trial(
            optuna.create_trial(
                params={"model.hidden": hidden},
                distributions={"model.hidden": SPACE["model.hidden"]},
                value=value,
            )
        )
    single = param_importances(study, objectives)
    assert (
        single.values is None and "only one parameter was searched (model.hidden)" in single.reason
    )


def test_the_summary_never_imports_the_sweep_launcher() -> None:
    """The summary reads a study anywhere (another machine, no fcntl): it shares only the
    sweep's settings and trial-state vocabulary, never the launcher or the worker."""
    probe = (  # fcntl itself is loaded by the standard library's subprocess, under Optuna
        "import sys, mlpsweep.summary; "
        "ours = [name for name in sys.modules if name.startswith('mlpsweep')]; "
        "print(sorted(name for name in ours if 'fcntl' in vars(sys.modules[name]) "
        "or name in ('mlpsweep.sweep.launcher', 'mlpsweep.sweep.worker', 'mlpsweep.sweep.trial')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
