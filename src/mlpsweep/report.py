"""The study summary: which network to pick, how sure to be, and how to reproduce it.

Everything here reads only the study's storage and its trial folders (`trials/<n>/`), never
a sweep's memory, so `make summary` can be rebuilt at any time: while workers still run,
after a sweep was killed, or against a PostgreSQL study shared by several machines. The
storage password never leaves this module unmasked: every text written or printed goes
through `scrub`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import optuna
from optuna.trial import FrozenTrial, TrialState

from mlpsweep.storage import StorageError, mask_url, open_rdb, scrub
from mlpsweep.sweep import PARAMETER_COUNT, Objective, retried_numbers, state_counts, state_name

DEFAULT_SWEEPS_DIR = Path("outputs/sweeps")
DEFAULT_THRESHOLD = 0.99
STORAGE_ENV = "MLPSWEEP_STORAGE"
ANSWER_METRIC = "val/acc"
TOP_N = 10
MIN_TRIALS_FOR_IMPORTANCE = 3
ARCHITECTURE_KEYS = ("model.hidden", "model.layers")
SHOWN_METRICS = ("val/acc", "train/acc", "val/loss", "train/loss")



class ReportError(Exception):
    """A problem the user can fix (no sweep, not a study, no password): one line, no traceback."""


class OneLineParser(argparse.ArgumentParser):
    """argparse for src/summarize.py and src/dashboard.py: a usage mistake is one `error:` line."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


# ---- finding and opening a study -----------------------------------------------------


@dataclass(frozen=True)
class StudySource:
    """Where a study lives: its folder (trial folders, outputs) and its storage."""

    folder: Path
    study_name: str | None
    storage_url: str
    pointer: dict[str, Any]

    @property
    def storage_display(self) -> str:
        return mask_url(self.storage_url)


def is_study_folder(folder: Path) -> bool:
    return (folder / "study.json").is_file() or (folder / "study.db").is_file()


def latest_study_folder(sweeps_dir: Path) -> Path:
    """The study most recently written to (study.db changes on every trial, study.json at launch)."""
    candidates = [p for p in sweeps_dir.iterdir() if p.is_dir() and is_study_folder(p)] if sweeps_dir.is_dir() else []
    if not candidates:
        raise ReportError(f"no sweep found under {sweeps_dir}/: run `make sweep` first, or name a study folder")

    def written(folder: Path) -> float:
        return max((folder / n).stat().st_mtime for n in ("study.json", "study.db") if (folder / n).is_file())

    return max(candidates, key=written)


def find_study_folder(target: str | None, sweeps_dir: Path = DEFAULT_SWEEPS_DIR) -> Path:
    """A folder path, a study name under `sweeps_dir`, or (None) the latest sweep."""
    if not target:
        return latest_study_folder(sweeps_dir)
    as_path = Path(target)
    folder = as_path if as_path.is_dir() or "/" in target else sweeps_dir / target
    if not folder.is_dir():
        raise ReportError(f"{target}: no such study folder (looked for {folder}/)")
    if not is_study_folder(folder):
        raise ReportError(f"{folder}: not a study folder (no study.json or study.db): pass a folder under {sweeps_dir}/")
    return folder


def resolve_source(folder: Path, storage: str | None = None) -> StudySource:
    """The storage URL to open: --storage, else $MLPSWEEP_STORAGE, else study.json, else study.db.

    study.json holds the URL with its password masked, so a password-protected storage
    needs the real URL again; an SQLite path that moved with its folder is found locally.
    """
    pointer = _read_pointer(folder)
    name = pointer.get("study_name")
    given = storage or os.environ.get(STORAGE_ENV)
    local_db = folder / "study.db"
    if given:
        url = given
    elif pointer.get("storage_has_password"):
        raise ReportError(
            f"study {name!r} is stored at {pointer.get('storage')} whose password is not saved: "
            f"pass --storage 'postgresql://user:PASSWORD@host/db' or set {STORAGE_ENV}"
        )
    elif pointer.get("storage"):
        url = str(pointer["storage"])
    else:
        url = f"sqlite:///{local_db.resolve()}"
    if url.startswith("sqlite:///"):
        url = _existing_sqlite(url, local_db)
    return StudySource(folder=folder, study_name=name, storage_url=url, pointer=pointer)


def _read_pointer(folder: Path) -> dict[str, Any]:
    path = folder / "study.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ReportError(f"{path}: unreadable ({error})") from error
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object")
    return data


def _existing_sqlite(url: str, local_db: Path) -> str:
    """Never open a missing SQLite file: SQLAlchemy would silently create an empty study."""
    path = Path(url.removeprefix("sqlite:///"))
    if path.is_file():
        return url
    if local_db.is_file():
        return f"sqlite:///{local_db.resolve()}"
    raise ReportError(f"storage file {path} does not exist (was the study folder moved without study.db?)")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage for reading (no heartbeat: failing stale trials is the sweep's job)."""
    try:
        return open_rdb(url)
    except StorageError as error:
        raise ReportError(f"cannot open storage {mask_url(url)} ({error})") from error


def load_study(source: StudySource, opener: Callable[[str], optuna.storages.BaseStorage] = open_storage) -> optuna.Study:
    """Load the study without changing it (no stale-trial failing: that is the sweep's job)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = opener(source.storage_url)
    names = [s.study_name for s in storage.get_all_studies()]
    name = source.study_name or (names[0] if len(names) == 1 else source.folder.name)
    if name not in names:
        found = ", ".join(names) or "none"
        raise ReportError(f"study {name!r} not found in storage {source.storage_display} (studies there: {found})")
    return optuna.load_study(study_name=name, storage=storage)


# ---- one row per trial ---------------------------------------------------------------


@dataclass
class TrialRow:
    """One trial as the summary sees it: storage fields plus its folder's per-member values."""

    number: int
    state: str
    params: dict[str, Any]
    values: list[float] | None
    metrics: dict[str, dict[str, float]]
    members: dict[str, list[float]]
    epochs: int | None
    duration_s: float | None
    parameter_count: int | None
    fail_reason: str
    reproduce: str
    host: str
    started: datetime | None
    completed: datetime | None
    folder: Path | None

    def metric(self, key: str, stat: str = "mean") -> float | None:
        value = self.metrics.get(key, {}).get(stat)
        return float(value) if value is not None else None

    def architecture(self) -> tuple[tuple[str, Any], ...]:
        """The architecture's identity: hidden x layers when searched, else all searched params."""
        keys = [k for k in ARCHITECTURE_KEYS if k in self.params] or sorted(self.params)
        return tuple((k, self.params[k]) for k in keys)


def trial_folder(study_folder: Path, trial: FrozenTrial) -> Path | None:
    """`trials/<n>/` beside the storage, else the absolute run_dir the worker recorded."""
    local = study_folder / "trials" / str(trial.number)
    if local.is_dir():
        return local
    recorded = trial.user_attrs.get("run_dir")
    return Path(recorded) if recorded and Path(recorded).is_dir() else None


def read_run_metrics(folder: Path | None) -> dict[str, Any]:
    """metrics.json of a trial folder ({} while the trial runs, or if the folder is elsewhere)."""
    if folder is None or not (folder / "metrics.json").is_file():
        return {}
    try:
        data = json.loads((folder / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def collect_rows(study: optuna.Study, study_folder: Path) -> list[TrialRow]:
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return [_row(trial, study_folder, retried) for trial in trials]


def _row(trial: FrozenTrial, study_folder: Path, retried: set[int]) -> TrialRow:
    attrs = trial.user_attrs
    folder = trial_folder(study_folder, trial)
    run = read_run_metrics(folder)
    run_metrics = run.get("metrics", {}) if isinstance(run.get("metrics"), dict) else {}
    metrics = attrs.get("metrics") or {k: {s: v for s, v in m.items() if s != "members"} for k, m in run_metrics.items()}
    members = {k: list(m["members"]) for k, m in run_metrics.items() if isinstance(m, dict) and m.get("members")}
    return TrialRow(
        number=trial.number,
        state=state_name(trial, retried),
        params=dict(trial.params),
        values=list(trial.values) if trial.values is not None else None,
        metrics=metrics,
        members=members,
        epochs=attrs.get("epochs", run.get("epochs")),
        duration_s=attrs.get("duration_s", run.get("duration_s")),
        parameter_count=attrs.get(PARAMETER_COUNT, run.get(PARAMETER_COUNT)),
        fail_reason=str(attrs.get("fail_reason", "")),
        reproduce=str(attrs.get("reproduce", "")),
        host=str(attrs.get("host", "")),
        started=trial.datetime_start,
        completed=trial.datetime_complete,
        folder=folder,
    )


# ---- the answer to the tutorial's question -------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A complete trial judged against the threshold by its ensemble members."""

    row: TrialRow
    reached: int
    members: int

    @property
    def fits(self) -> bool:
        """Every member reached the threshold: the architecture fits for any seed we tried."""
        return self.members > 0 and self.reached == self.members

    @property
    def size(self) -> int:
        return int(self.row.parameter_count or 0)

    @property
    def mean(self) -> float:
        return sum(self.row.members[ANSWER_METRIC]) / self.members


@dataclass
class Answer:
    threshold: float
    definition: str
    winner: Candidate | None
    runner_up: Candidate | None
    partial: list[Candidate]
    closest: Candidate | None
    judged: int
    unjudged: list[int] = field(default_factory=list)


ANSWER_DEFINITION = (
    "An architecture *fits* when **every** member of its ensemble (independent initialisations, "
    "same data and training) ends with {metric} >= {threshold:g} on the validation grid, so the "
    "answer does not rest on a lucky seed. Only complete trials are judged (pruned trials "
    "stopped early). The smallest fitting architecture by parameter count wins (ties: higher "
    "mean {metric}); the runner-up is the next smallest different architecture that fits."
)


def judge(rows: Sequence[TrialRow], threshold: float) -> tuple[list[Candidate], list[int]]:
    """Candidates from complete trials with per-member values; the rest are listed as unjudged."""
    candidates, unjudged = [], []
    for row in rows:
        if row.state != "complete":
            continue
        values = row.members.get(ANSWER_METRIC)
        if not values or row.parameter_count is None:
            unjudged.append(row.number)
            continue
        reached = sum(1 for v in values if v >= threshold)
        candidates.append(Candidate(row, reached, len(values)))
    return candidates, unjudged


def threshold_answer(rows: Sequence[TrialRow], threshold: float = DEFAULT_THRESHOLD) -> Answer:
    """The smallest architecture whose members all reach `threshold`, its runner-up, and context."""
    candidates, unjudged = judge(rows, threshold)
    per_architecture = _best_per_architecture(candidates)
    fitting = sorted((c for c in per_architecture if c.fits), key=lambda c: (c.size, -c.mean, c.row.number))
    winner = fitting[0] if fitting else None
    runner_up = fitting[1] if len(fitting) > 1 else None
    limit = winner.size if winner else math.inf
    partial = sorted(
        (c for c in per_architecture if 0 < c.reached < c.members and c.size < limit),
        key=lambda c: (c.size, -c.reached),
    )
    closest = None if winner else max(candidates, key=lambda c: (c.reached / c.members, c.mean), default=None)
    definition = ANSWER_DEFINITION.format(metric=ANSWER_METRIC, threshold=threshold)
    return Answer(threshold, definition, winner, runner_up, partial, closest, len(candidates), unjudged)


def _best_per_architecture(candidates: Sequence[Candidate]) -> list[Candidate]:
    """One candidate per architecture (its most convincing trial): repeats are not new evidence."""
    best: dict[tuple[tuple[str, Any], ...], Candidate] = {}
    for candidate in candidates:
        key = candidate.row.architecture()
        current = best.get(key)
        if current is None or (candidate.reached / candidate.members, candidate.mean) > (
            current.reached / current.members,
            current.mean,
        ):
            best[key] = candidate
    return list(best.values())


# ---- importances, best, top ----------------------------------------------------------


@dataclass(frozen=True)
class Importances:
    values: dict[str, float] | None
    reason: str
    target_name: str


def param_importances(study: optuna.Study, objectives: Sequence[Objective]) -> Importances:
    """Optuna's parameter importances for the first objective, or why they are not meaningful."""
    target_name = objectives[0].metric
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return Importances(
            None, f"too few complete trials ({len(complete)}; at least {MIN_TRIALS_FOR_IMPORTANCE} needed)", target_name
        )
    searched = sorted({name for t in complete for name in t.params})
    if len(searched) < 2:
        only = searched[0] if searched else "none"
        return Importances(None, f"only one parameter was searched ({only}): its importance is 1 by construction", target_name)
    if len({t.values[0] for t in complete}) < 2:
        return Importances(None, f"every complete trial has the same {target_name}: nothing to attribute", target_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(
                study, evaluator=importance_evaluator(), target=importance_target(study)
            )
    except Exception as error:  # Optuna refuses odd studies (e.g. a param with one value)
        return Importances(None, f"Optuna could not estimate them ({type(error).__name__}: {error})", target_name)
    return Importances(dict(values), "PED-ANOVA (Optuna's default evaluator)", target_name)


def importance_evaluator() -> optuna.importance.BaseImportanceEvaluator:
    """Optuna's default, PED-ANOVA: deterministic (same study, same importances) and no sklearn."""
    return optuna.importance.PedAnovaImportanceEvaluator()


def primary_target(study: optuna.Study) -> Callable[[FrozenTrial], float] | None:
    """Optuna's plots need one target on a multi-objective study: the first objective."""
    return (lambda t: t.values[0]) if len(study.directions) > 1 else None


def importance_target(study: optuna.Study) -> Callable[[FrozenTrial], float] | None:
    """PED-ANOVA takes any explicit target as lower-is-better, so a maximised one is negated."""
    if len(study.directions) == 1:
        return None
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return lambda t: sign * t.values[0]


def best_row(study: optuna.Study, rows: Sequence[TrialRow], objectives: Sequence[Objective]) -> TrialRow | None:
    """Optuna's best trial; on a Pareto study the front's best on the first objective (best.yaml's)."""
    by_number = {row.number: row for row in rows}
    if not any(row.state == "complete" for row in rows):
        return None
    if len(objectives) == 1:
        return by_number[study.best_trial.number]
    sign = 1 if objectives[0].direction == "maximize" else -1
    front = study.best_trials
    return by_number[max(front, key=lambda t: sign * t.values[0]).number] if front else None


def top_rows(rows: Sequence[TrialRow], objectives: Sequence[Objective], n: int = TOP_N) -> list[TrialRow]:
    sign = -1 if objectives[0].direction == "maximize" else 1
    complete = [r for r in rows if r.state == "complete" and r.values]
    return sorted(complete, key=lambda r: (sign * r.values[0], r.number))[:n]  # type: ignore[index]


def pareto_rows(study: optuna.Study, rows: Sequence[TrialRow]) -> list[TrialRow]:
    if len(study.directions) < 2:
        return []
    numbers = {t.number for t in study.best_trials}
    return sorted((r for r in rows if r.number in numbers), key=lambda r: (r.values or [0.0])[1:])


def objectives_of(study: optuna.Study, pointer: dict[str, Any]) -> tuple[Objective, ...]:
    """From study.json when there, else the storage's metric names and directions."""
    listed = pointer.get("objectives")
    if isinstance(listed, list) and len(listed) == len(study.directions):
        return tuple(Objective(str(o["metric"]), str(o["direction"])) for o in listed)
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    return tuple(Objective(n, d.name.lower()) for n, d in zip(names, study.directions, strict=True))


# ---- trials.csv ----------------------------------------------------------------------


def csv_columns(rows: Sequence[TrialRow]) -> list[str]:
    params = sorted({name for row in rows for name in row.params})
    metric_columns = [f"{m}_{s}" for m in SHOWN_METRICS for s in ("mean", "min", "max", "std")]
    return [
        "number", "state", *params, *metric_columns, f"{ANSWER_METRIC}_members", "epochs", "duration_s",
        PARAMETER_COUNT, "host", "started", "completed", "fail_reason", "reproduce", "folder",
    ]


def csv_record(row: TrialRow, columns: Sequence[str]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "number": row.number, "state": row.state, "epochs": row.epochs, "duration_s": row.duration_s,
        PARAMETER_COUNT: row.parameter_count, "host": row.host, "fail_reason": row.fail_reason,
        "reproduce": row.reproduce, "folder": str(row.folder or ""),
        "started": row.started.isoformat(timespec="seconds") if row.started else "",
        "completed": row.completed.isoformat(timespec="seconds") if row.completed else "",
        f"{ANSWER_METRIC}_members": ";".join(f"{v:.6g}" for v in row.members.get(ANSWER_METRIC, [])),
    }
    record.update(row.params)
    for metric in SHOWN_METRICS:
        for stat in ("mean", "min", "max", "std"):
            record[f"{metric}_{stat}"] = row.metric(metric, stat)
    return {c: ("" if record.get(c) is None else record.get(c)) for c in columns}


def write_trials_csv(rows: Sequence[TrialRow], path: Path) -> None:
    """One row per trial, every state, for pandas or a spreadsheet (written atomically)."""
    columns = csv_columns(rows)
    partial = path.with_suffix(".csv.tmp")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            record = csv_record(row, columns)
            writer.writerow({k: scrub(v) if isinstance(v, str) else v for k, v in record.items()})
    os.replace(partial, path)


# ---- the whole report ----------------------------------------------------------------


@dataclass
class Report:
    """Everything the summary shows, computed once from storage and trial folders."""

    source: StudySource
    study_name: str
    objectives: tuple[Objective, ...]
    rows: list[TrialRow]
    counts: dict[str, int]
    best: TrialRow | None
    top: list[TrialRow]
    pareto: list[TrialRow]
    importances: Importances
    answer: Answer
    n_trials: int | None
    pictures: dict[str, Path] = field(default_factory=dict)
    skipped_pictures: dict[str, str] = field(default_factory=dict)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


def build_report(study: optuna.Study, source: StudySource, threshold: float = DEFAULT_THRESHOLD) -> Report:
    rows = collect_rows(study, source.folder)
    if not rows:
        raise ReportError(
            f"study {study.study_name!r} ({source.storage_display}) has no trials yet: "
            "start it with `make sweep`, or wait for its first trial"
        )
    objectives = objectives_of(study, source.pointer)
    n_trials = source.pointer.get("n_trials")
    return Report(
        source=source,
        study_name=study.study_name,
        objectives=objectives,
        rows=rows,
        counts=state_counts(study.get_trials(deepcopy=False)),
        best=best_row(study, rows, objectives),
        top=top_rows(rows, objectives),
        pareto=pareto_rows(study, rows),
        importances=param_importances(study, objectives),
        answer=threshold_answer(rows, threshold),
        n_trials=int(n_trials) if isinstance(n_trials, int) else None,
    )


def write_outputs(report: Report, study: optuna.Study, tensorboard: bool = True) -> str:
    """trials.csv, pictures, summary.md and the TensorBoard entry; returns the summary text."""
    from mlpsweep import study_plots

    folder = report.source.folder
    write_trials_csv(report.rows, folder / "trials.csv")
    report.pictures, report.skipped_pictures = study_plots.draw_all(report, study, folder / "plots")
    text = scrub(summary_markdown(report))
    partial = folder / "summary.md.tmp"
    partial.write_text(text)
    os.replace(partial, folder / "summary.md")
    if tensorboard:
        study_plots.log_to_tensorboard(report, text, folder / "summary")
    return text


def summarize_study(
    target: str | None,
    threshold: float = DEFAULT_THRESHOLD,
    storage: str | None = None,
    sweeps_dir: Path = DEFAULT_SWEEPS_DIR,
    opener: Callable[[str], optuna.storages.BaseStorage] | None = None,
) -> tuple[Report, str]:
    """The whole of `make summary`: find, open, compute, write. Raises ReportError on bad input.

    `opener` (default `open_storage`) is how tests serve a PostgreSQL URL from an SQLite file.
    """
    if not 0.0 < threshold <= 1.0:
        raise ReportError(f"--threshold {threshold}: must be in (0, 1], an accuracy on the validation grid")
    source = resolve_source(find_study_folder(target, sweeps_dir), storage)
    study = load_study(source, opener or open_storage)
    report = build_report(study, source, threshold)
    return report, write_outputs(report, study)


# ---- summary.md ----------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _spread(row: TrialRow, metric: str = ANSWER_METRIC) -> str:
    low, high = row.metric(metric, "min"), row.metric(metric, "max")
    return "n/a" if low is None or high is None else f"{low:.4f}..{high:.4f}"


def _params(row: TrialRow) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.params.items()) or "(none)"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _elapsed(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def _arch(candidate: Candidate) -> str:
    arch = ", ".join(f"{k}={v}" for k, v in candidate.row.architecture())
    return f"{arch} ({candidate.size} parameters, trial {candidate.row.number})"


def _members_text(candidate: Candidate, threshold: float) -> str:
    values = candidate.row.members[ANSWER_METRIC]
    listed = ", ".join(f"{v:.4f}" for v in values)
    return f"{candidate.reached} of {candidate.members} members reached >= {threshold:g} ({listed})"


def summary_markdown(report: Report) -> str:
    parts = [
        _header_md(report), _answer_md(report), _best_md(report), _pareto_md(report), _top_md(report),
        _importances_md(report), _problems_md(report), _pictures_md(report), _files_md(report),
    ]
    return "\n\n".join(p for p in parts if p).rstrip() + "\n"


def _header_md(report: Report) -> str:
    c = report.counts
    finished = c["complete"] + c["pruned"] + c["failed"]
    budget = f" of n_trials={report.n_trials}" if report.n_trials else ""
    objectives = ", ".join(f"{o.metric} ({o.direction})" for o in report.objectives)
    lines = [
        f"# Study `{report.study_name}`",
        "",
        f"- storage: `{report.source.storage_display}`",
        f"- objectives: {objectives}",
        f"- trials: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed, {c['running']} running"
        + (f", {c['waiting']} waiting" if c["waiting"] else "")
        + f" ({finished} finished{budget}); {c['retried']} retried after their worker died",
        f"- wall time: {_duration(_study_elapsed(report.rows))} from the first trial's start to the last finish",
        f"- summary written {datetime.now().isoformat(timespec='seconds')} from the storage and trial folders",
    ]
    if c["running"] or (report.n_trials and finished < report.n_trials):
        lines.append(
            "- **the study is not finished**: this is a snapshot; running trials of a killed sweep are "
            "failed and retried when the sweep command is run again"
        )
    return "\n".join(lines)


def _study_elapsed(rows: Sequence[TrialRow]) -> float | None:
    starts = [r.started for r in rows if r.started]
    ends = [r.completed for r in rows if r.completed]
    return _elapsed(min(starts), max(ends)) if starts and ends else None


def _answer_md(report: Report) -> str:
    answer = report.answer
    lines = [f"## The answer: the smallest network that fits ({ANSWER_METRIC} >= {answer.threshold:g})", ""]
    if answer.winner:
        w = answer.winner
        lines.append(f"**{_arch(w)}**: {_members_text(w, answer.threshold)}.")
        if w.row.reproduce:
            lines.append(f"Reproduce: `{w.row.reproduce}`")
        lines.append("")
        if answer.runner_up:
            r = answer.runner_up
            lines.append(f"Runner-up: {_arch(r)}: {_members_text(r, answer.threshold)}.")
        else:
            lines.append("Runner-up: none; no other architecture fit in this study.")
    elif answer.judged:
        lines.append(
            f"**None of the {answer.judged} complete trials fit**: no architecture had all its members "
            f"reach {answer.threshold:g} within this budget (epochs, trials)."
        )
        if answer.closest:
            c = answer.closest
            best_member = max(c.row.members[ANSWER_METRIC])
            lines.append(
                f"Closest: {_arch(c)}: {_members_text(c, answer.threshold)}; "
                f"mean {c.mean:.4f}, best member {best_member:.4f}."
            )
    else:
        lines.append("No complete trial with per-member values yet: nothing to judge.")
    if answer.partial:
        lines += ["", "Smaller architectures where only some members reached it (they can fit, but not reliably):"]
        lines += [f"- {_arch(c)}: {_members_text(c, answer.threshold)}" for c in answer.partial[:5]]
    if answer.unjudged:
        lines += ["", f"Not judged (trial folder or metrics.json missing here): trials {_numbers(answer.unjudged)}."]
    lines += ["", f"*Definition.* {answer.definition} Change the threshold with `--threshold`."]
    return "\n".join(lines)


def _numbers(numbers: Sequence[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def _best_md(report: Report) -> str:
    best = report.best
    if best is None:
        return "## Best trial\n\nNo trial has completed yet."
    how = "the Pareto front's highest " + report.objectives[0].metric if report.multi_objective else "Optuna's best trial"
    members = best.members.get(ANSWER_METRIC, [])
    lines = [
        f"## Best trial: {best.number} ({how})",
        "",
        "| | |",
        "| --- | --- |",
        f"| parameters | {_params(best)} |",
        f"| {ANSWER_METRIC} (mean of {len(members) or '?'} members) | **{_fmt(best.metric(ANSWER_METRIC))}** "
        f"(min..max {_spread(best)}, std {_fmt(best.metric(ANSWER_METRIC, 'std'))}) |",
        f"| members' {ANSWER_METRIC} | {', '.join(f'{v:.4f}' for v in members) or 'n/a'} |",
        f"| train/acc | {_fmt(best.metric('train/acc'))} (min..max {_spread(best, 'train/acc')}) |",
        f"| val/loss | {_fmt(best.metric('val/loss'))} |",
        f"| epochs trained | {best.epochs if best.epochs is not None else 'n/a'} |",
        f"| parameter count (one member) | {best.parameter_count if best.parameter_count is not None else 'n/a'} |",
        f"| wall time | {_duration(best.duration_s)} training, {_duration(_elapsed(best.started, best.completed))} "
        "start to finish |",
        f"| folder | `{best.folder or 'not on this machine'}` |",
        "",
        "Reproduce it:",
        "",
        "```",
        best.reproduce or "(no reproduce line recorded)",
        "```",
    ]
    if len(members) > 1:
        lines += [
            "",
            f"How sure: its {len(members)} members (same architecture, different initialisations) span "
            f"{_spread(best)}. That is {len(members)} seeds: a fresh one will usually land near this range, "
            "but so few samples cannot rule out an unlucky initialisation.",
        ]
    return "\n".join(lines)


def _row_cells(row: TrialRow) -> list[str]:
    return [
        str(row.number), _params(row), _fmt(row.metric(ANSWER_METRIC)), _spread(row), _fmt(row.metric("train/acc")),
        _fmt(row.metric("val/loss")), str(row.parameter_count or "n/a"), str(row.epochs or "n/a"), _duration(row.duration_s),
    ]


TABLE_HEAD = ["trial", "parameters", "val/acc mean", "val/acc min..max", "train/acc", "val/loss", "params", "epochs", "time"]


def _table(rows: Sequence[TrialRow]) -> str:
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + " --- |" * len(TABLE_HEAD)]
    lines += ["| " + " | ".join(_row_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def _top_md(report: Report) -> str:
    if not report.top:
        return ""
    first = report.objectives[0]
    return f"## Top {len(report.top)} trials by {first.metric} ({first.direction})\n\n" + _table(report.top)


def _pareto_md(report: Report) -> str:
    if not report.multi_objective:
        return ""
    if not report.pareto:
        return "## Pareto front\n\nEmpty: no trial has completed yet."
    names = " vs ".join(f"{o.metric} ({o.direction})" for o in report.objectives)
    return f"## Pareto front: {names}, smallest first\n\n" + _table(report.pareto)


def _importances_md(report: Report) -> str:
    imp = report.importances
    head = f"## Parameter importances (for {imp.target_name})\n\n"
    if imp.values is None:
        return head + f"Not computed: {imp.reason}."
    lines = ["| parameter | importance |", "| --- | --- |"]
    lines += [f"| {name} | {value:.3f} |" for name, value in imp.values.items()]
    return head + "\n".join(lines) + f"\n\nMethod: {imp.reason}; they sum to 1 and say which knob moved the metric most."


def _problems_md(report: Report) -> str:
    failed = [r for r in report.rows if r.state in ("failed", "retried")]
    running = [r for r in report.rows if r.state in ("running", "waiting")]
    lines: list[str] = []
    if failed:
        lines += ["## Failed trials", ""]
        lines += [f"- trial {r.number} ({r.state}, {_params(r)}): {r.fail_reason or 'no reason recorded'}" for r in failed]
    if running:
        lines += (["", ""] if lines else []) + ["## Running trials", ""]
        lines += [
            f"- trial {r.number} ({_params(r)}) on {r.host or '?'}, started "
            f"{r.started.isoformat(timespec='seconds') if r.started else '?'}"
            for r in running
        ]
    return "\n".join(lines)


def _pictures_md(report: Report) -> str:
    if not report.pictures and not report.skipped_pictures:
        return ""
    folder = report.source.folder
    lines = ["## Pictures", ""]
    for title, path in report.pictures.items():
        lines += [f"### {title}", "", f"![{title}]({path.relative_to(folder)})", ""]
    for title, reason in report.skipped_pictures.items():
        lines.append(f"- {title}: not drawn ({reason})")
    return "\n".join(lines).rstrip()


def _files_md(report: Report) -> str:
    return "\n".join([
        "## Files",
        "",
        "- `trials.csv`: one row per trial (state, parameters, metrics, members, epochs, time, fail reason)",
        "- `best.yaml`: the best trial's full config (written by the sweep)",
        "- `trials/<n>/`: each trial's run folder (config.yaml, metrics.json, fit.png, loss.png, TensorBoard events)",
        "- TensorBoard: `make tensorboard`; this summary and its pictures are under `summary/`",
    ])
