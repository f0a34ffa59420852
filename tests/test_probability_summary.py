"""The probability answer as a study's summary shows it: summary.json's shape, the wording,
the map coloured by p and the curves, on synthetic studies whose members the test chose."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from conftest import assert_picture_has_content
from test_fit_map import (
    fitting,
    grid_space,
    parameter_count,
    summarised,
    synthetic_study,
    write_trial_folder,
)


def test_summary_json_has_the_issue_shape_and_pools_members(tmp_path: Path) -> None:
    cells = {(width, 1): fitting(0 if width < 3 else 4) for width in range(1, 7)}
    cells |= {(width, 2): fitting(0) for width in range(1, 7)}
    synthetic_study(tmp_path / "shape", cells, grid_space(6, 2))
    summary, text = summarised(tmp_path / "shape")
    data = json.loads((tmp_path / "shape" / "summary.json").read_text())
    assert set(data) == {"coverage", "capacity_floor", "answers"}
    assert data["coverage"] == {"trained": 12, "total": 12}
    assert data["capacity_floor"] == {"units": 6, "label_changes": 6}
    one, two = data["answers"]
    assert set(one) == {"layers", "facet", "first_fit_width", "typical_width", "typical_ci",
                        "reliable_width", "reliable_ci", "cells"}
    assert (one["layers"], one["facet"], one["first_fit_width"], one["typical_width"]) == \
        (1, {}, 3, 3)
    assert one["cells"][2] == {"hidden": 3, "members": 4, "fits": 4, "p": 1.0,
                               "ci": [one["cells"][2]["ci"][0], 1.0]}
    assert 0.5 < one["cells"][2]["ci"][0] < 0.52  # Wilson, 4 of 4
    # nothing fits at 2 layers: null widths, and the text says where it looked
    assert two["first_fit_width"] is None and two["typical_width"] is None
    assert two["reliable_width"] is None and two["reliable_ci"] == [None, None]
    assert "| 2 | 6 of 6 | 24 | none within hidden <= 6 | not reached within hidden <= 6" in text
    assert "half is not reached within hidden <= 6" in text
    assert "Every architecture of the space trained: 12 architectures, 12 trials, 48 members" \
        in text
    assert "- evidence: 48 members (initialisations) in 12 trials over 12 architectures" in text


def test_a_sampled_study_says_among_those_tried_and_shows_p_for_its_cells(
    tmp_path: Path,
) -> None:
    cells = {(2, 1): fitting(1), (5, 1): fitting(4), (3, 2): fitting(2)}
    synthetic_study(tmp_path / "tpe", cells, grid_space(8, 2))
    _, text = summarised(tmp_path / "tpe")
    assert "Among those tried (3 architectures, 3 trials, 12 members" in text
    assert "p = 1/4 = 0.25 (95% 0.05..0.70)" in text


def test_the_map_and_the_curves_are_drawn_with_content(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cells = {(width, depth): fitting(min(4, width // 2)) for width in range(1, 9)
             for depth in (1, 2)}
    synthetic_study(tmp_path / "pics", cells, grid_space(8, 2))
    _, text = summarised(tmp_path / "pics")
    plots = tmp_path / "pics" / "plots"
    for name in ("map", "curves"):
        assert_picture_has_content(plots / f"{name}.png", name)
    assert "![Fit-probability curves, one per depth](plots/curves.png)" in text
    events = EventAccumulator(str(tmp_path / "pics" / "summary"), size_guidance={"images": 0})
    assert {"study/map", "study/curves"} <= set(events.Reload().Tags()["images"])


def test_a_study_with_rounds_weighs_its_members_against_a_uniform_map(tmp_path: Path) -> None:
    space = grid_space(2, 1)
    study = synthetic_study(tmp_path / "rounds", {(1, 1): fitting(2), (2, 1): fitting(4)}, space)
    # a round of 4 new initialisations for the undecided cell 1 x 1 (trial 2)
    write_trial_folder(tmp_path / "rounds" / "trials" / "2", 1, 1, fitting(1))
    study.add_trial(optuna.create_trial(
        params={"model.hidden": 1, "model.layers": 1}, distributions=space, values=[1.0],
        user_attrs={"parameter_count": parameter_count(1, 1), "epochs": 1000, "round": 1,
                    "seed": 1},
    ))
    summary, text = summarised(tmp_path / "rounds")
    assert summary.probability.uniform_members() == (8, 16)
    assert ("- evidence: 12 members (initialisations) in 3 trials over 2 architectures, 1 round "
            "of new initialisations after the first: 75% of the 16 members that 8 for every "
            "cell (the most any cell holds) would take") in text
