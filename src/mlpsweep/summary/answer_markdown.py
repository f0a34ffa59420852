"""summary.md's answer: the smallest network that fits, its neighbours, and how sure.

Worded by coverage: a study that trained every architecture of its space names *the*
smallest; any other names the smallest *among those tried* and the smaller widths it never
tried, since a sampler's gaps are exactly where a smaller answer could hide.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlpsweep.summary.answer import ANSWER_METRIC, TRAIN_METRIC, Candidate
from mlpsweep.summary.evidence import Probability
from mlpsweep.summary.fit_map import FitCell, FitMap
from mlpsweep.summary.probability_markdown import cell_p_text, plural
from mlpsweep.summary.study_summary import StudySummary


def _singular(noun: str) -> str:
    return noun.removesuffix("s")


def arch_text(candidate: Candidate) -> str:
    arch = ", ".join(f"{key}={value}" for key, value in candidate.row.architecture())
    return f"{arch} ({candidate.size} parameters, trial {candidate.row.number})"


def members_text(candidate: Candidate, probability: Probability | None = None) -> str:
    """This trial's members, and its cell's p pooled over every trial of it, when known."""
    members = candidate.row.members
    listed = ", ".join(f"{value:.4f}" for value in members[ANSWER_METRIC])
    train = ", ".join(f"{value:.4g}" for value in members[TRAIN_METRIC])
    where = _architecture_of(candidate)
    pooled = cell_p_text(probability, *where, _facet(candidate, probability)) if (
        probability is not None and where is not None) else ""
    return (
        f"{candidate.reached} of {candidate.members} members fit "
        f"({ANSWER_METRIC} {listed}; {TRAIN_METRIC} {train})"
        + (f"; its cell over all its members: {pooled}" if pooled else "")
    )


def _facet(candidate: Candidate, probability: Probability) -> tuple:
    return tuple((key, candidate.row.params.get(key)) for key in probability.facet_keys)


def _widths(widths: Sequence[int]) -> str:
    """Ascending widths with runs of three or more as 'low..high': '1, 3..5, 22..26'."""
    runs: list[list[int]] = []
    for width in widths:
        if runs and width == runs[-1][-1] + 1:
            runs[-1].append(width)
        else:
            runs.append([width])
    return ", ".join(
        f"{run[0]}..{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs
    )


def _architecture_of(candidate: Candidate) -> tuple[int, int] | None:
    params = candidate.row.params
    if "model.hidden" in params and "model.layers" in params:
        return int(params["model.hidden"]), int(params["model.layers"])
    return None


def answer_md(summary: StudySummary) -> str:
    answer, coverage = summary.answer, summary.coverage
    lines = [
        f"## The smallest architecture whose members all fit "
        f"({TRAIN_METRIC} = 1, {ANSWER_METRIC} >= {answer.threshold:g})",
        "",
        "A cell's members are a few samples of its p, so this is the first cell that happened "
        "to fit with all of them; the probability answer above is the one to act on.",
        "",
    ]
    if answer.winner:
        lines += _winner_md(summary, answer.winner)
    elif answer.judged:
        architectures = plural(len(answer.candidates), _singular(summary.space.noun))
        lines.append(
            f"**None of the {architectures} trained ({plural(answer.judged, 'trial')}) had all "
            "its members fit** within this budget (epochs, trials)."
        )
        if answer.closest:
            closest = answer.closest
            best_member = max(closest.row.members[ANSWER_METRIC])
            lines.append(
                f"Closest: {arch_text(closest)}: {members_text(closest, summary.probability)}; "
                f"mean {ANSWER_METRIC} {closest.mean:.4f}, best member {best_member:.4f}."
            )
    else:
        lines.append("No complete trial with per-member values yet: nothing to judge.")
    if answer.partial:
        which = "Smaller architectures" if answer.winner else "Other architectures"
        lines += ["", f"{which} where only some members fit (they can fit, but not reliably):"]
        lines += [f"- {arch_text(candidate)}: {members_text(candidate, summary.probability)}"
                  for candidate in answer.partial[:5]]
    if answer.winner:
        lines += _context_md(summary, answer.winner)
    if answer.unjudged:
        numbers = ", ".join(str(number) for number in answer.unjudged)
        lines += ["", f"Not judged (trial folder or metrics.json missing here): trials {numbers}."]
    lines += ["", f"*Coverage.* {coverage.sentence()}.",
              "", f"*Definition.* {answer.definition} Change the threshold with `--threshold`."]
    return "\n".join(lines)


def _winner_md(summary: StudySummary, winner: Candidate) -> list[str]:
    coverage = summary.coverage
    if coverage.complete:
        scope = f"Of all {coverage.total} {summary.space.noun} of the search space, the smallest"
    else:
        scope = (
            f"Among the {coverage.trained} {summary.space.noun} tried "
            f"(of {coverage.total if coverage.total is not None else 'a continuous space'}), "
            "the smallest"
        )
    lines = [
        f"{scope} that fits: **{arch_text(winner)}**: "
        f"{members_text(winner, summary.probability)}."
    ]
    if winner.row.reproduce:
        lines.append(
            f"Reproduce (one seed: its members are samples of p, not a guarantee): "
            f"`{winner.row.reproduce}`"
        )
    lines.append("")
    runner_up = summary.answer.runner_up
    lines.append(
        f"Runner-up: {arch_text(runner_up)}: {members_text(runner_up, summary.probability)}."
        if runner_up
        else "Runner-up: none; no other architecture fit in this study."
    )
    return lines


def _layers(count: int) -> str:
    return f"{count} layer" if count == 1 else f"{count} layers"


def _context_md(summary: StudySummary, winner: Candidate) -> list[str]:
    """Untried smaller widths, the neighbourhood and how sure: a hidden x layers map only."""
    where = _architecture_of(winner)
    fit_map = summary.fit_map
    if where is None or not fit_map.drawable:
        return []
    hidden, layers = where
    lines = []
    untried = [width for width in fit_map.widths
               if width < hidden and fit_map.cell(width, layers) is None]
    if untried:
        lines += ["", f"**Not tried**: widths {_widths(untried)} at {_layers(layers)}, smaller "
                  "than the answer; a full grid (`make map`, `python src/sweep.py sweep=grid`) "
                  "settles them."]
    lines += ["", *neighbourhood_md(fit_map, hidden, layers), "", how_sure_md(fit_map, winner)]
    return lines


def neighbourhood_md(fit_map: FitMap, hidden: int, layers: int) -> list[str]:
    """Members that fit, for widths -2..+2 around the answer and one layer up and down."""
    widths, depths = fit_map.neighbourhood(hidden, layers)

    def shown(cell: FitCell | None, here: bool) -> str:
        text = "not trained" if cell is None else cell.label
        return f"**{text}**" if here else text

    head = "| layers \\ hidden | " + " | ".join(
        f"**{width}**" if width == hidden else str(width) for width in widths) + " |"
    lines = ["Its neighbours (members that fit):", "", head, "|" + " --- |" * (len(widths) + 1)]
    for depth in sorted(depths, reverse=True):
        cells = [shown(fit_map.cell(width, depth), (width, depth) == (hidden, layers))
                 for width in widths]
        label = f"**{depth}**" if depth == layers else str(depth)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def how_sure_md(fit_map: FitMap, winner: Candidate) -> str:
    """Whether the widths just above also fit with all their members (the probability
    section's intervals say how sure; this only shows the neighbours)."""
    where = _architecture_of(winner)
    assert where is not None
    hidden, layers = where
    wider = fit_map.wider(hidden, layers)
    if not wider:
        return "*Above it.* It is the widest width of the space: nothing above it confirms it."
    listed = ", ".join(f"{width}: {cell.label if cell else 'not trained'}"
                       for width, cell in wider)
    trained = [cell for _, cell in wider if cell is not None]
    if trained and all(cell.reliable for cell in trained):
        verdict = "every trained one fits with all its members"
    elif trained:
        verdict = "not all fit with all their members, so one cell's K of K is not sharp here"
    else:
        verdict = "none was trained, so nothing above it confirms it"
    return f"*Above it.* The widths just above it at {_layers(layers)} ({listed}): {verdict}."
