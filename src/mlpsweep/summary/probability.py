"""P(fit | width, depth): every member of a cell pooled, a monotone curve, and its crossings.

Which initialisations of a cell fit is decided by rounding (training these sigmoid nets is
chaotic), but the share that fits is stable, so the answer is a probability:

- a *cell* (one architecture, and one value of each facet key) pools every member of every
  trial of it (rounds of new seeds): `fits` of `members`, p = fits / members, with a 95%
  Wilson score interval, which unlike the normal approximation stays inside [0, 1] and is
  not zero-width at 0 of 4 or 4 of 4;
- the *curve* per depth is the isotonic (monotone non-decreasing) regression of the cells'
  p over width, weighted by members (pool-adjacent-violators).
  Monotone because a wider layer can represent everything a narrower one can; no shape
  beyond that is assumed (a logistic in log width would force a symmetric S and a tail to 1
  that the deep, chaotic cells do not have);
- `typical_width` / `reliable_width`: the smallest trained width whose curve value reaches
  0.5 / 0.9; `first_fit_width`: the smallest width where any member fits;
- their 95% intervals come from redrawing every cell's p from its Jeffreys posterior
  Beta(fits + 1/2, misses + 1/2), refitting the curve and reading the crossing again
  (`BOOTSTRAP_DRAWS` draws, seeded, so the numbers are reproducible). Resampling members
  with replacement would be the plain bootstrap, but a 4-of-4 cell resampled is always
  4 of 4: it would claim certainty from four samples. A crossing not reached within the
  space counts as beyond it, so an interval's end can be "not reached" (None).

Both are written out here rather than taken from scipy: with scipy installed, Lightning's
import of torchmetrics imports `scipy.signal` too, which cost every training process
(each run, each sweep worker) 1.4-1.7 s of start-up on these machines, for a summary that
needs a closed form and a 15-line loop.

The capacity floor is a property of the data, not of training: the labels change value
`label_changes` times along x, and one hidden layer needs one steep sigmoid per change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

LEVELS = {"typical": 0.5, "reliable": 0.9}
CONFIDENCE = 0.95
BOOTSTRAP_DRAWS = 1000
BOOTSTRAP_SEED = 0

Facet = tuple[tuple[str, Any], ...]  # the facet keys' values of a cell; () without facets


@dataclass(frozen=True)
class CellEvidence:
    """One cell's members over all its trials: `fits` of `members` fit."""

    hidden: int
    layers: int
    members: int
    fits: int
    trials: tuple[int, ...] = ()
    facet: Facet = ()

    @property
    def p(self) -> float:
        return self.fits / self.members if self.members else 0.0

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.fits, self.members)

    def straddles(self, level: float) -> bool:
        """Its interval holds `level`: more members could still put it on either side."""
        low, high = self.ci
        return low < level <= high


def wilson_interval(fits: int, members: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of fits / members; (0, 1) with no members.

    Its ends are the two proportions p0 at which the score statistic
    (p - p0) / sqrt(p0 (1 - p0) / n) equals -z and z, solved in closed form."""
    if members <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    n, p = members, fits / members
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    low = 0.0 if fits == 0 else (centre - spread) / scale
    high = 1.0 if fits == members else (centre + spread) / scale
    return max(0.0, low), min(1.0, high)


def pool_cells(
    trials: Iterable[tuple[int, int, int, int, int, Facet]],
) -> dict[tuple[Facet, int, int], CellEvidence]:
    """Cells from (trial number, hidden, layers, members, fits, facet) per trial, pooled."""
    pooled: dict[tuple[Facet, int, int], CellEvidence] = {}
    for number, hidden, layers, members, fits, facet in trials:
        key = (facet, layers, hidden)
        old = pooled.get(key)
        if old is None:
            pooled[key] = CellEvidence(hidden, layers, members, fits, (number,), facet)
        else:
            pooled[key] = CellEvidence(
                hidden, layers, old.members + members, old.fits + fits,
                (*old.trials, number), facet,
            )
    return pooled


def monotone_curve(members: Sequence[int], fits: Sequence[int]) -> np.ndarray:
    """The isotonic fit of fits / members (cells in width order), weighted by members.

    Pool-adjacent-violators: a cell whose p falls below the block before it is merged with
    that block into one weighted mean, until the blocks' means rise."""
    n = np.asarray(members, dtype=float)
    if n.size == 0:
        return np.zeros(0)
    k = np.asarray(fits, dtype=float)
    means: list[float] = []  # each block's weighted mean, its weight, and its cell count
    weights: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(k / n, n, strict=True):
        mean, total, size = float(value), float(weight), 1
        while means and means[-1] > mean:
            total_before = weights.pop()
            mean = (means.pop() * total_before + mean * total) / (total_before + total)
            total += total_before
            size += sizes.pop()
        means.append(mean)
        weights.append(total)
        sizes.append(size)
    return np.repeat(means, sizes)


def crossing(widths: Sequence[int], curve: np.ndarray, level: float) -> int | None:
    """The smallest width whose curve value reaches `level`; None if none does.

    A small tolerance keeps a pooled block of exactly 9 of 10 from missing 0.9 by rounding.
    """
    reached = np.flatnonzero(curve >= level - 1e-12)
    return int(widths[reached[0]]) if reached.size else None


@dataclass(frozen=True)
class Crossing:
    """A crossing width and its 95% interval; None = not reached within the space."""

    width: int | None
    low: int | None
    high: int | None

    @property
    def ci(self) -> list[int | None]:
        return [self.low, self.high]


@dataclass(frozen=True)
class DepthAnswer:
    """One depth (and facet value): its cells in width order, curve, band and crossings."""

    layers: int
    facet: Facet
    cells: tuple[CellEvidence, ...]
    curve: tuple[float, ...]
    band: tuple[tuple[float, float], ...]  # the curve's pointwise 95% band, per cell
    first_fit_width: int | None
    typical: Crossing
    reliable: Crossing

    @property
    def widths(self) -> list[int]:
        return [cell.hidden for cell in self.cells]

    def crossing(self, name: str) -> Crossing:
        return self.typical if name == "typical" else self.reliable


def depth_answer(
    cells: Sequence[CellEvidence],
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = BOOTSTRAP_SEED,
) -> DepthAnswer:
    """The curve, its band and the three widths of one depth's cells (any order)."""
    ordered = tuple(sorted(cells, key=lambda cell: cell.hidden))
    layers = ordered[0].layers if ordered else 0
    facet = ordered[0].facet if ordered else ()
    widths = [cell.hidden for cell in ordered]
    members = [cell.members for cell in ordered]
    fits = [cell.fits for cell in ordered]
    curve = monotone_curve(members, fits)
    curves = redrawn_curves(members, fits, draws, seed)
    band = _band(curves) if len(ordered) else ()
    first = next((cell.hidden for cell in ordered if cell.fits > 0), None)
    crossings = {
        name: _crossing_with_interval(widths, curve, curves, level)
        for name, level in LEVELS.items()
    }
    return DepthAnswer(
        layers, facet, ordered, tuple(float(value) for value in curve), band, first,
        crossings["typical"], crossings["reliable"],
    )


def redrawn_curves(
    members: Sequence[int], fits: Sequence[int], draws: int, seed: int
) -> np.ndarray:
    """(draws, cells) curves, each from cells' p redrawn from Beta(k + 1/2, n - k + 1/2) and
    turned into fits of the same members (so a cell's weight stays its member count)."""
    rng = np.random.default_rng(seed)
    n = np.asarray(members, dtype=int)
    k = np.asarray(fits, dtype=int)
    if n.size == 0:
        return np.zeros((draws, 0))
    p = rng.beta(k + 0.5, n - k + 0.5, size=(draws, n.size))
    redrawn = rng.binomial(n, p)
    return np.stack([monotone_curve(n, row) for row in redrawn])


def _band(curves: np.ndarray) -> tuple[tuple[float, float], ...]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low = np.percentile(curves, tail, axis=0)
    high = np.percentile(curves, 100 - tail, axis=0)
    return tuple((float(a), float(b)) for a, b in zip(low, high, strict=True))


def _crossing_with_interval(
    widths: Sequence[int], curve: np.ndarray, curves: np.ndarray, level: float
) -> Crossing:
    """The crossing and the 2.5% / 97.5% percentiles of the redrawn crossings, a redraw
    that never reaches the level counted as beyond the widest width (None)."""
    width = crossing(widths, curve, level)
    if not len(widths):
        return Crossing(None, None, None)
    beyond = math.inf
    found = [crossing(widths, row, level) for row in curves]
    values = np.array([beyond if value is None else value for value in found], dtype=float)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = (np.percentile(values, q, method="inverted_cdf") for q in (tail, 100 - tail))
    return Crossing(width, _width_or_none(low), _width_or_none(high))


def _width_or_none(value: float) -> int | None:
    return None if math.isinf(value) else int(value)


def answers_by_depth(
    cells: Iterable[CellEvidence], draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED
) -> list[DepthAnswer]:
    """One `DepthAnswer` per (facet, depth), facets in first-seen order, depths ascending."""
    groups: dict[tuple[Facet, int], list[CellEvidence]] = {}
    for cell in cells:
        groups.setdefault((cell.facet, cell.layers), []).append(cell)
    facets = list(dict.fromkeys(facet for facet, _ in groups))
    order = sorted(groups, key=lambda key: (facets.index(key[0]), key[1]))
    return [depth_answer(groups[key], draws, seed) for key in order]


def deciding_cells(answer: DepthAnswer) -> list[CellEvidence]:
    """The cells more members could move an answer with: inside a crossing's 95% interval
    (a `None` end: up to the widest width) and with a Wilson interval that holds its level.

    A crossing whose interval is (None, None) is beyond the space in every redraw, so no
    cell of this depth decides it.
    """
    chosen: dict[int, CellEvidence] = {}
    for name, level in LEVELS.items():
        found = answer.crossing(name)
        if found.low is None and found.high is None:
            continue
        low = found.low if found.low is not None else min(answer.widths)
        high = found.high if found.high is not None else max(answer.widths)
        if found.width is not None:
            low, high = min(low, found.width), max(high, found.width)
        for cell in answer.cells:
            if low <= cell.hidden <= high and cell.straddles(level):
                chosen[cell.hidden] = cell
    return [chosen[width] for width in sorted(chosen)]


def label_changes(labels: Sequence[float]) -> int:
    """How often the labels change value along x (the points in x order)."""
    return sum(1 for a, b in zip(labels, labels[1:], strict=False) if a != b)


def capacity_floor() -> dict[str, int]:
    """The tutorial data's label changes, and so the smallest one-layer width that can
    represent its labels: one steep sigmoid per change (`tests/test_probability.py` builds
    that network by hand and checks it classifies all 100 points)."""
    from mlpsweep.data import training_points

    _, labels = training_points()
    changes = label_changes(labels.squeeze(1).tolist())
    return {"units": changes, "label_changes": changes}
