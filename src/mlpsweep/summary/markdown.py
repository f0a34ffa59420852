"""summary.md: the study's summary as markdown, answer first.

It reads a `StudySummary` only, so the file says exactly what the pictures and TensorBoard
say; the caller scrubs passwords from the finished text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mlpsweep.summary.answer import ANSWER_METRIC
from mlpsweep.summary.answer_markdown import answer_md
from mlpsweep.summary.map_markdown import fit_map_md, repeats_line
from mlpsweep.summary.probability_markdown import cell_p_text, plural, probability_md
from mlpsweep.summary.study_summary import StudySummary
from mlpsweep.summary.trial_rows import TrialRow

TABLE_HEAD = [
    "trial", "parameters", "val/acc mean", "val/acc min..max", "train/acc", "val/loss", "params",
    "epochs", "time",
]


def summary_markdown(summary: StudySummary) -> str:
    parts = [
        _header_md(summary), probability_md(summary), answer_md(summary), fit_map_md(summary),
        _best_md(summary),
        _pareto_md(summary),
        _top_md(summary), _importances_md(summary), _problems_md(summary),
        _pictures_md(summary), _files_md(summary),
    ]
    return "\n\n".join(part for part in parts if part).rstrip() + "\n"


# ---- formatting ----------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _spread(row: TrialRow, metric: str = ANSWER_METRIC) -> str:
    low, high = row.metric(metric, "min"), row.metric(metric, "max")
    return "n/a" if low is None or high is None else f"{low:.4f}..{high:.4f}"


def _params(row: TrialRow) -> str:
    return ", ".join(f"{key}={value}" for key, value in row.params.items()) or "(none)"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _elapsed(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


# ---- sections ------------------------------------------------------------------------


def _header_md(summary: StudySummary) -> str:
    counts = summary.counts
    finished = counts["complete"] + counts["pruned"] + counts["failed"]
    later_rounds = sum(1 for row in summary.rows if row.round > 0)
    budget = f" of n_trials={summary.n_trials}" if summary.n_trials else ""
    if budget and later_rounds:  # a map's rounds add trials beyond its cells
        budget += f" plus {plural(later_rounds, 'trial')} of later rounds"
    objectives = ", ".join(
        f"{objective.metric} ({objective.direction})" for objective in summary.objectives
    )
    waiting = f", {counts['waiting']} waiting" if counts["waiting"] else ""
    lines = [
        f"# Study `{summary.study_name}`",
        "",
        f"- storage: `{summary.source.storage_display}`",
        f"- objectives: {objectives}",
        f"- trials: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed, {counts['running']} running{waiting} "
        f"({finished} finished{budget}); {counts['retried']} retried after their worker died",
        f"- coverage: {summary.coverage.sentence()}",
        f"- evidence: {_evidence(summary)}",
        f"- wall time: {_duration(_study_elapsed(summary.rows))} from the first trial's start "
        "to the last finish",
        f"- summary written {datetime.now().isoformat(timespec='seconds')} from the storage and "
        "trial folders",
    ]
    if repeats_line(summary.rows):
        lines.append(repeats_line(summary.rows))
    if counts["running"] or (summary.n_trials and finished < summary.n_trials):
        lines.append(
            "- **the study is not finished**: this is a snapshot; running trials of a killed "
            "sweep are failed and retried when the sweep command is run again"
        )
    return "\n".join(lines)


def _evidence(summary: StudySummary) -> str:
    """Architectures, trials and members, each counted as what it is."""
    probability = summary.probability
    if not probability.cells:
        return "no trial with its members' values yet"
    rounds = max((row.round for row in summary.rows), default=0)
    later = ""
    if rounds:
        most, uniform = probability.uniform_members()
        later = (
            f", {plural(rounds, 'round')} of new initialisations after the first: "
            f"{probability.members / uniform:.0%} of the {uniform} members that {most} for "
            "every cell (the most any cell holds) would take"
        )
    return (
        f"{plural(probability.members, 'member')} (initialisations) in "
        f"{plural(probability.trials, 'trial')} over "
        f"{plural(probability.architectures, 'architecture')}{later}"
    )


def _study_elapsed(rows: Sequence[TrialRow]) -> float | None:
    starts = [row.started for row in rows if row.started]
    ends = [row.completed for row in rows if row.completed]
    return _elapsed(min(starts), max(ends)) if starts and ends else None


def _best_md(summary: StudySummary) -> str:
    best = summary.best
    if best is None:
        return "## Best trial\n\nNo trial has completed yet."
    how = (
        "the Pareto front's highest " + summary.objectives[0].metric
        if summary.multi_objective
        else "Optuna's best trial"
    )
    members = best.members.get(ANSWER_METRIC, [])
    listed = ", ".join(f"{value:.4f}" for value in members) or "n/a"
    epochs = best.epochs if best.epochs is not None else "n/a"
    size = best.parameter_count if best.parameter_count is not None else "n/a"
    start_to_finish = _duration(_elapsed(best.started, best.completed))
    lines = [
        f"## Best trial: {best.number} ({how})",
        "",
        "| | |",
        "| --- | --- |",
        f"| parameters | {_params(best)} |",
        f"| {ANSWER_METRIC} (mean of {len(members) or '?'} members) | "
        f"**{_fmt(best.metric(ANSWER_METRIC))}** "
        f"(min..max {_spread(best)}, std {_fmt(best.metric(ANSWER_METRIC, 'std'))}) |",
        f"| members' {ANSWER_METRIC} | {listed} |",
        f"| train/acc | {_fmt(best.metric('train/acc'))} "
        f"(min..max {_spread(best, 'train/acc')}) |",
        f"| val/loss | {_fmt(best.metric('val/loss'))} |",
        f"| epochs trained | {epochs} |",
        f"| parameter count (one member) | {size} |",
        f"| wall time | {_duration(best.duration_s)} training, {start_to_finish} "
        "start to finish |",
        f"| folder | `{best.folder or 'not on this machine'}` |",
        "",
        "Reproduce it (one seed: each member's verdict is one sample of p):",
        "",
        "```",
        best.reproduce or "(no reproduce line recorded)",
        "```",
    ]
    lines += ["", _samples_md(summary, best, len(members))]
    return "\n".join(lines)


def _samples_md(summary: StudySummary, best: TrialRow, members: int) -> str:
    """What the best trial's members say: samples of its cell's p, never a verdict."""
    params = best.params
    pooled = ""
    if "model.hidden" in params and "model.layers" in params:
        facet = tuple((key, params.get(key)) for key in summary.probability.facet_keys)
        pooled = cell_p_text(
            summary.probability, int(params["model.hidden"]), int(params["model.layers"]), facet
        )
    text = (
        f"Its {plural(members, 'member')} (initialisations) span {_spread(best)}: each one's "
        "fit or miss is one sample of the probability p that an initialisation of this "
        "architecture fits"
    )
    return text + (f"; over all its cell's members, {pooled}." if pooled else ".")


def _row_cells(row: TrialRow) -> list[str]:
    return [
        str(row.number), _params(row), _fmt(row.metric(ANSWER_METRIC)), _spread(row),
        _fmt(row.metric("train/acc")), _fmt(row.metric("val/loss")),
        str(row.parameter_count or "n/a"), str(row.epochs or "n/a"), _duration(row.duration_s),
    ]


def _table(rows: Sequence[TrialRow]) -> str:
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + " --- |" * len(TABLE_HEAD)]
    lines += ["| " + " | ".join(_row_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def _top_md(summary: StudySummary) -> str:
    if not summary.top:
        return ""
    first = summary.objectives[0]
    head = f"## Top {len(summary.top)} trials by {first.metric} ({first.direction})\n\n"
    return head + _table(summary.top)


def _pareto_md(summary: StudySummary) -> str:
    if not summary.multi_objective:
        return ""
    if not summary.pareto:
        return "## Pareto front\n\nEmpty: no trial has completed yet."
    names = " vs ".join(
        f"{objective.metric} ({objective.direction})" for objective in summary.objectives
    )
    return f"## Pareto front: {names}, smallest first\n\n" + _table(summary.pareto)


def _importances_md(summary: StudySummary) -> str:
    importances = summary.importances
    head = f"## Parameter importances (for {importances.target_name})\n\n"
    if importances.values is None:
        return head + f"Not computed: {importances.reason}."
    lines = ["| parameter | importance |", "| --- | --- |"]
    lines += [f"| {name} | {value:.3f} |" for name, value in importances.values.items()]
    method = (
        f"Method: {importances.reason}; they sum to 1 and say which knob moved the metric most."
    )
    return head + "\n".join(lines) + "\n\n" + method


def _problems_md(summary: StudySummary) -> str:
    """Failed trials (counted), retried ones (a dead worker's, not counted) and running ones,
    each under its own heading so the lists agree with the count line."""
    sections = [_failed_md(summary.rows), _retried_md(summary.rows), _running_md(summary.rows)]
    return "\n\n".join(section for section in sections if section)


def _failed_md(rows: Sequence[TrialRow]) -> str:
    failed = [row for row in rows if row.state == "failed"]
    if not failed:
        return ""
    lines = ["## Failed trials", ""]
    lines += [
        f"- trial {row.number} ({_params(row)}): {row.fail_reason or 'no reason recorded'}"
        for row in failed
    ]
    return "\n".join(lines)


def _retried_md(rows: Sequence[TrialRow]) -> str:
    retried = [row for row in rows if row.state == "retried"]
    if not retried:
        return ""
    lines = [
        "## Retried trials",
        "",
        "Their worker died (or was interrupted) before they ended; each was queued again and "
        "is not counted as failed.",
        "",
    ]
    for row in retried:
        again = f"retried as trial {row.retried_as}" if row.retried_as is not None else "retried"
        reason = f": {row.fail_reason}" if row.fail_reason else ""
        lines.append(f"- trial {row.number} ({_params(row)}), {again}{reason}")
    return "\n".join(lines)


def _running_md(rows: Sequence[TrialRow]) -> str:
    running = [row for row in rows if row.state in ("running", "waiting")]
    if not running:
        return ""
    lines = ["## Running trials", ""]
    lines += [
        f"- trial {row.number} ({_params(row)}) on {row.host or '?'}, started "
        f"{row.started.isoformat(timespec='seconds') if row.started else '?'}"
        for row in running
    ]
    return "\n".join(lines)


def _pictures_md(summary: StudySummary) -> str:
    if not summary.pictures and not summary.skipped_pictures:
        return ""
    folder = summary.source.folder
    lines = ["## Pictures", ""]
    for title, path in summary.pictures.items():
        lines += [f"### {title}", "", f"![{title}]({path.relative_to(folder)})", ""]
    for title, reason in summary.skipped_pictures.items():
        lines.append(f"- {title}: not drawn ({reason})")
    return "\n".join(lines).rstrip()


def _files_md(summary: StudySummary) -> str:
    return "\n".join([
        "## Files",
        "",
        "- `trials.csv`: one row per trial (state, parameters, metrics, members, epochs, time, "
        "fail reason, folder relative to the project)",
        "- `best.yaml`: the best trial's full config (written by the sweep)",
        "- `trials/<n>/`: each trial's run folder (config.yaml, metrics.json, fit.png, "
        "loss.png, TensorBoard events)",
        "- TensorBoard: `make tensorboard`; this summary and its pictures are under `summary/`",
    ])
