"""The loops the project is measured against: the tutorial's own, and an eager floor.

Both are written here from the tutorial's text (nothing is imported from the project or
from the tutorial's folder), so the benchmark compares the project with what a user
would write instead of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

EPOCH_PRINT_EVERY = 1000  # the tutorial plots and prints every 1000 epochs


@dataclass
class Timing:
    """Wall and process CPU seconds of one measured stretch of code.

    CPU time counts all the process's threads; on a machine shared with other work it
    moves far less than wall time does.
    """

    wall: float
    cpu: float

    @classmethod
    def start(cls) -> Timing:
        return cls(time.perf_counter(), time.process_time())

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self.wall, time.process_time() - self.cpu)


class Data(Dataset):
    """The tutorial's data object, built with its for loop: 100 points x = -50..49."""

    def __init__(self) -> None:
        self.x = torch.zeros(100, 1)
        self.y = torch.zeros(self.x.shape)
        for i in range(100):
            self.x[i] = -50 + i
            if self.x[i, 0] > -20 and self.x[i, 0] < 20:
                self.y[i] = 1
            elif (self.x[i, 0] > -30 and self.x[i, 0] < -20) or (
                self.x[i, 0] > 20 and self.x[i, 0] < 30
            ):
                self.y[i] = 0
            elif (self.x[i, 0] > -40 and self.x[i, 0] < -30) or (
                self.x[i, 0] > 30 and self.x[i, 0] < 40
            ):
                self.y[i] = 1
            else:
                self.y[i] = 0
        self.len = self.x.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def __len__(self) -> int:
        return self.len


class NeuralNetwork(nn.Module):
    """The tutorial's 1-hidden-layer sigmoid network."""

    def __init__(self, input_size: int = 1, hidden_size: int = 20, output_size: int = 1) -> None:
        super().__init__()
        self.input_layer = nn.Linear(input_size, hidden_size)
        self.output_layer = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.input_layer(x))
        x = torch.sigmoid(self.output_layer(x))
        return x


def tutorial_loop(epochs: int, seed: int = 0) -> tuple[Timing, list[float]]:
    """The tutorial's training loop, minus its plotting: (its timing, per-epoch summed loss).

    As the tutorial: per-item Dataset, DataLoader(batch_size=32) without shuffling, Adam
    lr 0.01 (not fused), BCELoss, `total += loss.item()` after every step. Its plot and
    print every 1000 epochs are left out (no display here); the check of the epoch number
    stays. The thread count is whatever torch starts with, as for the tutorial's user.
    """
    torch.manual_seed(seed)
    dataset = Data()
    model = NeuralNetwork(input_size=1, hidden_size=20, output_size=1)
    learning_rate = 0.01
    criterion = nn.BCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    data_loader = DataLoader(dataset=dataset, batch_size=32)
    losses: list[float] = []
    timing = Timing.start()
    for epoch in range(epochs):
        total = 0
        for x, y in data_loader:
            optimizer.zero_grad()
            yhat = model(x)
            loss = criterion(yhat, y)
            loss.backward()
            optimizer.step()
            total += loss.item()
        if epoch % EPOCH_PRINT_EVERY == 0:
            pass  # the tutorial plots the fit and prints the loss here
        losses.append(total)
    return timing.stop(), losses


def eager_floor(epochs: int, seed: int = 0) -> Timing:
    """The least a step can cost in eager PyTorch here: the timing of `epochs` epochs.

    Pre-sliced batches, fused Adam, one thread, `nn.Linear` layers, and nothing else (no
    loss read back, no logging). The caller's thread count is restored afterwards.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        dataset = Data()
        batches = list(zip(dataset.x.split(32), dataset.y.split(32), strict=True))
        model = nn.Sequential(nn.Linear(1, 20), nn.Sigmoid(), nn.Linear(20, 1), nn.Sigmoid())
        criterion = nn.BCELoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
        timing = Timing.start()
        for _ in range(epochs):
            for x, y in batches:
                optimizer.zero_grad(set_to_none=True)
                criterion(model(x), y).backward()
                optimizer.step()
        return timing.stop()
    finally:
        torch.set_num_threads(threads)
