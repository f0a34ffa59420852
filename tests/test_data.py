"""The tutorial's data set, the validation grid, and the per-epoch minibatches."""

from __future__ import annotations

import math

import pytest
import torch

from mlpsweep.config import compose
from mlpsweep.data import (
    EpochLoader,
    PiecewiseDataModule,
    ambiguous_intervals,
    piecewise_label,
    training_points,
    validation_grid,
)

# The six unit intervals where neighbouring training points disagree: the training points say
# nothing about where the step lies inside them, so the validation grid leaves them out.
AMBIGUOUS = [(-40, -39), (-31, -30), (-20, -19), (19, 20), (30, 31), (39, 40)]


def datamodule(*overrides: str) -> PiecewiseDataModule:
    """The data module `python src/train.py overrides...` builds (the yaml's defaults)."""
    cfg = compose(list(overrides))
    return PiecewiseDataModule(**cfg.data, seed=cfg.seed)


def tutorial_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The tutorial's own `Data.__init__` loop, verbatim in logic."""
    inputs = torch.zeros(100, 1)
    labels = torch.zeros(inputs.shape)
    for index in range(100):
        inputs[index] = -50 + index
        if inputs[index, 0] > -20 and inputs[index, 0] < 20:
            labels[index] = 1
        elif (inputs[index, 0] > -30 and inputs[index, 0] < -20) or (
            inputs[index, 0] > 20 and inputs[index, 0] < 30
        ):
            labels[index] = 0
        elif (inputs[index, 0] > -40 and inputs[index, 0] < -30) or (
            inputs[index, 0] > 30 and inputs[index, 0] < 40
        ):
            labels[index] = 1
        else:
            labels[index] = 0
    return inputs, labels


def rule(value: float) -> float:
    """The rule written once more, for any real x."""
    return 1.0 if (-20 < value < 20) or (-40 < value < -30) or (30 < value < 40) else 0.0


def test_training_points_equal_the_tutorials_loop_point_by_point():
    inputs, labels = training_points()
    ref_x, ref_y = tutorial_data()
    assert inputs.shape == ref_x.shape == (100, 1)
    assert labels.shape == ref_y.shape == (100, 1)
    assert inputs.dtype == labels.dtype == torch.float32
    for index in range(100):
        assert inputs[index, 0].item() == ref_x[index, 0].item(), f"x[{index}]"
        assert labels[index, 0].item() == ref_y[index, 0].item(), (
            f"label of x={ref_x[index, 0].item()}"
        )


def test_training_points_counts_and_boundaries():
    inputs, labels = training_points()
    assert inputs[0, 0].item() == -50 and inputs[-1, 0].item() == 49
    assert int(labels.sum().item()) == 57
    by_x = {
        int(a): b
        for a, b in zip(inputs.squeeze(1).tolist(), labels.squeeze(1).tolist(), strict=True)
    }
    for boundary in (-40, -30, -20, 20, 30, 40):
        assert by_x[boundary] == 0.0, f"boundary point {boundary} must be 0"
    for inside in (-39, -31, -19, 0, 19, 31, 39):
        assert by_x[inside] == 1.0, f"{inside} lies strictly inside a one-interval"


def test_piecewise_label_matches_rule_off_the_integers():
    xs = torch.linspace(-55, 55, 2211).unsqueeze(1)  # includes non-integers and the boundaries
    labels = piecewise_label(xs).squeeze(1).tolist()
    for value, label in zip(xs.squeeze(1).tolist(), labels, strict=True):
        assert label == rule(value), f"x={value}"


def test_ambiguous_intervals_are_the_six_where_neighbouring_labels_differ():
    assert [tuple(map(int, pair)) for pair in ambiguous_intervals(*training_points())] == AMBIGUOUS


@pytest.mark.parametrize("points", [10, 37, 93, 100, 1000, 1001, 2500])
def test_validation_grid_size_position_and_labels(points):
    inputs, labels = validation_grid(points)
    assert inputs.shape == (points, 1) and labels.shape == (points, 1)
    values = inputs.squeeze(1).tolist()
    assert len(set(values)) == points, "grid points must be distinct"
    for value, label in zip(values, labels.squeeze(1).tolist(), strict=True):
        assert -50 < value < 49, f"{value} outside the training range"
        assert value != math.floor(value), f"{value} is an integer (a training point)"
        for low, high in AMBIGUOUS:
            assert not (low <= value <= high), (
                f"{value} lies in the ambiguous interval ({low}, {high})"
            )
        assert label == rule(value), f"label of {value}"


def test_validation_grid_covers_the_informative_range_evenly():
    inputs, _ = validation_grid(1000)
    units = torch.floor(inputs.squeeze(1)).long()
    counts = torch.bincount(units + 50, minlength=99)
    informative = [u for u in range(-50, 49) if (u, u + 1) not in AMBIGUOUS]
    assert len(informative) == 93
    assert all(counts[u + 50] > 0 for u in informative), (
        "every informative unit interval is sampled"
    )
    assert counts.max() - counts[counts > 0].min() <= 1, "points are spread evenly over the units"


def test_epoch_loader_without_shuffle_is_the_tutorials_dataloader():
    inputs, labels = training_points()
    loader = EpochLoader(inputs, labels, batch_size=32, shuffle=False, seed=0)
    assert len(loader) == 1
    for _ in range(2):  # the same minibatches every epoch
        (minibatches,) = list(loader)
        assert [len(bx) for bx, _ in minibatches] == [32, 32, 32, 4]
        assert torch.equal(torch.cat([bx for bx, _ in minibatches]), inputs)
        assert torch.equal(torch.cat([by for _, by in minibatches]), labels)


def test_epoch_loader_shuffle_is_a_seeded_permutation_per_epoch():
    inputs, labels = training_points()
    first = EpochLoader(inputs, labels, batch_size=32, shuffle=True, seed=3)
    again = EpochLoader(inputs, labels, batch_size=32, shuffle=True, seed=3)
    epochs = [torch.cat([bx for bx, _ in next(iter(first))]) for _ in range(3)]
    epochs_again = [torch.cat([bx for bx, _ in next(iter(again))]) for _ in range(3)]
    for order, order_again in zip(epochs, epochs_again, strict=True):
        assert torch.equal(order, order_again), "same seed, same order"
        assert sorted(order.squeeze(1).tolist()) == inputs.squeeze(1).tolist(), (
            "a permutation of the data"
        )
    assert not torch.equal(epochs[0], epochs[1]), "a new order each epoch"
    assert not torch.equal(epochs[0], inputs), "shuffled"
    (minibatches,) = list(first)
    for bx, by in minibatches:  # labels travel with their points
        assert torch.equal(by, piecewise_label(bx))


def test_normalize_standardises_train_and_validation_with_the_same_transform():
    plain = datamodule("data.normalize=false")
    assert torch.equal(plain.x, plain.raw_x) and torch.equal(plain.val_x, plain.raw_val_x)
    dm = datamodule("data.normalize=true")
    assert abs(dm.x.mean().item()) < 1e-6
    assert abs(dm.x.std().item() - 1.0) < 1e-5
    shift, scale = dm.standardizer.shift, dm.standardizer.scale
    assert shift == pytest.approx(-0.5) and scale == pytest.approx(plain.raw_x.std().item())
    assert torch.allclose(dm.val_x, (dm.raw_val_x - shift) / scale)
    assert torch.equal(dm.y, plain.y) and torch.equal(dm.val_y, plain.val_y)


def test_datamodule_hands_lightning_one_epoch_and_one_validation_batch():
    dm = datamodule("data.batch_size=40", "data.val_points=200")
    (minibatches,) = list(dm.train_dataloader())
    assert [len(bx) for bx, _ in minibatches] == [40, 40, 20]
    (batch,) = list(dm.val_dataloader())
    assert batch["val"][0].shape == (200, 1)
    assert torch.equal(batch["train"][0], dm.x) and torch.equal(batch["train"][1], dm.y)
