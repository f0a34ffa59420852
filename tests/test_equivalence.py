"""Same model, faster: the speed-ups count only if the project still trains the tutorial's network.

The project hands Lightning one epoch per step, runs the minibatch loop itself with a
batched (K, in, out) network and can use fused Adam. With K=1, the same seed and no
shuffling, that path must train the same network as the plain PyTorch loop a user would
write: the same initial weights, the same per-epoch loss over hundreds of optimizer steps
(to 1e-4), and final weights far closer to the plain loop's than float32 keeps that loop to
the exact arithmetic (the project's step sums in another order: `mlpsweep.native`).

The project side is the real thing: `mlpsweep.training.train` on the composed config,
observed through a callback. The plain side is written here from the tutorial.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mlpsweep.config import compose
from mlpsweep.training import train

EPOCHS = 100  # 100 points in batches of 32: 4 optimizer steps per epoch, 400 in all
SEED = 0
LR = 0.01
RTOL, ATOL = 1e-4, 1e-5

pytestmark = pytest.mark.slow


class TutorialData(Dataset):
    """The tutorial's 100 points x = -50..49 and its labelling rule, item by item."""

    def __init__(self) -> None:
        self.x = torch.arange(-50, 50, dtype=torch.float32).unsqueeze(1)
        inside = (
            ((self.x > -20) & (self.x < 20))
            | ((self.x > -40) & (self.x < -30))
            | ((self.x > 30) & (self.x < 40))
        )
        self.y = inside.to(torch.float32)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def __len__(self) -> int:
        return self.x.shape[0]


def plain_layers(seed: int) -> tuple[nn.Linear, nn.Linear]:
    """The tutorial's 1-20-1 layers, drawn right after seeding torch."""
    torch.manual_seed(seed)
    return nn.Linear(1, 20), nn.Linear(20, 1)


def plain_loop(
    seed: int, lr: float, fused: bool, epochs: int = EPOCHS, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The plain loop: per-epoch point-weighted mean BCE, and the final (W1, b1, W2, b2);
    `dtype` float64 for the exact arithmetic's stand-in (the same float32 initial weights)."""
    hidden, output = (layer.to(dtype) for layer in plain_layers(seed))
    params = [*hidden.parameters(), *output.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr, fused=fused)
    criterion = nn.BCELoss()
    loader = DataLoader(TutorialData(), batch_size=32, shuffle=False)
    losses = []
    for _ in range(epochs):
        total, points = 0.0, 0
        for inputs, labels in loader:
            inputs, labels = inputs.to(dtype), labels.to(dtype)
            optimizer.zero_grad()
            loss = criterion(torch.sigmoid(output(torch.sigmoid(hidden(inputs)))), labels)
            loss.backward()
            optimizer.step()
            total += loss.item() * inputs.shape[0]
            points += inputs.shape[0]
        losses.append(total / points)
    final = [
        hidden.weight.detach(),
        hidden.bias.detach(),
        output.weight.detach(),
        output.bias.detach(),
    ]
    return torch.tensor(losses), final


class Observe(pl.Callback):
    """Copies the model's weights at the start and end of training, and its epoch losses."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.initial = linear_view(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.final = linear_view(pl_module)
        self.epoch_losses = pl_module.epoch_losses.clone()
        self.datamodule = trainer.datamodule


def linear_view(model: pl.LightningModule) -> list[torch.Tensor]:
    """The K=1 model's real units in nn.Linear's layout: W1 (20,1), b1 (20,), W2 (1,20), b2 (1,)
    (the model stores them padded to 32 units, `mlpsweep.layout`)."""
    assert model.ensemble == 1
    view = []
    for weight, bias in model.real_layers():
        view += [weight.detach()[0].T.clone(), bias.detach()[0, 0].clone()]
    return view


@pytest.fixture(autouse=True)
def keep_thread_count():
    threads = torch.get_num_threads()  # train() sets trainer.threads process-wide
    yield
    torch.set_num_threads(threads)


def project_run(tmp_path: Path, fused: bool) -> Observe:
    cfg = compose(
        [
            f"trainer.max_epochs={EPOCHS}",
            f"seed={SEED}",
            f"model.lr={LR}",
            "model.ensemble=1",
            f"model.fused_adam={str(fused).lower()}",
            "data.shuffle=false",
            "data.batch_size=32",
            "data.normalize=false",
            "quiet=true",
            "logger.pictures=false",
            "trainer.checkpoint=false",
            f"output_dir={tmp_path}",
        ]
    )
    observe = Observe()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(cfg, run_dir, extra_callbacks=[observe])
    return observe


@pytest.mark.parametrize("fused", [False, True], ids=["adam", "fused-adam"])
def test_project_trains_the_plain_loops_network(tmp_path: Path, fused: bool) -> None:
    project = project_run(tmp_path, fused)

    # the same data, in the same order
    data = TutorialData()
    assert torch.equal(project.datamodule.x, data.x) and torch.equal(project.datamodule.y, data.y)

    # the same initialisation: the project draws its K=1 weights like nn.Linear, in order
    initial = [t.detach() for layer in plain_layers(SEED) for t in (layer.weight, layer.bias)]
    for got, want in zip(project.initial, initial, strict=True):
        assert torch.equal(got, want)

    # the same trajectory over 400 optimizer steps, and the same network at the end
    plain_losses, plain_final = plain_loop(SEED, LR, fused)
    project_losses = project.epoch_losses[:, 0]
    assert project_losses.shape == (EPOCHS,)
    torch.testing.assert_close(
        project_losses, plain_losses, rtol=RTOL, atol=ATOL, check_dtype=False
    )
    # the final weights: the project computes the same float32 arithmetic in another order
    # (its compiled step, `mlpsweep.native`), and 400 Adam steps grow those roundings; it must
    # stay far closer to the plain loop than float32 itself keeps the plain loop to the exact
    # arithmetic (the same loop in float64): measured, 4.7e-5 against 3.7e-3
    assert distance(project.final, plain_final) < ROUNDING_SHARE * float32_error(fused)


ROUNDING_SHARE = 0.1  # of the plain loop's own float32 error


def distance(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> float:
    """The largest absolute difference over the four tensors."""
    pairs = zip(ours, theirs, strict=True)
    return max(float((a.double() - b.double()).abs().max()) for a, b in pairs)


def float32_error(fused: bool) -> float:
    """How far the plain float32 loop's final weights are from the same loop in float64."""
    _, single = plain_loop(SEED, LR, fused)
    _, double = plain_loop(SEED, LR, False, dtype=torch.float64)
    return distance(single, double)


def test_the_comparison_can_tell_runs_apart() -> None:
    """The tolerances are tight enough to matter: the loss moves far more than them over the
    run, and a loop with a 1% different learning rate or another seed falls outside both."""
    losses, final = plain_loop(SEED, LR, fused=False)
    assert (losses[0] - losses[-1]).abs() > 1000 * (ATOL + RTOL * losses[-1].abs())
    bound = ROUNDING_SHARE * float32_error(False)
    for other_losses, other_final in (
        plain_loop(SEED, LR * 1.01, fused=False),
        plain_loop(SEED + 1, LR, fused=False),
    ):
        assert not torch.allclose(other_losses, losses, rtol=RTOL, atol=ATOL)
        assert distance(other_final, final) > 10 * bound
