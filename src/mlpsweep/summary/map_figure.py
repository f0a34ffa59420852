"""The fit map: every architecture of the space as a cell, coloured by its fit rate.

Hidden units on x, layers on y; a cell's colour is how many of its members fit (one colour
per count, red none to green all), its text the members' mean val/acc in percent. An untrained cell
stays white with no text, so a sampled study shows its gaps; the answer is boxed.
`probability_map_figure` is the map the summary draws: each cell coloured by its p pooled
over all its trials, its member count written in it.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from mlpsweep.summary.evidence import Probability  # noqa: E402
from mlpsweep.summary.fit_map import FitMap  # noqa: E402
from mlpsweep.summary.probability import Facet  # noqa: E402


def fit_rate_grid(fit_map: FitMap) -> np.ndarray:
    """(depths, widths) fit rates, NaN where untrained: exactly what the picture colours."""
    rates = np.full((len(fit_map.depths), len(fit_map.widths)), np.nan)
    for row, depth in enumerate(fit_map.depths):
        for col, width in enumerate(fit_map.widths):
            cell = fit_map.cell(width, depth)
            if cell is not None:
                rates[row, col] = cell.fit_rate
    return rates


def _accuracy_text(value: float) -> str:
    """A percentage without its sign (97, 100): one format for every cell, three characters
    at most, so it fits a narrow cell written horizontally."""
    return f"{100 * value:.0f}"


def fit_map_figure(
    fit_map: FitMap, title: str, answer: tuple[int, int] | None = None
) -> Figure:
    """The map; `answer` (hidden, layers) is drawn with a black box."""
    members = max((cell.members for cell in fit_map.cells.values()), default=1) or 1
    widths, depths = fit_map.widths, fit_map.depths
    figure = Figure(figsize=(map_width(len(widths)), 1.4 + 0.9 * len(depths)), dpi=100)
    axes = figure.add_subplot()
    colours = matplotlib.colormaps["RdYlGn"](np.linspace(0.05, 0.95, members + 1))
    cmap = ListedColormap(colours).with_extremes(bad="white")
    bounds = np.linspace(-0.5 / members, 1 + 0.5 / members, members + 2)
    image = axes.imshow(
        np.ma.masked_invalid(fit_rate_grid(fit_map)), cmap=cmap, norm=BoundaryNorm(bounds, cmap.N),
        aspect="auto", origin="lower", interpolation="nearest",
    )
    for row, depth in enumerate(depths):
        for col, width in enumerate(widths):
            cell = fit_map.cell(width, depth)
            if cell is not None:
                axes.text(col, row, _accuracy_text(cell.mean_val_acc), ha="center", va="center",
                          fontsize=cell_text_size(len(widths)))
    if answer is not None and answer[0] in widths and answer[1] in depths:
        col, row = widths.index(answer[0]), depths.index(answer[1])
        axes.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, linewidth=3.0))
    cell_grid(axes, widths, depths)
    axes.set_xlabel("hidden units per layer (model.hidden)")
    axes.set_ylabel("hidden layers (model.layers)")
    axes.set_title(title, fontsize=9)
    bar = figure.colorbar(image, ax=axes, ticks=np.arange(members + 1) / members, pad=0.01)
    bar.ax.set_yticklabels([f"{count}/{members}" for count in range(members + 1)])
    bar.set_label("members that fit")
    figure.tight_layout()
    return figure


def probability_grid(
    probability: Probability, widths: list[int], depths: list[int], facet: Facet = ()
) -> tuple[np.ndarray, np.ndarray]:
    """(depths, widths) pooled p and member counts; NaN / 0 where untrained."""
    p = np.full((len(depths), len(widths)), np.nan)
    members = np.zeros((len(depths), len(widths)), dtype=int)
    for row, depth in enumerate(depths):
        for col, width in enumerate(widths):
            cell = probability.cell(width, depth, facet)
            if cell is not None:
                p[row, col], members[row, col] = cell.p, cell.members
    return p, members


def cell_grid(axes: Any, widths: list[int], depths: list[int]) -> None:
    """Thin lines between cells, so a blank (untrained) cell reads as a cell, and width
    labels on the x axis: every one where the widths are not consecutive (a sampled study's
    trained widths, read one by one), else at most 16."""
    axes.set_xticks(np.arange(-0.5, len(widths)), minor=True)
    axes.set_yticks(np.arange(-0.5, len(depths)), minor=True)
    axes.grid(which="minor", color="lightgrey", linewidth=0.5)
    axes.tick_params(which="minor", length=0)
    consecutive = all(b - a == 1 for a, b in zip(widths, widths[1:], strict=False))
    step = max(1, len(widths) // 16) if consecutive else 1
    axes.set_xticks(range(0, len(widths), step), [str(width) for width in widths[::step]],
                    fontsize=8 if step == 1 and len(widths) > 24 else None)
    axes.set_yticks(range(len(depths)), [str(depth) for depth in depths])


def cell_text_size(columns: int) -> float:
    """Horizontal text that fits a cell of `map_width(columns)`: larger where there are few."""
    return 9 if columns <= 20 else 7 if columns <= 40 else 6


def map_width(columns: int) -> float:
    """Inches: cells at least 0.2 in wide (the full 64-column map), 0.4 in up to 20 columns,
    so a sparse map's few columns are read at a glance, not drawn as thin strips."""
    per_cell = 0.4 if columns <= 20 else 0.3 if columns <= 40 else 0.2
    return max(7.0, per_cell * columns + 2.4)


def probability_map_figure(
    probability: Probability, widths: list[int], depths: list[int], title: str
) -> Figure:
    """The map coloured by each cell's pooled p (members over all its trials), the cell's
    member count written in it; one panel per facet value, stacked."""
    facets = probability.facets or [()]
    panel_height = 1.0 + 0.55 * len(depths)
    figure = Figure(  # constrained: the two-line title, the colour bar and the labels all fit
        figsize=(map_width(len(widths)), 1.0 + panel_height * len(facets)),
        dpi=100,
        layout="constrained",
    )
    axes_list = figure.subplots(len(facets), 1, squeeze=False)[:, 0]
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="white")
    image = None
    for axes, facet in zip(axes_list, facets, strict=True):
        p, members = probability_grid(probability, widths, depths, facet)
        image = axes.imshow(np.ma.masked_invalid(p), cmap=cmap, vmin=0.0, vmax=1.0,
                            aspect="auto", origin="lower", interpolation="nearest")
        for row in range(len(depths)):
            for col in range(len(widths)):
                if members[row, col]:
                    axes.text(col, row, str(members[row, col]), ha="center", va="center",
                              fontsize=cell_text_size(len(widths)))
        cell_grid(axes, widths, depths)
        axes.set_ylabel("hidden layers")
        if facet:
            axes.set_title(", ".join(f"{key}={value}" for key, value in facet), fontsize=9)
    axes_list[-1].set_xlabel("hidden units per layer (model.hidden)")
    figure.suptitle(title, fontsize=9)
    if image is not None:
        bar = figure.colorbar(image, ax=list(axes_list), pad=0.01, fraction=0.04)
        bar.set_label("P(fit)")
    return figure
