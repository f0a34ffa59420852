"""The tutorial's piecewise data set as a LightningDataModule.

Training data are the tutorial's 100 integer points. Validation is a dense grid of the
same rule *between* the integers, minus the six unit intervals where two neighbouring
training points disagree: the training set says nothing about where the step lies
inside those, so keeping them would cap the best reachable accuracy near 0.97.

Batches are handed to Lightning one *epoch* at a time (a list of minibatches): Lightning
costs about 0.4 ms per optimizer step on these machines, more than the tutorial's whole
step, so the model runs the minibatch loop itself inside one Lightning step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import lightning.pytorch as pl
import torch

TRAIN_X_LOW, TRAIN_X_HIGH = -50, 49
ONE_INTERVALS: tuple[tuple[float, float], ...] = ((-20.0, 20.0), (-40.0, -30.0), (30.0, 40.0))

Minibatches = list[tuple[torch.Tensor, torch.Tensor]]


def piecewise_label(positions: torch.Tensor) -> torch.Tensor:
    """The tutorial's rule: 1 strictly inside (-20,20), (-40,-30), (30,40); else 0."""
    inside = torch.zeros_like(positions, dtype=torch.bool)
    for low, high in ONE_INTERVALS:
        inside |= (positions > low) & (positions < high)
    return inside.to(torch.float32)


def training_points() -> tuple[torch.Tensor, torch.Tensor]:
    """The tutorial's 100 points x = -50..49, shaped (100, 1) like its Dataset."""
    positions = torch.arange(TRAIN_X_LOW, TRAIN_X_HIGH + 1, dtype=torch.float32).unsqueeze(1)
    return positions, piecewise_label(positions)


def ambiguous_intervals(
    positions: torch.Tensor, labels: torch.Tensor
) -> list[tuple[float, float]]:
    """Unit intervals between neighbouring training points whose labels differ."""
    flat_x, flat_y = positions.squeeze(1).tolist(), labels.squeeze(1).tolist()
    return [
        (flat_x[i], flat_x[i + 1])
        for i in range(len(flat_x) - 1)
        if flat_y[i] != flat_y[i + 1]
    ]


def validation_grid(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`points` x values strictly between the integers of [-50, 49], off the ambiguous intervals.

    The grid is laid over the informative part of the range only, so the requested count
    is what is returned and every point sits at a non-integer position.
    """
    train_x, train_y = training_points()
    excluded = ambiguous_intervals(train_x, train_y)
    kept_units = [
        float(low)
        for low in range(TRAIN_X_LOW, TRAIN_X_HIGH)
        if (float(low), float(low + 1)) not in excluded
    ]
    per_unit = -(-points // len(kept_units))
    offsets = (torch.arange(per_unit, dtype=torch.float32) + 0.5) / per_unit
    grid = (torch.tensor(kept_units).unsqueeze(1) + offsets.unsqueeze(0)).flatten()
    if grid.numel() > points:  # spread the surplus evenly instead of cutting one end
        keep = torch.linspace(0, grid.numel() - 1, points).round().long()
        grid = grid[keep]
    positions = grid.unsqueeze(1)
    return positions, piecewise_label(positions)


@dataclass(frozen=True)
class Standardizer:
    """x -> (x - shift) / scale; the identity when normalisation is off."""

    shift: float = 0.0
    scale: float = 1.0

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        if self.shift == 0.0 and self.scale == 1.0:
            return positions
        return (positions - self.shift) / self.scale


class EpochLoader:
    """An iterable of one item per epoch: the epoch's minibatches, in order.

    Without shuffling the slices are made once and reused; with shuffling a seeded
    generator draws a new permutation each epoch, so a run is reproducible from its seed.
    """

    def __init__(
        self, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool, seed: int
    ) -> None:
        self.inputs, self.labels = inputs, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.fixed_minibatches = None if shuffle else self._slice(inputs, labels)

    def _slice(self, inputs: torch.Tensor, labels: torch.Tensor) -> Minibatches:
        pairs = zip(inputs.split(self.batch_size), labels.split(self.batch_size), strict=True)
        return list(pairs)

    def __iter__(self) -> Iterator[Minibatches]:
        if self.fixed_minibatches is not None:
            yield self.fixed_minibatches
            return
        order = torch.randperm(self.inputs.shape[0], generator=self.generator)
        yield self._slice(self.inputs[order], self.labels[order])

    def __len__(self) -> int:
        return 1


class OneBatch:
    """An iterable holding a single batch (Lightning reads a bare list as several loaders)."""

    def __init__(self, batch: object) -> None:
        self.batch = batch

    def __iter__(self) -> Iterator[object]:
        yield self.batch

    def __len__(self) -> int:
        return 1


class PiecewiseDataModule(pl.LightningDataModule):
    """Training points, the validation grid, and the optional standardisation of x.

    Every argument is a required keyword: the defaults live in `conf/data/piecewise.yaml`
    only, and `training.build` passes `**cfg.data` and the run's seed.
    """

    def __init__(
        self, *, batch_size: int, shuffle: bool, normalize: bool, val_points: int, seed: int
    ) -> None:
        super().__init__()
        self.batch_size, self.shuffle, self.normalize = batch_size, shuffle, normalize
        self.val_points, self.seed = val_points, seed
        self.raw_x, self.y = training_points()
        self.raw_val_x, self.val_y = validation_grid(val_points)
        self.standardizer = self._fit_standardizer()
        self.x = self.standardizer(self.raw_x)
        self.val_x = self.standardizer(self.raw_val_x)

    def _fit_standardizer(self) -> Standardizer:
        if not self.normalize:
            return Standardizer()
        return Standardizer(float(self.raw_x.mean()), float(self.raw_x.std()))

    def train_dataloader(self) -> EpochLoader:
        return EpochLoader(self.x, self.y, self.batch_size, self.shuffle, self.seed)

    def transfer_batch_to_device(
        self, batch: object, device: torch.device, dataloader_idx: int
    ) -> object:
        """On the CPU the tensors are where they belong: skip Lightning's walk over the batch."""
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def val_dataloader(self) -> OneBatch:
        """One step that sees the whole grid (`val/*`) and the training points (`train/acc`)."""
        return OneBatch({"val": (self.val_x, self.val_y), "train": (self.x, self.y)})
