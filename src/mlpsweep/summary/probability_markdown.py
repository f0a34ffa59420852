"""summary.md's first section: P(fit) per depth, the widths it gives, and how sure, in one place.

Counts are named for what they count: architectures (cells of the space), trials (Optuna's
trials: a cell may have several, one per round of new initialisations) and members (single
initialisations, each one sample of its cell's p). A sampled study (TPE) says "among those
tried", since the widths it never tried are where a smaller answer could hide.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlpsweep.summary.evidence import Probability, facet_text
from mlpsweep.summary.probability import (
    BOOTSTRAP_DRAWS,
    LEVELS,
    Crossing,
    DepthAnswer,
)
from mlpsweep.summary.study_summary import StudySummary

HEAD = [
    "layers", "widths trained", "members", "first width where any member fits",
    "typical width: P(fit) >= 0.5 (95% interval)", "reliable width: P(fit) >= 0.9 (95% interval)",
]


def plural(count: int, noun: str) -> str:
    """'1 architecture', '3 architectures'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def layers_text(count: int) -> str:
    return plural(count, "layer")


def _end(value: int | None, widest: int) -> str:
    return str(value) if value is not None else f">{widest}"


def interval_text(found: Crossing, widest: int) -> str:
    """'21..27', '29..>64' (the upper end not reached within the space)."""
    return f"{_end(found.low, widest)}..{_end(found.high, widest)}"


def width_text(found: Crossing, widest: int) -> str:
    """'24 (21..27)' or 'not reached within hidden <= 64 (58..>64)'."""
    if found.width is None and found.low is None:
        return f"not reached within hidden <= {widest}"
    width = str(found.width) if found.width is not None else (
        f"not reached within hidden <= {widest}"
    )
    return f"{width} ({interval_text(found, widest)})"


def depth_table(answers: Sequence[DepthAnswer], widest: int, widths: int) -> list[str]:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + " --- |" * len(HEAD)]
    for answer in answers:
        members = sum(cell.members for cell in answer.cells)
        first = answer.first_fit_width
        cells = [
            str(answer.layers), f"{len(answer.cells)} of {widths}", str(members),
            str(first) if first is not None else f"none within hidden <= {widest}",
            width_text(answer.typical, widest), width_text(answer.reliable, widest),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def how_sure(answers: Sequence[DepthAnswer], widest: int) -> str:
    """One statement, per depth, built from the crossings and their intervals."""
    parts = []
    for answer in answers:
        said = []
        for name, share in (("typical", "half"), ("reliable", "9 in 10")):
            found = answer.crossing(name)
            if found.width is None:
                said.append(f"{share} is not reached within hidden <= {widest}")
            else:
                said.append(
                    f"{share} fit from {found.width} units "
                    f"(95% interval {interval_text(found, widest)})"
                )
        parts.append(f"at {layers_text(answer.layers)}, " + " and ".join(said))
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "." if text else ""


def _scope(summary: StudySummary, probability: Probability) -> str:
    coverage = summary.coverage
    counted = (
        f"{plural(probability.architectures, 'architecture')}, "
        f"{plural(probability.trials, 'trial')}, {plural(probability.members, 'member')} "
        "(initialisations)"
    )
    if coverage.complete:
        return f"Every architecture of the space trained: {counted}."
    total = coverage.total if coverage.total is not None else "a continuous space"
    return (
        f"Among those tried ({counted}; {coverage.trained} of {total} {summary.space.noun} "
        "of the space), so a width never tried may do better than these numbers say."
    )


def probability_md(summary: StudySummary) -> str:
    probability = summary.probability
    head = "## The answer: how likely one initialisation is to fit, per depth"
    if not probability.answers:
        return f"{head}\n\nNot computed: {probability.reason}."
    widths = [int(width) for width in summary.space.values("model.hidden")]
    widest = max(widths, default=0)
    floor = probability.floor
    lines = [head, "", _scope(summary, probability), ""]
    for facet in probability.facets:
        answers = [answer for answer in probability.answers if answer.facet == facet]
        if facet:
            lines += [f"### {facet_text(facet)}", ""]
        lines += [*depth_table(answers, widest, len(widths)), ""]
        lines += [f"*How sure.* {how_sure(answers, widest)}", ""]
    if len(probability.facets) > 1:
        lines += [*side_by_side(probability, widest), ""]
    lines += [
        f"*Capacity floor.* The training labels change value {floor['label_changes']} times "
        f"along x, so one hidden layer of {floor['units']} steep sigmoids represents them "
        f"exactly; the distance from {floor['units']} to the widths above is the price of "
        "training from random initialisations (Adam, the epoch budget), not of capacity.",
        "",
        "*Method.* A cell's p is its fitting members over its members, pooled over all its "
        "trials, with a 95% Wilson interval (`summary.json`, `plots/curves.png`). The curve "
        "per depth is the isotonic (non-decreasing) regression of p over width, weighted by "
        "members; the typical and reliable widths are the smallest widths where it reaches "
        f"{LEVELS['typical']:g} and {LEVELS['reliable']:g}. Their intervals are the 2.5% and "
        f"97.5% points of the same widths over {BOOTSTRAP_DRAWS} redraws of every cell's p "
        "from Beta(fits + 1/2, misses + 1/2), seeded; `>W` means beyond the widest width, "
        "in more than 2.5% of the redraws.",
    ]
    return "\n".join(lines)


def side_by_side(probability: Probability, widest: int) -> list[str]:
    """Rows: depths; columns: facet values; each entry 'typical / reliable'."""
    facets = probability.facets
    depths = sorted({answer.layers for answer in probability.answers})
    found = {(answer.facet, answer.layers): answer for answer in probability.answers}
    lines = [
        "### Side by side: typical / reliable width (95% intervals)", "",
        "| layers | " + " | ".join(facet_text(facet) for facet in facets) + " |",
        "|" + " --- |" * (len(facets) + 1),
    ]
    for depth in depths:
        entries = []
        for facet in facets:
            answer = found.get((facet, depth))
            entries.append("not trained" if answer is None else (
                f"{width_text(answer.typical, widest)} / {width_text(answer.reliable, widest)}"
            ))
        lines.append(f"| {depth} | " + " | ".join(entries) + " |")
    return lines


def cell_p_text(probability: Probability, hidden: int, layers: int, facet: tuple = ()) -> str:
    """'p = 7/12 = 0.58 (95% 0.32..0.81)' for a trained cell, '' otherwise."""
    cell = probability.cell(hidden, layers, facet)
    if cell is None:
        return ""
    low, high = cell.ci
    return f"p = {cell.fits}/{cell.members} = {cell.p:.2f} (95% {low:.2f}..{high:.2f})"
