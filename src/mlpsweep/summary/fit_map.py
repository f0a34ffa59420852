"""The fit map's data: one cell per trained architecture (hidden x layers), read per depth.

Each cell is one architecture's evidence: how many of its members fit (`mlpsweep.fit_rule`),
of how many, their mean val/acc and the epochs the run took (a run with
`trainer.stop_at_val_acc` stops at the first validation where every member fits, so a fitting
cell's epochs are its epochs to fit, to the nearest `trainer.val_every`). The picture, the
per-depth table and the answer's neighbourhood all read these cells.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlpsweep.summary.answer import ANSWER_METRIC, Candidate
from mlpsweep.summary.search_space import SearchSpace

Cells = Mapping[tuple[int, int], "FitCell"]  # (hidden, layers) -> cell


@dataclass(frozen=True)
class FitCell:
    hidden: int
    layers: int
    fitting: int
    members: int
    mean_val_acc: float
    epochs: int | None
    trial: int
    parameter_count: int
    # the fit epochs of the members that fit (each left its batch then)
    member_fit_epochs: tuple[int, ...] = ()

    @property
    def fit_rate(self) -> float:
        return self.fitting / self.members if self.members else 0.0

    @property
    def reliable(self) -> bool:
        """Every member fits (e.g. 4 of 4)."""
        return self.members > 0 and self.fitting == self.members

    @property
    def label(self) -> str:
        return f"{self.fitting}/{self.members}"


def fit_cells(candidates: Sequence[Candidate]) -> dict[tuple[int, int], FitCell]:
    """A cell per architecture judged by the answer (one candidate each, repeats left out)."""
    cells = {}
    for candidate in candidates:
        params = candidate.row.params
        if "model.hidden" not in params or "model.layers" not in params:
            continue
        hidden, layers = int(params["model.hidden"]), int(params["model.layers"])
        cells[(hidden, layers)] = FitCell(
            hidden, layers, candidate.reached, candidate.members, candidate.mean,
            candidate.row.epochs, candidate.row.number, candidate.size,
            tuple(epoch for epoch in candidate.row.epochs_to_fit if epoch is not None),
        )
    return cells


@dataclass(frozen=True)
class DepthRow:
    """One number of layers: where fitting starts, and whether it stays fitting above."""

    layers: int
    trained: int  # widths trained at this depth
    widths: int  # widths in the space at this depth
    smallest_reliable: FitCell | None
    smallest_any: FitCell | None
    not_reliable_above: tuple[int, ...]  # trained widths above smallest_reliable that do not
    untried_below: tuple[int, ...]  # widths of the space below smallest_reliable never trained
    # the fit epochs of this depth's members that fit (recorded per member), or else the
    # epochs of its reliable cells (studies from before members left one by one)
    epochs_to_fit: tuple[int, ...]
    counts_members: bool = False  # epochs_to_fit holds members' fit epochs, not cells' epochs

    @property
    def sharp(self) -> bool | None:
        """Every trained width above the smallest reliable one fits reliably too (None: no
        reliable width at this depth)."""
        return None if self.smallest_reliable is None else not self.not_reliable_above

    def epochs_range(self) -> tuple[int, float, int] | None:
        """(min, median, max) of `epochs_to_fit`."""
        epochs = self.epochs_to_fit
        return (min(epochs), statistics.median(epochs), max(epochs)) if epochs else None


def depth_rows(cells: Cells, widths: Sequence[int], depths: Sequence[int]) -> list[DepthRow]:
    rows = []
    for layers in depths:
        trained = sorted((cell for cell in cells.values() if cell.layers == layers),
                         key=lambda cell: cell.hidden)
        reliable = next((cell for cell in trained if cell.reliable), None)
        at_all = next((cell for cell in trained if cell.fitting > 0), None)
        above = tuple(cell.hidden for cell in trained
                      if reliable and cell.hidden > reliable.hidden and not cell.reliable)
        done = {cell.hidden for cell in trained}
        limit = reliable.hidden if reliable else max(widths, default=0) + 1
        untried = tuple(width for width in widths if width < limit and width not in done)
        members = tuple(epoch for cell in trained for epoch in cell.member_fit_epochs)
        epochs = members or tuple(cell.epochs for cell in trained if cell.reliable and cell.epochs)
        rows.append(DepthRow(layers, len(trained), len(widths), reliable, at_all, above,
                             untried, epochs, counts_members=bool(members)))
    return rows


@dataclass(frozen=True)
class FitMap:
    """Everything the map, the per-depth table and the answer's neighbourhood show."""

    cells: dict[tuple[int, int], FitCell]
    widths: list[int]  # the space's hidden values (x axis)
    depths: list[int]  # the space's layer counts (y axis)
    per_depth: list[DepthRow]
    drawable: bool
    reason: str  # why not, when not drawable

    def cell(self, hidden: int, layers: int) -> FitCell | None:
        return self.cells.get((hidden, layers))

    def neighbourhood(self, hidden: int, layers: int) -> tuple[list[int], list[int]]:
        """Widths hidden-2..hidden+2 and depths layers-1..layers+1 that are in the space."""
        widths = [width for width in self.widths if abs(width - hidden) <= 2]
        depths = [depth for depth in self.depths if abs(depth - layers) <= 1]
        return widths, depths

    def wider(self, hidden: int, layers: int, count: int = 2) -> list[tuple[int, FitCell | None]]:
        """The `count` widths of the space just above `hidden` at `layers`, with their cells."""
        above = [width for width in self.widths if width > hidden][:count]
        return [(width, self.cell(width, layers)) for width in above]


def build_fit_map(candidates: Sequence[Candidate], space: SearchSpace) -> FitMap:
    cells = fit_cells(candidates)
    widths = sorted(int(value) for value in space.values("model.hidden"))
    depths = sorted(int(value) for value in space.values("model.layers"))
    if not space.is_architecture_map:
        searched = ", ".join(sorted(space.names)) or "nothing"
        reason = (
            f"the map needs a space of exactly model.hidden x model.layers (searched: {searched})"
        )
        return FitMap(cells, widths, depths, [], False, reason)
    if not cells:
        return FitMap(cells, widths, depths, depth_rows(cells, widths, depths), False,
                      f"no complete trial with its members' train/acc and {ANSWER_METRIC} yet")
    return FitMap(cells, widths, depths, depth_rows(cells, widths, depths), True, "")
