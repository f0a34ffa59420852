"""Fit-probability curves: one panel per depth (a column per facet value).

Each panel: every trained width's p with its Wilson 95% bar, the isotonic curve as a step
line with its 95% band, dashed lines at 0.5 and 0.9, the typical and reliable widths marked
on them, and the capacity floor (one layer of that many steep sigmoids fits the labels).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mlpsweep.summary.evidence import Probability, facet_text  # noqa: E402
from mlpsweep.summary.probability import LEVELS, DepthAnswer  # noqa: E402


def curves_figure(probability: Probability, widest: int) -> Figure:
    facets = probability.facets or [()]
    depths = sorted({answer.layers for answer in probability.answers})
    found = {(answer.facet, answer.layers): answer for answer in probability.answers}
    figure = Figure(figsize=(6.5 * len(facets) + 1.0, 2.3 * len(depths) + 1.0), dpi=100)
    grid = figure.subplots(len(depths), len(facets), squeeze=False, sharex=True, sharey=True)
    for column, facet in enumerate(facets):
        for row, depth in enumerate(depths):
            axes = grid[row, column]
            answer = found.get((facet, depth))
            if answer is not None:
                _panel(axes, answer, probability.floor["units"])
            title = f"{depth} hidden layer{'' if depth == 1 else 's'}"
            axes.set_title(f"{facet_text(facet)}: {title}" if facet else title, fontsize=9)
            axes.set_ylim(-0.04, 1.04)
            axes.set_xlim(0, widest + 1)
            axes.grid(alpha=0.3)
            if column == 0:
                axes.set_ylabel("P(fit)")
        grid[-1, column].set_xlabel("hidden units per layer (model.hidden)")
    handles, labels = grid[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.suptitle(
        "P(fit | width): dots pooled members with Wilson 95% bars, line the monotone "
        "(isotonic) estimate with its 95% band", fontsize=9,
    )
    figure.tight_layout(rect=(0, 0.07, 1, 0.97))
    return figure


def _panel(axes: object, answer: DepthAnswer, floor: int) -> None:
    widths = np.array(answer.widths)
    p = np.array([cell.p for cell in answer.cells])
    ci = np.array([cell.ci for cell in answer.cells])
    band = np.array(answer.band)
    axes.fill_between(widths, band[:, 0], band[:, 1], step="mid", color="tab:blue", alpha=0.18,
                      label="estimate's 95% band")
    axes.step(widths, answer.curve, where="mid", color="tab:blue", linewidth=1.6,
              label="monotone estimate")
    axes.errorbar(widths, p, yerr=[p - ci[:, 0], ci[:, 1] - p], fmt="o", markersize=3,
                  color="black", ecolor="grey", elinewidth=0.8, capsize=0,
                  label="p per width (Wilson 95%)")
    for name, level in LEVELS.items():
        axes.axhline(level, color="tab:red", linestyle="--", linewidth=0.8)
        found = answer.crossing(name)
        if found.width is not None:
            axes.plot([found.width], [level], marker="v", color="tab:red", markersize=7)
            axes.annotate(f"{name} {found.width}", (found.width, level), xytext=(4, 4),
                          textcoords="offset points", fontsize=7, color="tab:red")
    axes.axvline(floor, color="tab:green", linestyle=":", linewidth=1.2,
                 label=f"capacity floor: {floor} units (1 layer)")
