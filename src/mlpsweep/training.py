"""One training run: build the data and the model from a checked config, fit, write the folder.

The run folder holds everything a person or a sweep needs afterwards: the resolved
`config.yaml`, TensorBoard events, `metrics.json`, `fit.png`, `loss.png` and a checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from mlpsweep.callbacks import (
    SHOWN_FIRST,
    FitPictureLogger,
    HParamsLogger,
    LossCurveLogger,
    RunProgress,
    ValidateLastEpoch,
)
from mlpsweep.cli import stderr_is_terminal
from mlpsweep.config import METRICS, hyperparameter_keys, searched_keys, to_yaml
from mlpsweep.data import PiecewiseDataModule, training_points
from mlpsweep.folders import claim_folder
from mlpsweep.model import MLP
from mlpsweep.plots import loss_figure, save_png


@dataclass
class MemberSummary:
    """One metric over the ensemble's members: what a sweep optimises and a person reads."""

    mean: float
    min: float
    max: float
    std: float
    members: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> MemberSummary:
        mean = sum(values) / len(values)
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1))
        return cls(mean, min(values), max(values), spread, list(values))


@dataclass
class RunResult:
    run_dir: Path
    status: str
    epochs: int
    parameter_count: int
    duration_s: float
    metrics: dict[str, MemberSummary] = field(default_factory=dict)
    error: str | None = None
    # per member, the epoch of the validation at which it fit by the stop rule
    # (`trainer.stop_at_val_acc`) and stopped training; None: it did not (or no stop rule)
    epochs_to_fit: list[int | None] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        return data


def quiet_lightning() -> None:
    """Lightning's start-up banners and hints that do not apply to a 100-point CPU run."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*smaller than the logging interval.*",  # one step per epoch, and nothing logged per step
        # Lightning 2.6's pytree helper on torch 2.13
        ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def new_run_dir(base: Path) -> Path:
    """`base/<date_time>_<4 hex>`: time-sorted, and two runs in one second never collide."""
    return claim_folder(base / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))


def build(cfg: DictConfig) -> tuple[PiecewiseDataModule, MLP]:
    """The data module and the model a config describes (seeded, so reproducible).

    Every `data.*` and `model.*` key goes through by name: the yaml holds the defaults, the
    schema the types, and the classes take them all as required keywords.
    """
    pl.seed_everything(cfg.seed, workers=False, verbose=False)
    datamodule = PiecewiseDataModule(**cfg.data, seed=cfg.seed)
    standardizer = datamodule.standardizer
    model = MLP(
        **cfg.model,
        x_shift=standardizer.shift,
        x_scale=standardizer.scale,
        fit_val_acc=cfg.trainer.fit_val_acc,
        stop_val_acc=cfg.trainer.stop_at_val_acc,
    )
    return datamodule, model


def hparams_of(cfg: DictConfig, extra_keys: Sequence[str] = ()) -> dict[str, Any]:
    """The hyperparameters shown in TensorBoard's HParams tab, flat and typed.

    The schema's hyperparameters (`config.hyperparameter_keys`), then `extra_keys` (a sweep's
    searched keys, so whatever it searches is shown even if the schema calls it run-only).
    Booleans become "true"/"false": torch's `hparams` tests for numbers before booleans, so a
    bool would be shown as 0.0000 or 1.0000. An unset key (null) is left out by torch.
    """
    keys = dict.fromkeys([*hyperparameter_keys(), *extra_keys])
    return {key: _hparam_value(OmegaConf.select(cfg, key)) for key in keys}


def _hparam_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def train(
    cfg: DictConfig,
    run_dir: Path,
    extra_callbacks: Sequence[pl.Callback] = (),
    progress_label: str = "train",
) -> RunResult:
    """Fit the model described by `cfg`, writing the run folder; returns the final metrics.

    Exceptions from the fit (a non-finite loss, a sweep's pruning signal) propagate after
    `metrics.json` records them, so the folder never looks like a finished run.
    """
    quiet_lightning()
    torch.set_num_threads(cfg.trainer.threads)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    datamodule, model = build(cfg)
    logger = run_logger(run_dir)
    searched = searched_keys(cfg)
    callbacks: list[pl.Callback] = [
        LossCurveLogger(cfg.logger.flush_every),
        fit_pictures := FitPictureLogger(
            datamodule, cfg.logger.image_every, architecture_label(cfg)
        ),
        ValidateLastEpoch(),
        HParamsLogger(hparams_of(cfg, searched), shown_first=(*SHOWN_FIRST, *searched)),
        *extra_callbacks,
    ]
    if cfg.trainer.checkpoint:  # Ctrl-C leaves checkpoints/last.ckpt to resume from (ckpt_path=)
        callbacks.append(CheckpointOnInterrupt(run_dir / "checkpoints" / "last.ckpt"))
    if cfg.trainer.stop_at_val_acc is not None:
        callbacks.append(stop_when_fit())
    if not cfg.quiet and stderr_is_terminal():
        callbacks.append(RunProgress(progress_label))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=cfg.trainer.max_epochs,
        logger=logger,
        callbacks=callbacks,
        check_val_every_n_epoch=None,
        val_check_interval=cfg.trainer.val_every,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    started = time.perf_counter()
    try:
        fit_interruptible(trainer, model, datamodule, cfg.get("ckpt_path"))
    except BaseException as error:
        result = run_result(model, run_dir, time.perf_counter() - started)
        result.status, result.error = status_of(error), str(error) or type(error).__name__
        write_metrics(result)
        raise
    result = run_result(model, run_dir, time.perf_counter() - started)
    finish(cfg, trainer, fit_pictures.final_figure, model, result)
    return result


class CheckpointOnInterrupt(pl.Callback):
    """`checkpoints/last.ckpt` on Ctrl-C, to resume from with `ckpt_path=`; a diverged or
    pruned run is not worth resuming. (Lightning's OnExceptionCheckpoint saves on any
    exception and counts as a checkpoint callback, which turns on its `ckpt_path="last"`
    guessing.) Ctrl-C lands mid-epoch, so a resumed run repeats that epoch from weights that
    had some of its steps already; a run resumed from a finished run's checkpoint continues
    exactly."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, KeyboardInterrupt):
            trainer.save_checkpoint(self.path)


def run_logger(run_dir: Path) -> TensorBoardLogger:
    """The run folder's TensorBoard logger, its events in the folder itself.

    torch's SummaryWriter hands each event to its writer thread through a queue of 10, and
    a put blocks while the queue is full: a deep queue lets a validation's dozen scalars
    (times a batch's trials) go at once. The per-epoch loss curve does not come here: it
    has an events file of its own (`event_file.ScalarSeriesFile`).
    """
    return TensorBoardLogger(
        save_dir=str(run_dir), name="", version="", default_hp_metric=False, max_queue=10_000
    )


def stop_when_fit() -> EarlyStopping:
    """Lightning's EarlyStopping once every member fits: `stop_fit_rate` reaches 1.

    That rate is the fit rule of `mlpsweep.fit_rule` (train/acc 1 and val/acc >= the bar)
    with `trainer.stop_at_val_acc` as the bar, logged by the model at each validation; the
    sweep sets the bar to `trainer.fit_val_acc`, so a trial stops when its `fit_rate` is 1.
    The threshold test is strict (>), hence the nudge; patience is unlimited because only
    every member fitting, not a plateau, should end the run.
    """
    return EarlyStopping(
        monitor="stop_fit_rate",
        mode="max",
        stopping_threshold=1.0 - 1e-6,
        patience=sys.maxsize,
        check_on_train_epoch_end=False,
        verbose=False,
    )


def fit_interruptible(
    trainer: pl.Trainer, model: MLP, datamodule: PiecewiseDataModule, ckpt_path: str | None = None
) -> None:
    """`trainer.fit` (resuming from `ckpt_path` if given), but Ctrl-C stays a KeyboardInterrupt.

    Lightning answers Ctrl-C with `sys.exit(1)` and ignores SIGINT from then on; a sweep
    worker must instead see the interrupt (to queue its trial again) and stay stoppable.
    """
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SystemExit as error:
        if not isinstance(error.__context__, KeyboardInterrupt):
            raise
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt(f"interrupted at epoch {model.epochs_trained}") from None


def status_of(error: BaseException) -> str:
    """'pruned' for a sweep's pruning signal, 'interrupted' for Ctrl-C, else 'failed'."""
    if type(error).__name__ == "TrialPruned":
        return "pruned"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return "failed"


def run_result(model: MLP, run_dir: Path, duration_s: float) -> RunResult:
    return RunResult(
        run_dir=run_dir,
        status="completed",
        epochs=model.epochs_trained,
        parameter_count=model.parameter_count,
        duration_s=round(duration_s, 3),
        metrics={
            key: MemberSummary.of(model.member_metrics[key])
            for key in METRICS
            if key in model.member_metrics
        },
        epochs_to_fit=list(model.fit_epochs),
    )


def architecture_label(cfg: DictConfig) -> str:
    return f"{cfg.model.layers} x {cfg.model.hidden} sigmoid, K={cfg.model.ensemble}"


def finish(
    cfg: DictConfig, trainer: pl.Trainer, final_fit: Figure | None, model: MLP, result: RunResult
) -> None:
    """Pictures, checkpoint and metrics.json (TensorBoard's part was written during fit)."""
    if cfg.logger.pictures:
        if final_fit is not None:
            save_png(final_fit, result.run_dir / "fit.png")
        epochs, val_losses = zip(*model.val_history, strict=True) if model.val_history else ((), ())
        train_losses = model.epoch_losses[: result.epochs].numpy()
        figure = loss_figure(train_losses, list(epochs), list(val_losses))
        save_png(figure, result.run_dir / "loss.png")
    if cfg.trainer.checkpoint:
        trainer.save_checkpoint(result.run_dir / "checkpoints" / "last.ckpt")
    write_metrics(result)


def write_metrics(result: RunResult) -> None:
    """Write metrics.json atomically: readers (a live summary) never see half a file."""
    target = result.run_dir / "metrics.json"
    partial = target.with_suffix(".json.tmp")
    partial.write_text(json.dumps(result.to_json(), indent=2))
    os.replace(partial, target)


def closing_line(result: RunResult) -> str:
    """The one line a run ends on: final metrics, time, and where everything is."""
    def fmt(key: str) -> str:
        summary = result.metrics.get(key)
        if summary is None:
            return f"{key} n/a"
        spread = f" [{summary.min:.3f}..{summary.max:.3f}]" if len(summary.members) > 1 else ""
        return f"{key} {summary.mean:.4f}{spread}"

    shown = ", ".join(fmt(key) for key in METRICS)
    took = f"{result.epochs} epochs in {result.duration_s:.1f}s"
    return f"{result.status}: {shown}; {took} -> {result.run_dir}"


def majority_share() -> float:
    """The share of the training points with the more common label (57 of the 100)."""
    _, labels = training_points()
    ones = float(labels.mean())
    return max(ones, 1.0 - ones)


def learned_nothing_warning(result: RunResult) -> str | None:
    """A warning line when a completed run learned nothing, else None.

    The rule: the members' mean train/acc is no better than always answering the training
    set's more common label (57 of 100 points), which needs no learning at all. A run with
    saturated sigmoids (model.lr=1e10: val/loss near 58) or one stopped before it moved
    (a few epochs) ends there; its "completed" alone would read as a result.
    """
    summary = result.metrics.get("train/acc")
    baseline = majority_share()
    better = summary is not None and summary.mean > baseline + 1e-6  # float32 accuracies
    if result.status != "completed" or summary is None or better:
        return None
    return (
        f"warning: the run learned nothing: train/acc {summary.mean:.3f} is no better than "
        f"always answering the more common label ({baseline:.2f}); "
        "try a smaller model.lr or more trainer.max_epochs"
    )
