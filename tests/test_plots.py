"""A run's two pictures say what they show: every drawn element is in the legend, the title
names the quantity, and the pictures have content (issue 19, item 18)."""

from __future__ import annotations

import numpy as np

from conftest import assert_picture_has_content
from mlpsweep.plots import fit_figure, loss_figure, save_png


def legend_texts(figure) -> list[str]:
    return [text.get_text() for text in figure.axes[0].get_legend().get_texts()]


def test_the_loss_picture_names_its_band_and_its_curves(tmp_path):
    rng = np.random.default_rng(0)
    losses = np.exp(-np.linspace(0, 3, 300))[:, None] * (1 + 0.3 * rng.random((300, 4)))
    figure = loss_figure(losses, [100, 200, 300], [0.5, 0.3, 0.2])
    assert legend_texts(figure) == [
        "train loss, mean of 4 members", "members' range (min to max)", "validation loss"
    ]
    assert figure.axes[0].get_title() != "loss" and "BCE" in figure.axes[0].get_title()
    save_png(figure, tmp_path / "loss.png")
    assert_picture_has_content(tmp_path / "loss.png")
    single = loss_figure(losses[:, :1], [], [])
    assert legend_texts(single) == ["train loss"], "one member: no band, no mean"


def test_the_fit_picture_names_the_faint_member_curves(tmp_path):
    grid = np.linspace(-50, 50, 201)
    probs = np.stack([1 / (1 + np.exp(-(20 - abs(grid)) / (3 + i))) for i in range(3)])
    positions = np.arange(-50, 50)
    labels = ((positions > -20) & (positions < 20)).astype(float)
    figure = fit_figure(positions, labels, grid, probs, "1 x 20 sigmoid, K=3")
    assert legend_texts(figure) == [
        "training points, y = 1", "training points, y = 0", "each member", "mean of 3 members"
    ]
    save_png(figure, tmp_path / "fit.png")
    assert_picture_has_content(tmp_path / "fit.png")
