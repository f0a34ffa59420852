"""What "fits" means (`mlpsweep.fit_rule`) and the summary's map of which architectures fit.

The map, the per-depth table, coverage and repeats are checked on synthetic studies: trials
added with Optuna's API and trial folders whose metrics.json the test writes, so every
member's train/acc and val/acc is chosen by the test and the expected answer is known.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.distributions import FloatDistribution, IntDistribution

from mlpsweep.fit_rule import FIT_VAL_ACC, fitting_members, member_fits
from mlpsweep.model import MLP, parameter_count
from mlpsweep.summary import StudySummary, summarize_study
from mlpsweep.summary.map_figure import fit_map_figure, fit_rate_grid

# ---- the definition ------------------------------------------------------------------


def test_a_member_with_perfect_val_acc_but_one_training_point_wrong_does_not_fit() -> None:
    assert not member_fits(0.99, 1.0)
    assert member_fits(1.0, 0.99) and not member_fits(1.0, 0.9899)
    assert fitting_members([1.0, 0.99, 1.0, 1.0], [1.0, 1.0, 0.98, 0.995]) == 2
    assert FIT_VAL_ACC == 0.99


def test_the_model_logs_the_same_rule_as_a_fit_rate_over_members() -> None:
    per_member = {
        "train/acc": torch.tensor([1.0, 0.99, 1.0, 1.0]),
        "val/acc": torch.tensor([1.0, 1.0, 0.98, 0.995]),
    }
    assert MLP.fit_rate(per_member, 0.99).item() == 0.5
    assert MLP.fit_rate(per_member, 0.97).item() == 0.75


# ---- synthetic studies ---------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One trained architecture: its members' val/acc and train/acc, and epochs trained."""

    val: tuple[float, ...]
    train: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    epochs: int = 1000


def fitting(count: int, epochs: int = 1000) -> Cell:
    """`count` of 4 members fit; the others miss one training point (val/acc still 1.0)."""
    return Cell((1.0,) * 4, (1.0,) * count + (0.99,) * (4 - count), epochs)


def grid_space(widths: int, depths: int) -> dict[str, IntDistribution]:
    return {"model.hidden": IntDistribution(1, widths), "model.layers": IntDistribution(1, depths)}


def member_summary(values: tuple[float, ...]) -> dict[str, Any]:
    mean = sum(values) / len(values)
    return {"mean": mean, "min": min(values), "max": max(values), "std": 0.0,
            "members": list(values)}


def write_trial_folder(folder: Path, hidden: int, layers: int, cell: Cell) -> None:
    """A trial folder as a finished run leaves it: metrics.json with every member's values."""
    folder.mkdir(parents=True)
    metrics = {"val/acc": member_summary(cell.val), "train/acc": member_summary(cell.train)}
    run = {"status": "completed", "epochs": cell.epochs, "duration_s": 1.0,
           "parameter_count": parameter_count(hidden, layers), "metrics": metrics}
    (folder / "metrics.json").write_text(json.dumps(run))


def synthetic_study(
    folder: Path,
    cells: dict[tuple[int, int], Cell],
    space: dict[str, IntDistribution],
    repeats: dict[int, int] | None = None,
    pareto: bool = False,
) -> optuna.Study:
    """A study with one complete trial per cell (in the given order), then a repeat trial per
    `repeats` entry {repeat: twin}, which reuses its twin's folder as the sweep does."""
    folder.mkdir(parents=True)
    directions = ["maximize", "minimize"] if pareto else ["maximize"]
    study = optuna.create_study(study_name=folder.name, directions=directions,
                                storage=f"sqlite:///{folder / 'study.db'}")
    trials = list(cells.items())
    for number, ((hidden, layers), cell) in enumerate(trials):
        write_trial_folder(folder / "trials" / str(number), hidden, layers, cell)
    for twin in (repeats or {}).values():
        trials.append(trials[twin])
    twins = {index: twin for index, twin in (repeats or {}).items()}
    for number, ((hidden, layers), cell) in enumerate(trials):
        size = parameter_count(hidden, layers)
        attrs: dict[str, Any] = {"parameter_count": size, "epochs": cell.epochs}
        if number in twins:
            attrs |= {"duplicate_of": twins[number],
                      "run_dir": str(folder / "trials" / str(twins[number]))}
        mean = sum(cell.val) / len(cell.val)
        study.add_trial(optuna.create_trial(
            params={"model.hidden": hidden, "model.layers": layers}, distributions=space,
            values=[mean, size] if pareto else [mean], user_attrs=attrs,
        ))
    return study


def summarised(folder: Path) -> tuple[StudySummary, str]:
    return summarize_study(str(folder))


# ---- the answer judges members by the rule -------------------------------------------


def test_a_member_with_perfect_val_acc_but_one_wrong_training_point_spoils_the_answer(
    tmp_path: Path,
) -> None:
    cells = {(1, 1): fitting(3), (2, 1): fitting(4)}
    synthetic_study(tmp_path / "rule", cells, grid_space(2, 1))
    summary, text = summarised(tmp_path / "rule")
    assert summary.answer.winner is not None
    assert summary.answer.winner.row.params == {"model.hidden": 2, "model.layers": 1}
    assert [candidate.reached for candidate in summary.answer.partial] == [3]
    assert "train/acc 1, 1, 1, 0.99" in text


# ---- per depth, the answer's neighbourhood and how sure ------------------------------

TWO_DEPTHS = {
    (1, 1): fitting(0), (2, 1): fitting(1), (3, 1): fitting(4, 900), (4, 1): fitting(3),
    (5, 1): fitting(4, 600), (6, 1): fitting(4, 300),
    (2, 2): fitting(2), (4, 2): fitting(4, 500), (6, 2): fitting(4, 700),
}


def test_per_depth_table_names_where_fitting_starts_and_whether_it_holds(tmp_path: Path) -> None:
    synthetic_study(tmp_path / "depths", TWO_DEPTHS, grid_space(6, 2))
    summary, text = summarised(tmp_path / "depths")
    one, two = summary.fit_map.per_depth
    assert (one.layers, one.trained, one.widths) == (1, 6, 6)
    assert (one.smallest_reliable.hidden, one.smallest_any.hidden) == (3, 2)
    assert one.sharp is False and one.not_reliable_above == (4,)
    assert one.epochs_range() == (300, 600, 900)
    assert (two.smallest_reliable.hidden, two.smallest_any.hidden, two.sharp) == (4, 2, True)
    assert two.untried_below == (1, 3) and two.epochs_range() == (500, 600, 700)
    assert "| 1 | 6 of 6 | 3 (10 parameters, trial 2): 4/4 | 2 (7 parameters, trial 1): 1/4 | " \
        "no: 4 do not | 300 / 600 / 900 (3 architectures) |" in text
    assert "| 2 | 3 of 6 | 4 (33 parameters, trial 7): 4/4; not tried below: 1, 3 |" in text


def test_the_answer_shows_its_neighbours_and_how_sure_it_is(tmp_path: Path) -> None:
    synthetic_study(tmp_path / "depths", TWO_DEPTHS, grid_space(6, 2))
    summary, text = summarised(tmp_path / "depths")
    assert summary.answer.winner.row.params == {"model.hidden": 3, "model.layers": 1}
    assert "| layers \\ hidden | 1 | 2 | **3** | 4 | 5 |" in text
    assert "| 2 | not trained | 2/4 | not trained | 4/4 | not trained |" in text
    assert "| **1** | 0/4 | 1/4 | **4/4** | 3/4 | 4/4 |" in text
    assert "widths just above it at 1 layer (4: 3/4, 5: 4/4): not all fit with all" in text
    # one "how sure" statement per facet, built from the intervals, not two paragraphs
    assert text.count("How sure") == 1 and "*How sure.* At 1 layer, half fit from 3 units " \
        "(95% interval " in text
    assert "its cell over all its members: p = 4/4 = 1.00 (95% 0.51..1.00)" in text


# ---- the map -------------------------------------------------------------------------


def pixel_at(figure: Figure, col: float, row: float) -> np.ndarray:
    """The rendered RGB colour at data point (col, row) of the map's axes."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())
    x, y = figure.axes[0].transData.transform((col, row))
    return pixels[int(round(pixels.shape[0] - y)), int(round(x)), :3].astype(int)


def test_the_map_of_a_two_by_two_grid_colours_each_cell_by_its_fit_rate(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cells = {(1, 1): fitting(0), (2, 1): fitting(2), (2, 2): fitting(4)}  # (1, 2) not trained
    synthetic_study(tmp_path / "grid", cells, grid_space(2, 2))
    summary, text = summarised(tmp_path / "grid")
    assert (tmp_path / "grid" / "plots" / "map.png").is_file()
    assert "![The fit map: P(fit)" in text and "- coverage: 3 of 4 architectures" in text
    events = EventAccumulator(str(tmp_path / "grid" / "summary"), size_guidance={"images": 0})
    assert "study/map" in events.Reload().Tags()["images"]

    rates = fit_rate_grid(summary.fit_map)  # rows: layers 1, 2; columns: hidden 1, 2
    assert rates[0].tolist() == [0.0, 0.5] and np.isnan(rates[1, 0]) and rates[1, 1] == 1.0
    figure = fit_map_figure(summary.fit_map, "2 x 2")
    image = figure.axes[0].images[0]
    for (hidden, layers), rate in {(1, 1): 0.0, (2, 1): 0.5, (2, 2): 1.0}.items():
        expected = np.round(np.asarray(image.cmap(image.norm(rate))[:3]) * 255)
        # off the cell's centre, where its text is written
        seen = pixel_at(figure, hidden - 1 - 0.3, layers - 1 - 0.3)
        assert np.abs(seen - expected).max() <= 2, (hidden, layers, seen, expected)
    assert pixel_at(figure, -0.3, 0.7).tolist() == [255, 255, 255]  # untrained: blank
    red, green = pixel_at(figure, -0.3, -0.3), pixel_at(figure, 0.7, 0.7)
    assert red[0] > red[1] and green[1] > green[0], "none fit: red; all fit: green"


def test_no_map_when_the_space_is_not_hidden_by_layers(tmp_path: Path) -> None:
    space = {**grid_space(2, 1), "model.lr": FloatDistribution(0.001, 0.1, log=True)}
    folder = tmp_path / "lr"
    folder.mkdir()
    study = optuna.create_study(study_name="lr", storage=f"sqlite:///{folder / 'study.db'}",
                                direction="maximize")
    write_trial_folder(folder / "trials" / "0", 2, 1, fitting(4))
    study.add_trial(optuna.create_trial(
        params={"model.hidden": 2, "model.layers": 1, "model.lr": 0.01}, distributions=space,
        value=1.0, user_attrs={"parameter_count": parameter_count(2, 1)},
    ))
    summary, text = summarised(folder)
    assert not (folder / "plots" / "map.png").exists()
    assert "not drawn (the map needs a space of exactly model.hidden x model.layers" in text
    assert "1 distinct configurations trained; the space has no finite size (model.lr: a " \
        "float without step is continuous)" in text
    assert summary.answer.winner is not None  # the answer stands without a map


# ---- coverage and repeats ------------------------------------------------------------


def test_a_sampled_study_answers_among_those_tried_and_names_untried_smaller_widths(
    tmp_path: Path,
) -> None:
    cells = {(2, 1): fitting(1), (6, 1): fitting(4), (8, 2): fitting(4)}
    synthetic_study(tmp_path / "tpe", cells, grid_space(8, 2))
    summary, text = summarised(tmp_path / "tpe")
    assert (summary.coverage.trained, summary.coverage.total) == (3, 16)
    assert not summary.coverage.complete
    assert "- coverage: 3 of 16 architectures of the search space trained" in text
    assert "Among the 3 architectures tried (of 16), the smallest that fits: " \
        "**model.hidden=6, model.layers=1" in text
    assert "**Not tried**: widths 1, 3..5 at 1 layer, smaller than the answer" in text


def test_a_sampled_study_maps_only_its_trained_widths_each_labelled(tmp_path: Path) -> None:
    from mlpsweep.summary.plots import map_figure

    cells = {(2, 1): fitting(1), (6, 1): fitting(4), (8, 2): fitting(4)}
    synthetic_study(tmp_path / "tpe", cells, grid_space(8, 2))
    summary, _ = summarised(tmp_path / "tpe")
    figure = map_figure(summary)
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["2", "6", "8"]
    assert axes.images[0].get_array().shape == (2, 3), "3 columns, not the space's 8"
    assert all(text.get_rotation() == 0 for text in axes.texts), "horizontal cell text"
    assert {text.get_text() for text in axes.texts} == {"4"}, "each cell's member count"


def test_a_full_grid_gives_the_definitive_answer(tmp_path: Path) -> None:
    cells = {(1, 1): fitting(0), (2, 1): fitting(4), (1, 2): fitting(3), (2, 2): fitting(4)}
    synthetic_study(tmp_path / "grid", cells, grid_space(2, 2))
    summary, text = summarised(tmp_path / "grid")
    assert summary.coverage.complete and "- coverage: 4 of 4 architectures" in text
    assert "Of all 4 architectures of the search space, the smallest that fits: " \
        "**model.hidden=2, model.layers=1" in text
    assert "Not tried" not in text and "among those tried" not in text.lower()


def test_when_nothing_fits_the_closest_is_not_listed_again_among_the_partial_fits(
    tmp_path: Path,
) -> None:
    cells = {(1, 1): fitting(1), (2, 1): fitting(3), (5, 1): fitting(2)}
    synthetic_study(tmp_path / "none", cells, grid_space(6, 1))
    summary, text = summarised(tmp_path / "none")
    assert summary.answer.winner is None and summary.answer.closest is not None
    assert summary.answer.closest.row.params == {"model.hidden": 2, "model.layers": 1}
    listed = text.split("where only some members fit")[1].split("*Coverage.*")[0]
    assert "Closest: model.hidden=2, model.layers=1" in text
    assert "model.hidden=2," not in listed, "the closest is named once, not as a partial fit too"
    assert "model.hidden=1, model.layers=1" in listed and "model.hidden=5, model.layers=1" in listed
    assert "Smaller architectures" not in text, "smaller than what: there is no answer"


def test_a_repeat_is_marked_and_never_a_result_of_its_own(tmp_path: Path) -> None:
    cells = {(3, 1): fitting(4), (5, 1): fitting(2), (2, 2): fitting(4)}
    folder = tmp_path / "repeats"
    synthetic_study(folder, cells, grid_space(6, 2), repeats={3: 0, 4: 0}, pareto=True)
    summary, text = summarised(folder)
    assert "trial 3: repeat of trial 0, trial 4: repeat of trial 0" in text
    assert "3 of 12 architectures of the search space trained (2 repeated proposals" in text
    tables = [summary.top, summary.pareto]
    assert all(row.number not in (3, 4) for table in tables for row in table)
    assert sorted(row.number for row in summary.top) == [0, 1, 2]
    assert summary.answer.winner.row.number == 0 and summary.best.number == 0
    assert summary.answer.judged == 3
    body = text.split("## Top")[1]
    assert "| 3 |" not in body and "| 4 |" not in body
    repeat_of = {row["number"]: row["repeat_of"] for row in read_csv(folder / "trials.csv")}
    assert repeat_of == {"0": "", "1": "", "2": "", "3": "0", "4": "0"}


def test_trials_csv_names_every_folder_relative_to_the_project(
    tmp_path: Path, monkeypatch
) -> None:
    """The summary runs in the project; a repeat's folder (recorded by the worker as an
    absolute path) is named like every other row: its twin's, relative to the project."""
    cells = {(3, 1): fitting(4), (5, 1): fitting(2)}
    synthetic_study(tmp_path / "project" / "folders", cells, grid_space(6, 1), repeats={2: 0})
    monkeypatch.chdir(tmp_path / "project")
    summary, text = summarize_study("folders")
    folders = [row["folder"] for row in read_csv(Path("folders") / "trials.csv")]
    assert folders == ["folders/trials/0", "folders/trials/1", "folders/trials/0"]
    assert summary.best is not None and f"| folder | `{summary.best.folder}` |" in text
    assert str(summary.best.folder) == "folders/trials/0"


def test_the_architecture_picture_labels_each_architecture_once_however_often_it_was_proposed(
    tmp_path: Path,
) -> None:
    from mlpsweep.summary.plots import architecture_figure

    cells = {(3, 1): fitting(4), (5, 1): fitting(2), (2, 2): fitting(4)}
    synthetic_study(tmp_path / "labels", cells, grid_space(6, 2), repeats={3: 0, 4: 0})
    summary, _ = summarised(tmp_path / "labels")
    figure = architecture_figure(summary)
    assert isinstance(figure, Figure)
    axes = figure.axes[0]
    labelled = [(text.xy, text.get_text()) for text in axes.texts]
    assert sorted(xy for xy, _ in labelled) == [(2, 2), (3, 1), (5, 1)], labelled


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_threshold_moves_the_answer(tmp_path: Path) -> None:
    cells = {(2, 1): Cell((0.995, 0.99, 0.98, 0.999)), (5, 1): Cell((0.99, 0.992, 0.999, 1.0))}
    synthetic_study(tmp_path / "bar", cells, grid_space(6, 1))
    winners = {}
    for threshold in (0.98, 0.99, 0.9995):
        summary, text = summarize_study(str(tmp_path / "bar"), threshold=threshold)
        winner = summary.answer.winner
        winners[threshold] = winner.row.params["model.hidden"] if winner else None
    assert winners == {0.98: 2, 0.99: 5, 0.9995: None}
    assert "None of the 2 architectures trained (2 trials) had all its members fit" in text
