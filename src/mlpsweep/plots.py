"""Pictures of a run: the tutorial's fit plot and the loss curve.

Figures are built with `matplotlib.figure.Figure` and the Agg canvas directly: no pyplot
state, no global figure registry, and the same figure can go to a PNG file and to
TensorBoard as an RGB array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

CURVE_POINTS = 501
# Fixed margins instead of tight_layout, which measured every tick label on each draw and
# was most of a picture's cost (about 0.12 s of a trial's 0.75 s of pictures, here).
FIT_MARGINS = {"left": 0.08, "right": 0.74, "bottom": 0.13, "top": 0.9}
LOSS_MARGINS = {"left": 0.13, "right": 0.97, "bottom": 0.13, "top": 0.9}
LOSS_CURVE_POINTS = 1000
POINT_COLOURS = {1.0: "tab:red", 0.0: "tab:blue"}  # y = 1 and y = 0, named in the legend


def curve_x(low: float = -50.0, high: float = 50.0) -> torch.Tensor:
    """Dense x over the tutorial's plotting range, shaped (N, 1)."""
    return torch.linspace(low, high, CURVE_POINTS).unsqueeze(1)


def fit_figure(
    positions: np.ndarray, labels: np.ndarray, grid: np.ndarray, member_probs: np.ndarray,
    title: str,
) -> Figure:
    """Data points coloured by label (each colour in the legend), each member's curve
    faintly, their mean boldly."""
    figure = Figure(figsize=(7, 3.6), dpi=100)
    axes = figure.add_subplot()
    for value, colour in POINT_COLOURS.items():
        chosen = labels == value
        axes.scatter(
            positions[chosen], labels[chosen], color=colour, s=14, zorder=3,
            label=f"training points, y = {value:g}",
        )
    if member_probs.shape[0] > 1:
        for index, probs in enumerate(member_probs):
            axes.plot(grid, probs, color="tab:green", alpha=0.25, linewidth=0.8,
                      label="each member" if index == 0 else None)
    label = "network" if member_probs.shape[0] == 1 else f"mean of {member_probs.shape[0]} members"
    axes.plot(grid, member_probs.mean(axis=0), color="tab:green", linewidth=2, label=label)
    axes.axhline(0.5, color="grey", linewidth=0.6, linestyle=":")
    axes.set(xlabel="x", ylabel="P(y = 1)", ylim=(-0.05, 1.05), title=title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    figure.subplots_adjust(**FIT_MARGINS)
    return figure


def loss_figure(epoch_losses: np.ndarray, val_epochs: list[int], val_losses: list[float]) -> Figure:
    """Per-epoch training loss (members' mean, their range shaded) and validation loss."""
    figure = Figure(figsize=(7, 3.6), dpi=100)
    axes = figure.add_subplot()
    # a 700-pixel plot needs no more points than LOSS_CURVE_POINTS
    stride = max(1, -(-epoch_losses.shape[0] // LOSS_CURVE_POINTS))
    epochs = np.arange(1, epoch_losses.shape[0] + 1)[::stride]
    losses = epoch_losses[::stride]
    members = losses.shape[1]
    axes.plot(epochs, losses.mean(axis=1),
              label="train loss" if members == 1 else f"train loss, mean of {members} members")
    if members > 1:
        axes.fill_between(epochs, losses.min(axis=1), losses.max(axis=1), alpha=0.25,
                          label="members' range (min to max)")
    if val_epochs:
        axes.plot(val_epochs, val_losses, "o-", markersize=3, label="validation loss")
    axes.set(xlabel="epoch", ylabel="BCE loss", yscale="log",
             title="BCE loss per epoch (training) and at each validation")
    # Plain-text tick labels: the default ones are mathtext ($10^{-1}$), whose parsing was
    # most of this figure's 0.29 s, paid by every trial of a map.
    axes.yaxis.set_major_formatter(LogFormatter())
    axes.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    axes.legend(fontsize=8)
    figure.subplots_adjust(**LOSS_MARGINS)
    return figure


def to_rgb_array(figure: Figure) -> np.ndarray:
    """Render to an (H, W, 3) uint8 array, the form TensorBoard's add_image takes."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(figure: Figure, path: Path) -> None:
    """Write the figure as a PNG, reusing its last rendering when it is current.

    The final fit picture is rendered once for TensorBoard; drawing it again for fit.png
    doubled the cost of a trial's pictures, which a 256-trial map pays 256 times. Current
    means drawn and unchanged since (`figure.stale` is False): a canvas can hold a renderer
    that never drew (`tight_layout` makes one to measure text), and its buffer is blank.
    """
    canvas = figure.canvas
    if (
        isinstance(canvas, FigureCanvasAgg)
        and getattr(canvas, "renderer", None) is not None
        and not figure.stale
    ):
        from PIL import Image

        Image.fromarray(np.asarray(canvas.buffer_rgba())).save(path, format="png")
        return
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png")
