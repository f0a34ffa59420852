"""P(fit | width, depth) on hand-built evidence: pooling, Wilson intervals, the monotone curve,
the crossing widths and their intervals, the cells that decide them, and the capacity floor."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest
import torch

from mlpsweep.data import training_points
from mlpsweep.model import propagate
from mlpsweep.summary.probability import (
    CellEvidence,
    answers_by_depth,
    capacity_floor,
    crossing,
    deciding_cells,
    depth_answer,
    label_changes,
    monotone_curve,
    pool_cells,
    wilson_interval,
)


def cells_of(layers: int, rows: list[tuple[int, int, int]]) -> list[CellEvidence]:
    """(hidden, fits, members) rows as one depth's cells."""
    return [CellEvidence(hidden, layers, members, fits) for hidden, fits, members in rows]


def score_statistic(p: float, p0: float, n: int) -> float:
    """The score test's statistic for a proportion p of n against p0."""
    return (p - p0) / math.sqrt(p0 * (1 - p0) / n)


@pytest.mark.parametrize(("fits", "members"), [(34, 64), (0, 4), (4, 4), (1, 4), (17, 32)])
def test_wilson_interval_is_where_the_score_test_reaches_its_critical_value(fits, members):
    """The interval's ends are defined by the score test, not by the closed form the code
    uses: at each end inside (0, 1) the statistic is the normal's 97.5% quantile, in float64
    to rounding of a few operations (the 1e-9 bound is far above them, far below a wrong end)."""
    low, high = wilson_interval(fits, members)
    z, p = NormalDist().inv_cdf(0.975), fits / members
    assert 0.0 <= low <= p <= high <= 1.0
    if fits > 0:
        assert score_statistic(p, low, members) == pytest.approx(z, rel=1e-9)
    else:
        assert low == 0.0
    if fits < members:
        assert score_statistic(p, high, members) == pytest.approx(-z, rel=1e-9)
    else:
        assert high == 1.0
    assert high - low > 0.1, "a few members never give a narrow interval"


def test_wilson_interval_without_members_is_everything() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_a_cell_pools_every_member_of_every_trial_of_its_architecture() -> None:
    pooled = pool_cells([
        (0, 27, 1, 4, 4, ()), (300, 27, 1, 4, 1, ()), (301, 27, 1, 4, 2, ()),
        (1, 27, 2, 4, 0, ()), (2, 27, 1, 4, 3, (("data.normalize", True),)),
    ])
    cell = pooled[((), 1, 27)]
    assert (cell.members, cell.fits, cell.trials) == (12, 7, (0, 300, 301))
    assert cell.p == pytest.approx(7 / 12)
    assert pooled[((), 2, 27)].members == 4
    assert pooled[((("data.normalize", True),), 1, 27)].fits == 3


def test_the_curve_is_monotone_and_weighted_by_members() -> None:
    # 8 of 8 then 0 of 4 violate monotonicity: pooled, (8 + 0) / 12
    curve = monotone_curve([8, 4, 4], [8, 0, 4])
    assert curve == pytest.approx([8 / 12, 8 / 12, 1.0])
    assert all(a <= b for a, b in zip(curve, curve[1:], strict=False))


def min_max_isotonic(members: list[int], fits: list[int]) -> list[float]:
    """The isotonic regression by its min-max formula: at cell i, the max over j <= i of the
    min over l >= i of the weighted mean of cells j..l (Barlow et al. 1972). Slow, and
    independent of the pool-adjacent-violators loop it checks."""
    def mean(j: int, last: int) -> float:
        return sum(fits[j:last + 1]) / sum(members[j:last + 1])

    size = len(members)
    return [max(min(mean(j, last) for last in range(i, size)) for j in range(i + 1))
            for i in range(size)]


def test_the_curve_is_the_isotonic_regression_of_its_min_max_formula() -> None:
    draw = random.Random(0)
    for _ in range(200):
        members = [draw.choice([4, 8, 32]) for _ in range(draw.randint(1, 9))]
        fits = [draw.randint(0, n) for n in members]
        assert monotone_curve(members, fits) == pytest.approx(
            min_max_isotonic(members, fits), rel=1e-12, abs=1e-15)


def test_crossing_is_the_smallest_width_reaching_the_level_or_none() -> None:
    widths = [4, 8, 16]
    assert crossing(widths, monotone_curve([10, 10, 10], [2, 9, 10]), 0.9) == 8
    assert crossing(widths, monotone_curve([10, 10, 10], [0, 1, 2]), 0.5) is None


def test_the_answer_reads_a_clear_depth_with_intervals_that_hold_it() -> None:
    rows = [(w, 0, 32) for w in range(1, 6)] + [(6, 8, 32), (7, 16, 32), (8, 24, 32)]
    rows += [(w, 32, 32) for w in range(9, 13)]
    answer = depth_answer(cells_of(1, rows))
    assert answer.first_fit_width == 6
    assert answer.typical.width == 7 and answer.reliable.width == 9
    assert answer.typical.low is not None and answer.typical.low <= 7 <= answer.typical.high
    assert answer.reliable.low is not None and answer.reliable.low <= 9 <= answer.reliable.high
    assert len(answer.band) == len(rows)
    assert all(low <= value <= high + 1e-12
               for value, (low, high) in zip(answer.curve, answer.band, strict=True))


def test_the_intervals_are_reproducible_and_honest_about_few_members() -> None:
    few = depth_answer(cells_of(1, [(w, 0, 4) for w in range(1, 8)] + [(8, 4, 4), (9, 4, 4)]))
    again = depth_answer(cells_of(1, [(w, 0, 4) for w in range(1, 8)] + [(8, 4, 4), (9, 4, 4)]))
    assert few.reliable == again.reliable  # seeded
    # 4 of 4 says p >= 0.51 only: the reliable width may lie beyond the space
    assert few.reliable.width == 8 and few.reliable.high is None


def test_a_width_never_reached_is_none_with_none_intervals() -> None:
    answer = depth_answer(cells_of(4, [(w, 0, 4) for w in range(1, 9)]))
    assert answer.first_fit_width is None
    assert answer.typical.width is None and answer.typical.high is None
    assert answer.reliable.width is None and answer.reliable.ci == [None, None]
    assert deciding_cells(answer) == []  # 0 of 4 (Wilson < 0.49) rules out p >= 0.5


def test_deciding_cells_straddle_a_level_inside_its_crossing_interval() -> None:
    rows = [(w, 0, 4) for w in range(1, 10)] + [(10, 2, 4), (11, 3, 4), (12, 4, 4)]
    rows += [(w, 4, 4) for w in range(13, 20)] + [(40, 2, 4)]
    answer = depth_answer(cells_of(1, rows))
    chosen = [cell.hidden for cell in deciding_cells(answer)]
    assert 10 in chosen and 11 in chosen  # straddle 0.5 where the typical width is decided
    assert all(width > 9 for width in chosen)  # 0 of 4 below: decided already
    assert all(cell.straddles(0.5) or cell.straddles(0.9) for cell in deciding_cells(answer))


def test_answers_come_per_facet_and_depth() -> None:
    on = (("data.normalize", True),)
    cells = [CellEvidence(w, d, 4, 4 if w > 2 else 0, (), facet)
             for facet in ((), on) for d in (2, 1) for w in (1, 2, 3)]
    answers = answers_by_depth(cells, draws=50)
    assert [(a.facet, a.layers) for a in answers] == [((), 1), ((), 2), (on, 1), (on, 2)]


def test_the_tutorial_labels_change_six_times() -> None:
    assert label_changes([0, 0, 1, 1, 0]) == 2
    assert capacity_floor() == {"units": 6, "label_changes": 6}


def test_six_steep_sigmoids_written_by_hand_classify_all_100_points() -> None:
    """The capacity floor is real: one hidden layer of 6 units represents the labels.

    Unit i is a step at a midpoint between two training points whose labels differ; the
    output adds them with alternating signs (up at -39.5, down at -30.5, ...), so the sum is
    1 inside the ones and 0 outside, and the output sigmoid thresholds it at 0.5.
    """
    x, y = training_points()
    steps = [-39.5, -30.5, -19.5, 19.5, 30.5, 39.5]
    signs = [1.0, -1.0, 1.0, -1.0, 1.0, -1.0]
    steep, gain = 20.0, 20.0
    hidden_w = torch.full((1, 1, 6), steep)
    hidden_b = torch.tensor([[[-steep * t for t in steps]]])
    out_w = torch.tensor([[[gain * s] for s in signs]])
    out_b = torch.tensor([[[-gain * 0.5]]])
    probabilities = propagate(x, [(hidden_w, hidden_b), (out_w, out_b)], 1)[0]
    assert probabilities.shape == y.shape
    assert ((probabilities > 0.5).float() == y).all()
    assert int(y.sum()) == 57
