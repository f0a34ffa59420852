"""A trial of a batch as a single run's folder sees it: its record, logger and fit rule.

`batch_training.BatchTrainer` trains the batch; what each trial carries through it lives
here: its `MLP` record (the run's hyperparameters, member metrics, validation history and
a view into the batch's loss buffer), the Lightning callbacks that write its events, the
weights of members that already left, and the small functions that read a record the way
a single run's callbacks do. Also the batch's progress bar.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig

from mlpsweep.batch_model import BatchedMLP
from mlpsweep.callbacks import FitPictureLogger, HParamsLogger, LossCurveLogger
from mlpsweep.fit_rule import fitting_members
from mlpsweep.model import MLP
from mlpsweep.training import MemberSummary, RunResult


def fit_rate(member_metrics: dict[str, list[float]], threshold: float) -> float:
    """The share of members that fit by `mlpsweep.fit_rule` with val/acc bar `threshold`."""
    val = member_metrics["val/acc"]
    return fitting_members(member_metrics["train/acc"], val, threshold) / len(val)


def fits(member_metrics: dict[str, list[float]], threshold: float) -> bool:
    """Whether a trial stops because every member fits: the rule of `training.stop_when_fit`
    (EarlyStopping on the model's `stop_fit_rate` reaching 1)."""
    return fit_rate(member_metrics, threshold) == 1.0


def validation_scalars(
    member_metrics: dict[str, list[float]], fit_val_acc: float
) -> dict[str, float]:
    """What `MLP.validation_step` logs: `fit_rate`, members' means, and their spread when
    K > 1 (the per-epoch train/loss curve is the loss logger's, so only its spread is logged
    here)."""
    scalars: dict[str, float] = {"fit_rate": fit_rate(member_metrics, fit_val_acc)}
    for key, values in member_metrics.items():
        summary = MemberSummary.of(values)
        if key != "train/loss":
            scalars[key] = summary.mean
        if len(values) > 1:
            scalars.update(
                {f"{key}_min": summary.min, f"{key}_max": summary.max, f"{key}_std": summary.std}
            )
    return scalars


def save_checkpoint(record: MLP, path: Path) -> None:
    """The trial alone, in the form `MLP.load_from_checkpoint` reads (what a single run's
    `trainer.save_checkpoint` holds of the model; no optimizer or loop state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "epoch": record.epochs_trained,
            # Lightning's count of steps it drove: 0 in a single run too (raw optimizer).
            "global_step": 0,
            "pytorch-lightning_version": pl.__version__,
            "state_dict": record.state_dict(),
            "hparams_name": "kwargs",
            "hyper_parameters": dict(record.hparams),
        },
        path,
    )


@dataclass
class LoggerHolder:
    """The part of a Trainer the run's callbacks read (`trainer.logger`): lets the batch reuse
    them for each trial's logger without a Trainer per trial."""

    logger: TensorBoardLogger


@dataclass
class TrialRun:
    """One trial of the batch: its config, folder, record (an MLP, see the module docstring),
    logger and the single run's callbacks that write its events."""

    index: int
    cfg: DictConfig
    run_dir: Path
    record: MLP
    columns: slice  # its members in the batch's loss buffer (trial order)
    holder: LoggerHolder
    loss_curve: LossCurveLogger
    pictures: FitPictureLogger
    hparams: HParamsLogger
    result: RunResult | None = field(default=None)
    # every member's weights as of the last departure (`BatchedMLP.trial_state_dict`): the
    # members that left keep theirs here
    departed_state: dict[str, torch.Tensor] | None = field(default=None)

    def full_state(self, batch: BatchedMLP) -> dict[str, torch.Tensor]:
        """Every member's weights: the ones training from the batch, the rest as they left."""
        return batch.trial_state_dict(self.index, self.departed_state)


class BatchProgress:
    """One bar for the batch (epochs, trials still training), like a single run's one bar."""

    def __init__(self, trials: int, epochs: int, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=epochs, desc=f"batch of {trials} trials", unit="epoch",
                file=sys.stderr, mininterval=0.5, dynamic_ncols=True, leave=False,
            )
        self.refresh_every, self.shown = max(1, epochs // 200), 0

    def show(self, epoch: int, training: int) -> None:
        if self.bar is not None and epoch % self.refresh_every == 0:
            self.bar.update(epoch - self.shown)
            self.bar.set_postfix(training=training, refresh=False)
            self.shown = epoch

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
