"""summary.md's fit map section: per depth, where fitting starts, whether it holds, how fast.

The picture itself is listed with the other pictures (plots/map.png); this section is the
table a person reads beside it, and a reason when a study's space is no hidden x layers map.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlpsweep.summary.fit_map import DepthRow, FitCell
from mlpsweep.summary.study_summary import StudySummary
from mlpsweep.summary.trial_rows import TrialRow

PER_DEPTH_HEAD = [
    "layers", "widths trained", "smallest where all members of a trial fit",
    "smallest that fits at all (>= 1 member)", "every wider trained width: all members fit",
    "epochs to fit of the members that fit (min / median / max)",
]


def _cell(cell: FitCell | None) -> str:
    if cell is None:
        return "none"
    return f"{cell.hidden} ({cell.parameter_count} parameters, trial {cell.trial}): {cell.label}"


def _reliable(row: DepthRow) -> str:
    text = _cell(row.smallest_reliable)
    if row.untried_below:
        below = ", ".join(str(width) for width in row.untried_below[:8])
        more = ", ..." if len(row.untried_below) > 8 else ""
        where = "not tried below" if row.smallest_reliable is not None else "not tried"
        text += f"; {where}: {below}{more}"
    return text


def _sharp(row: DepthRow) -> str:
    if row.sharp is None:
        return "n/a"
    if row.sharp:
        return "yes"
    listed = ", ".join(str(width) for width in row.not_reliable_above[:8])
    return f"no: {listed}{', ...' if len(row.not_reliable_above) > 8 else ''} do not"


def _epochs(row: DepthRow) -> str:
    spread = row.epochs_range()
    if spread is None:
        return "n/a"
    low, median, high = spread
    count = len(row.epochs_to_fit)
    noun = "member" if row.counts_members else "architecture"
    return f"{low} / {median:g} / {high} ({count} {noun}{'' if count == 1 else 's'})"


def per_depth_table(rows: Sequence[DepthRow]) -> list[str]:
    lines = ["| " + " | ".join(PER_DEPTH_HEAD) + " |", "|" + " --- |" * len(PER_DEPTH_HEAD)]
    for row in rows:
        cells = [str(row.layers), f"{row.trained} of {row.widths}", _reliable(row),
                 _cell(row.smallest_any), _sharp(row), _epochs(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def fit_map_md(summary: StudySummary) -> str:
    fit_map = summary.fit_map
    head = "## The fit map: which architectures fit"
    if not fit_map.drawable:
        return f"{head}\n\nNot drawn: {fit_map.reason}."
    lines = [
        head, "", f"{summary.coverage.sentence()}. `plots/map.png` (and TensorBoard's "
        "`study/map`) colours every trained cell by its pooled P(fit) (the share of its members, "
        "over all its trials, that fit), with its member count written in it; untrained cells "
        "stay blank.", "",
        "Per depth:", "", *per_depth_table(fit_map.per_depth), "",
        "Epochs to fit: with `trainer.stop_at_val_acc` set, as in the sweeps, each member stops "
        "training at the first validation (every `trainer.val_every` epochs) where it fits "
        "(`epochs_to_fit` in a trial's metrics.json), and a trial ends with its last member; "
        "a run without it trains every epoch, and its count is an upper bound.",
    ]
    return "\n".join(lines)


def repeats_line(rows: Sequence[TrialRow]) -> str:
    """'trial 7: repeat of trial 3, ...' or '' when the sampler never proposed a config twice."""
    repeats = [row for row in rows if row.duplicate_of is not None]
    if not repeats:
        return ""
    listed = ", ".join(f"trial {row.number}: repeat of trial {row.duplicate_of}"
                       for row in repeats)
    return (f"- repeated configurations (their twin's result reused, not trained again, not "
            f"shown as results): {listed}")
