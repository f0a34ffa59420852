"""What a run's pictures, TensorBoard and the terminal show agrees with the data.

The fit picture's legend names both classes; TensorBoard's HParams tab shows the searched
architecture among its default columns, booleans as true/false; a log file (stderr not a
terminal) is not flooded with progress-bar redraws and the closing line appears once.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_hex

from mlpsweep.plots import fit_figure


def test_the_fit_pictures_legend_names_both_classes_in_their_own_colours() -> None:
    positions = np.array([-2.0, -1.0, 1.0, 2.0])
    labels = np.array([0.0, 1.0, 1.0, 0.0])
    grid = np.linspace(-3, 3, 7)
    figure = fit_figure(positions, labels, grid, np.full((2, 7), 0.5), "title")
    legend = figure.axes[0].get_legend()
    entries = {
        text.get_text(): to_hex(handle.get_facecolor()[0])
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)
        if text.get_text().startswith("training points")
    }
    assert set(entries) == {"training points, y = 1", "training points, y = 0"}
    assert len(set(entries.values())) == 2, "each class in its own colour"
    points = [collection for collection in figure.axes[0].collections if collection.get_label()]
    for collection in points:
        ys = collection.get_offsets()[:, 1]
        assert set(ys) == {1.0 if collection.get_label().endswith("1") else 0.0}
