"""Pictures of a whole study, as PNGs under `<study>/plots/` and images in TensorBoard.

Optuna's matplotlib visualisations draw what Optuna knows (history, importances, Pareto
front); the fit map, the architecture map and the size-vs-accuracy plot need the ensemble
members' values from the trial folders, so they are drawn here. Optuna's functions use pyplot, so
the Agg backend is selected first (no display needed) and each figure is closed after use.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mlpsweep.plots import save_png  # noqa: E402
from mlpsweep.summary.answer import ANSWER_METRIC, fitting_candidates  # noqa: E402
from mlpsweep.summary.curve_figure import curves_figure  # noqa: E402
from mlpsweep.summary.map_figure import fit_map_figure, probability_map_figure  # noqa: E402
from mlpsweep.summary.study_stats import (  # noqa: E402
    importance_evaluator,
    importance_target,
    primary_target,
)
from mlpsweep.summary.study_summary import StudySummary  # noqa: E402
from mlpsweep.summary.trial_rows import TrialRow  # noqa: E402

FIGSIZE = (8.0, 5.0)
DPI = 100
PICTURES = {
    "map": "The fit map: P(fit) per hidden units x layers, pooled over every trial",
    "curves": "Fit-probability curves, one per depth",
    "best_fit": "The best trial's fit (the tutorial's picture)",
    "architecture": "Validation accuracy over hidden units x layers",
    "size_vs_accuracy": "Members' validation accuracy against network size",
    "history": "Optimisation history",
    "importances": "Parameter importances",
    "pareto": "Pareto front",
}


def draw_all(
    summary: StudySummary, study: optuna.Study, plots_dir: Path
) -> tuple[dict[str, Path], dict[str, str]]:
    """Every picture that applies; returns {title: path} drawn and {title: reason} skipped.

    A picture that no longer applies is removed, so the folder never shows a stale one.
    """
    plots_dir.mkdir(parents=True, exist_ok=True)
    drawers: dict[str, Callable[[], Figure | Path | str]] = {
        "map": lambda: map_figure(summary),
        "curves": lambda: probability_curves(summary),
        "best_fit": lambda: best_fit(summary, plots_dir / "best_fit.png"),
        "architecture": lambda: architecture_figure(summary),
        "size_vs_accuracy": lambda: size_figure(summary),
        "history": lambda: history_figure(summary, study),
        "importances": lambda: importances_figure(summary, study),
        "pareto": lambda: pareto_figure(summary, study),
    }
    drawn: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for name, draw in drawers.items():
        path = plots_dir / f"{name}.png"
        with warnings.catch_warnings(), matplotlib.rc_context():
            warnings.simplefilter("ignore")
            outcome = draw()
        if isinstance(outcome, str):
            path.unlink(missing_ok=True)
            if outcome:
                skipped[PICTURES[name]] = outcome
            continue
        if isinstance(outcome, Figure):
            save_png(outcome, path)
            plt.close(outcome)
        drawn[PICTURES[name]] = path
    return drawn, skipped


def _axes_of(summary: StudySummary) -> tuple[list[int], list[int]]:
    widths = sorted(int(value) for value in summary.space.values("model.hidden"))
    depths = sorted(int(value) for value in summary.space.values("model.layers"))
    return widths, depths


def map_figure(summary: StudySummary) -> Figure | str:
    """The map coloured by each cell's pooled p, its member count in it (one panel per
    facet value); without per-member values, the older map of one trial per cell."""
    probability = summary.probability
    coverage = summary.coverage
    trained = (
        f"{coverage.trained} of {coverage.total if coverage.total is not None else '?'} "
        f"{summary.space.noun} trained (blank: not trained)"
    )
    if probability.cells:
        widths, depths = _axes_of(summary)
        sampled = coverage.total is not None and coverage.trained < coverage.total
        if sampled:  # a sampled study: its trained widths only, wide enough to read
            trained_widths = {hidden for _, _, hidden in probability.cells}
            widths = [width for width in widths if width in trained_widths]
            trained += "; only the trained widths are drawn"
        title = (
            f"Colour: P(fit) = members that fit / members, pooled over every trial of the cell\n"
            f"(train/acc = 1, {ANSWER_METRIC} >= {summary.answer.threshold:g}); text: members\n"
            f"{trained}"
        )
        return probability_map_figure(probability, widths, depths, title)
    fit_map = summary.fit_map
    if not fit_map.drawable:
        return fit_map.reason
    winner = summary.answer.winner
    params = winner.row.params if winner else {}
    answer = (params["model.hidden"], params["model.layers"]) if params else None
    title = (
        f"Colour: members that fit (train/acc = 1, {ANSWER_METRIC} >= "
        f"{summary.answer.threshold:g}); text: their mean {ANSWER_METRIC} in %\n"
        f"box: the smallest that fits; {trained}"
    )
    return fit_map_figure(fit_map, title, answer)


def probability_curves(summary: StudySummary) -> Figure | str:
    """P(fit | width) per depth (`curve_figure`); a reason when there is no curve."""
    probability = summary.probability
    if not probability.answers:
        return probability.reason
    widths, _ = _axes_of(summary)
    return curves_figure(probability, max(widths, default=1))


def best_fit(summary: StudySummary, target: Path) -> Path | str:
    """The best trial's own fit.png: the data points and every member's curve."""
    best = summary.best
    if best is None:
        return "no trial has completed yet"
    source = best.folder / "fit.png" if best.folder else None
    if source is None or not source.is_file():
        return f"trial {best.number}'s fit.png is not on this machine (or logger.pictures=false)"
    shutil.copyfile(source, target)
    return target


def _figure() -> tuple[Figure, plt.Axes]:
    figure = plt.figure(figsize=FIGSIZE, dpi=DPI)
    return figure, figure.add_subplot()


def architecture_figure(summary: StudySummary) -> Figure | str:
    """Hidden units (log axis) x layers, coloured by the members' mean val/acc.

    Complete trials are filled circles (a thick black ring: every member reached the
    threshold); pruned trials are hollow squares at the accuracy they had when stopped.
    One point and one label per architecture: a repeat (the same result again) is left out,
    and of several trials of one architecture the best is shown.
    """
    rows = _one_per_architecture([
        row for row in summary.rows
        if row.state in ("complete", "pruned") and row.duplicate_of is None
        and "model.hidden" in row.params and "model.layers" in row.params
        and row.metric(ANSWER_METRIC) is not None
    ])
    if not rows:
        return "needs trials with model.hidden and model.layers searched and a val/acc"
    values = [row.metric(ANSWER_METRIC) or 0.0 for row in rows]
    norm = matplotlib.colors.Normalize(vmin=min(values), vmax=max(max(values), min(values) + 1e-6))
    cmap = matplotlib.colormaps["viridis"]
    threshold = summary.answer.threshold
    fits = {candidate.row.number for candidate in fitting_candidates(summary.rows, threshold)}
    figure, axes = _figure()
    order = sorted(
        range(len(rows)),
        key=lambda index: (rows[index].params["model.layers"], rows[index].params["model.hidden"]),
    )
    above = {index: rank % 2 == 0 for rank, index in enumerate(order)}  # labels alternate
    for index, (row, value) in enumerate(zip(rows, values, strict=True)):
        hidden, layers = row.params["model.hidden"], row.params["model.layers"]
        colour = cmap(norm(value))
        if row.state == "complete":
            ring = 2.5 if row.number in fits else 0.6
            axes.scatter(
                hidden, layers, s=260, color=colour, edgecolors="black", linewidths=ring, zorder=3
            )
        else:
            axes.scatter(
                hidden, layers, s=200, marker="s", facecolors="none", edgecolors=colour,
                linewidths=2, zorder=2,
            )
        offset, align = ((0, 11), "bottom") if above[index] else ((0, -11), "top")
        axes.annotate(
            f"{value:.3f}", (hidden, layers), textcoords="offset points", xytext=offset,
            ha="center", va=align, fontsize=7,
        )
    figure.colorbar(
        matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes,
        label=f"{ANSWER_METRIC} (members' mean)",
    )
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda tick, _: f"{tick:g}"))
    layer_counts = sorted({row.params["model.layers"] for row in rows})
    axes.set_yticks(layer_counts)
    axes.set_ylim(min(layer_counts) - 0.6, max(layer_counts) + 0.6)
    axes.set(
        xlabel="hidden units per layer (model.hidden, log scale)",
        ylabel="hidden layers (model.layers)",
        title=f"{ANSWER_METRIC} by architecture: circles complete (thick ring: all members >= "
        f"{threshold:g}), squares pruned",
    )
    axes.title.set_fontsize(9)
    figure.tight_layout()
    return figure


def _one_per_architecture(rows: list[TrialRow]) -> list[TrialRow]:
    """The best row of each (hidden, layers): complete before pruned, then higher val/acc."""
    best: dict[tuple[Any, Any], TrialRow] = {}
    for row in rows:
        cell = (row.params["model.hidden"], row.params["model.layers"])
        rank = (row.state == "complete", row.metric(ANSWER_METRIC) or 0.0)
        current = best.get(cell)
        if current is None or rank > (
            current.state == "complete", current.metric(ANSWER_METRIC) or 0.0
        ):
            best[cell] = row
    return list(best.values())


def size_figure(summary: StudySummary) -> Figure | str:
    """Each complete trial's members' val/acc against its parameter count, with the threshold.

    This is the answer's evidence: the leftmost column whose dots all clear the line.
    """
    rows = [
        row for row in summary.rows
        if row.state == "complete" and row.members.get(ANSWER_METRIC) and row.parameter_count
    ]
    if not rows:
        return "needs complete trials with their folders' metrics.json (per-member values)"
    figure, axes = _figure()
    for row in rows:
        members = np.asarray(row.members[ANSWER_METRIC])
        size = np.full(members.shape, row.parameter_count)
        axes.scatter(size, members, s=12, color="tab:blue", alpha=0.5, zorder=2)
        axes.scatter(
            [row.parameter_count], [members.mean()], s=50, marker="_", color="black", zorder=3
        )
    threshold = summary.answer.threshold
    axes.axhline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}")
    winner = summary.answer.winner
    if winner is not None:
        axes.axvline(
            winner.size, color="tab:green", linestyle=":",
            label=f"smallest that fits: {winner.size} params",
        )
    axes.set_xscale("log")
    axes.set(
        xlabel="parameters per member (log scale)", ylabel=f"{ANSWER_METRIC} per member",
        title="each dot one ensemble member, bar their mean (complete trials)",
    )
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def _optuna_figure(axes: plt.Axes) -> Figure:
    figure = axes.figure
    figure.set_size_inches(*FIGSIZE)
    figure.set_dpi(DPI)
    figure.tight_layout()
    return figure


def history_figure(summary: StudySummary, study: optuna.Study) -> Figure | str:
    """Optuna's optimisation history of the first objective."""
    if not summary.counts["complete"]:
        return "no trial has completed yet"
    axes = optuna.visualization.matplotlib.plot_optimization_history(
        study, target=primary_target(study), target_name=summary.objectives[0].metric
    )
    return _optuna_figure(axes)


def importances_figure(summary: StudySummary, study: optuna.Study) -> Figure | str:
    """Optuna's importance bars, with the same seeded evaluator as the summary's table."""
    if summary.importances.values is None:
        return summary.importances.reason
    axes = optuna.visualization.matplotlib.plot_param_importances(
        study, evaluator=importance_evaluator(), target=importance_target(study),
        target_name=summary.importances.target_name,
    )
    return _optuna_figure(axes)


def pareto_figure(summary: StudySummary, study: optuna.Study) -> Figure | str:
    """Optuna's Pareto-front plot, for a multi-objective study only ('' = not applicable)."""
    if not summary.multi_objective:
        return ""
    if not summary.counts["complete"]:
        return "no trial has completed yet"
    axes = optuna.visualization.matplotlib.plot_pareto_front(
        study, target_names=[objective.metric for objective in summary.objectives]
    )
    return _optuna_figure(axes)


def png_to_rgb(path: Path) -> np.ndarray:
    """A PNG as an (H, W, 3) uint8 array, the form TensorBoard's add_image takes."""
    image = matplotlib.image.imread(path)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    return image[..., :3] if image.ndim == 3 else np.stack([image] * 3, axis=-1)


def log_to_tensorboard(summary: StudySummary, summary_text: str, logdir: Path) -> None:
    """The summary (markdown) and every picture, in the study's TensorBoard logdir.

    Earlier summaries' event files are replaced, so TensorBoard shows the latest one,
    stepped by the number of finished trials it was built from.
    """
    from torch.utils.tensorboard import SummaryWriter

    logdir.mkdir(parents=True, exist_ok=True)
    for old in logdir.glob("events.out.tfevents.*"):
        old.unlink()
    counts = summary.counts
    step = counts["complete"] + counts["pruned"] + counts["failed"]
    writer = SummaryWriter(log_dir=str(logdir))
    try:
        writer.add_text("study/summary", summary_text, global_step=step)
        for path in summary.pictures.values():
            writer.add_image(
                f"study/{path.stem}", png_to_rgb(path), global_step=step, dataformats="HWC"
            )
        if summary.best is not None and summary.best.values:
            writer.add_scalar(
                f"study/best_{summary.objectives[0].metric}", summary.best.values[0],
                global_step=step,
            )
    finally:
        writer.close()
