"""Train several trials as one `BatchedMLP`, each keeping the life it would have alone.

The trials of a batch differ only in `model.hidden` and `model.layers`; they share the data,
the learning rate and the schedule. Each trial validates, reports through a hook, and
leaves the batch the moment it is pruned, fits (`trainer.stop_at_val_acc`) or diverges; it
then stops costing compute and its folder is finished at once.

Each trial's folder is what `training.train` writes for a single run. To get there without
a second copy of that code, every trial keeps an `MLP` of its own as its *record*: it holds
the hyperparameters, the last validation's member metrics, the validation history and
(as a view into the batch's loss buffer) the per-epoch losses, exactly where a single run
keeps them. The run's own callbacks, `run_result` and `write_metrics` then read that record;
its weights are loaded from the batch only when a picture or the checkpoint needs them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig

from mlpsweep.batch_config import Schedule, check_batchable
from mlpsweep.batch_model import BatchedMLP, StepOverflow, TrialSpec
from mlpsweep.batch_trial import (
    BatchProgress,
    LoggerHolder,
    TrialRun,
    fits,
    save_checkpoint,
    validation_scalars,
)
from mlpsweep.callbacks import FitPictureLogger, HParamsLogger, LossCurveLogger
from mlpsweep.cli import stderr_is_terminal
from mlpsweep.config import to_yaml
from mlpsweep.fit_rule import member_fits
from mlpsweep.model import NonFiniteLossError
from mlpsweep.plots import loss_figure, save_png
from mlpsweep.training import (
    RunResult,
    architecture_label,
    build,
    hparams_of,
    quiet_lightning,
    run_logger,
    run_result,
    status_of,
    write_metrics,
)

ValidationHook = Callable[[int, int, dict[str, list[float]]], "str | None"]
ExitHook = Callable[[int, RunResult], None]

# What an on_validation reason ends a trial as.
EXIT_STATUS = {"fit": "completed", "pruned": "pruned"}


def train_batch(
    cfgs: Sequence[DictConfig],
    run_dirs: Sequence[Path],
    on_validation: ValidationHook | None = None,
    on_exit: ExitHook | None = None,
) -> list[RunResult]:
    """Train `cfgs` (checked configs differing only in hidden and layers) as one batch.

    `on_validation(trial, epoch, member_metrics)` runs at each of a trial's validations and
    returns None to go on or a reason ("fit" or "pruned") to end the trial there. When a
    trial ends (also by fitting `trainer.stop_at_val_acc`, diverging, or reaching
    `trainer.max_epochs`) it leaves the batch, its folder is finished, and `on_exit(trial,
    result)` is called at once. On an exception (Ctrl-C) the trials still training are
    recorded as a single run records them, without `on_exit`, and the exception propagates.
    Returns the results in the order of `cfgs`.
    """
    return BatchTrainer(cfgs, run_dirs, on_validation, on_exit).run()


class BatchTrainer:
    """The epoch loop of a batch: train, validate, let trials leave, write their folders."""

    def __init__(
        self,
        cfgs: Sequence[DictConfig],
        run_dirs: Sequence[Path],
        on_validation: ValidationHook | None,
        on_exit: ExitHook | None,
    ) -> None:
        check_batchable(cfgs)
        if len(run_dirs) != len(cfgs):
            raise ValueError(f"{len(cfgs)} trial configs but {len(run_dirs)} run folders")
        self.cfg = cfg = cfgs[0]
        self.schedule = Schedule.of(cfg)
        self.on_validation, self.on_exit = on_validation, on_exit
        quiet_lightning()
        torch.set_num_threads(cfg.trainer.threads)
        self.datamodule, _ = build(cfg)
        self.trials: list[TrialRun] = []
        for index, (trial_cfg, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True)):
            first = self.trials[-1].columns.stop if self.trials else 0
            self.trials.append(self.new_trial(index, trial_cfg, Path(run_dir), first))
        self.batch = BatchedMLP(
            [TrialSpec(c.model.hidden, c.model.layers, c.model.ensemble, c.seed) for c in cfgs],
            lr=cfg.model.lr,
            fused_adam=cfg.model.fused_adam,
        )
        self.losses = torch.full(
            (self.schedule.max_epochs, self.trials[-1].columns.stop), math.nan
        )
        for trial in self.trials:
            # A view: one write per epoch serves all trials.
            trial.record.epoch_losses = self.losses[:, trial.columns]
        # members that left because they fit: their columns keep their loss at exit
        self.departed_ids = torch.zeros(0, dtype=torch.long)
        self.departed_losses = torch.zeros(0)
        self.started = time.perf_counter()
        self.epochs_done = 0

    def new_trial(self, index: int, cfg: DictConfig, run_dir: Path, first: int) -> TrialRun:
        """Its folder starts as a single run's does: config.yaml first, then the events.
        `first` is its first member's column in the loss buffer."""
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
        _, record = build(cfg)
        logger = run_logger(run_dir)
        return TrialRun(
            index=index,
            cfg=cfg,
            run_dir=run_dir,
            record=record,
            columns=slice(first, first + cfg.model.ensemble),
            holder=LoggerHolder(logger),
            loss_curve=LossCurveLogger(cfg.logger.flush_every),
            pictures=FitPictureLogger(
                self.datamodule, cfg.logger.image_every, architecture_label(cfg)
            ),
            hparams=HParamsLogger(hparams_of(cfg)),
        )

    def active(self) -> list[TrialRun]:
        return [self.trials[index] for index in self.batch.active_trials]

    # ---- the loop ----------------------------------------------------------------------

    def run(self) -> list[RunResult]:
        schedule = self.schedule
        loader = self.datamodule.train_dataloader()
        progress = BatchProgress(
            len(self.trials),
            schedule.max_epochs,
            enabled=not self.cfg.quiet and stderr_is_terminal(),
        )
        try:
            for epoch in range(1, schedule.max_epochs + 1):
                if not self.batch.active_trials:
                    break
                self.train_epoch(epoch, next(iter(loader)))
                if epoch % schedule.val_every == 0 or epoch == schedule.max_epochs:
                    self.validate(epoch)
                self.end_epoch(epoch)
                progress.show(epoch, len(self.batch.active_trials))
            self.leave([(trial, "completed", None) for trial in self.active()])
        except BaseException as error:
            self.record_unfinished(error)
            raise
        finally:
            progress.close()
        results = [trial.result for trial in self.trials]
        assert all(results), "every trial left the batch with a result"
        return results  # type: ignore[return-value]

    def record_unfinished(self, error: BaseException) -> None:
        """The trials still training when `error` struck, recorded as a single run records
        them (metrics.json with status interrupted or failed), without telling `on_exit`."""
        if isinstance(error, KeyboardInterrupt):
            reason = str(error) or f"interrupted at epoch {self.epochs_done}"
        else:
            reason = str(error) or type(error).__name__
        for trial in self.active():
            trial.record.epochs_trained = self.epochs_done
            self.finish(trial, status_of(error), reason, tell=False)

    def train_epoch(self, epoch: int, minibatches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """One epoch for every trial; a trial whose loss turned NaN fails as it would alone,
        and a step beyond float32 (the batch's shared learning rate) fails them all."""
        try:
            result = self.batch.train_epoch(minibatches)
        except StepOverflow:
            self.leave([
                (trial, "failed", str(trial.record.step_overflow(epoch - 1)))
                for trial in self.active()
            ])
            return
        self.losses[epoch - 1, self.batch.member_ids] = result.losses
        if self.departed_ids.numel():
            self.losses[epoch - 1, self.departed_ids] = self.departed_losses
        self.epochs_done = epoch
        for index in result.diverged:
            trial = self.trials[index]
            trial.record.epochs_trained = epoch - 1
            self.finish(trial, "failed", str(trial.record.non_finite(epoch - 1)))

    def validate(self, epoch: int) -> None:
        """Every trial's metrics and scalars first; then each trial's hook, and its exit at once
        (so a trial is told before the next one's hook runs, even if that one raises)."""
        data = self.datamodule
        metrics = {
            k: v.tolist()
            for k, v in self.batch.member_metrics(data.val_x, data.val_y, data.x, data.y).items()
        }
        last_losses = self.losses[epoch - 1].tolist()
        validated = self.active()
        for trial in validated:
            rows, record = self.batch.trial_rows(trial.index), trial.record
            record.epochs_trained = epoch
            training = self.batch.member_indices(trial.index)
            for key, values in metrics.items():  # members that left keep their values at exit
                kept = record.member_metrics.get(key) or [math.nan] * record.ensemble
                for member, value in zip(training, values[rows], strict=True):
                    kept[member] = value
                record.member_metrics[key] = kept
            record.member_metrics["train/loss"] = last_losses[trial.columns]
            record.val_history.append((epoch, record.metric_means()["val/loss"]))
            scalars = validation_scalars(record.member_metrics, self.schedule.fit_val_acc)
            trial.holder.logger.log_metrics(scalars, step=epoch)
        for trial in validated:
            reason = self.exit_reason(trial, epoch)
            fitted = self.record_fits(trial, epoch) if reason != "pruned" else []
            if reason is not None:
                status = EXIT_STATUS[reason]
                message = None if status == "completed" else f"{reason} at epoch {epoch}"
                self.leave([(trial, status, message)])
            elif fitted:
                self.depart(trial, fitted, epoch)

    def newly_fitted(self, trial: TrialRun) -> list[int]:
        """The trial's members still training that fit by the stop rule's bar (none without
        `trainer.stop_at_val_acc`)."""
        threshold = self.schedule.stop_at_val_acc
        if threshold is None:
            return []
        metrics = trial.record.member_metrics
        return [
            member
            for member in self.batch.member_indices(trial.index)
            if member_fits(metrics["train/acc"][member], metrics["val/acc"][member], threshold)
        ]

    def record_fits(self, trial: TrialRun, epoch: int) -> list[int]:
        """Each member that fits now has fit at this epoch (its epochs to fit); returns them."""
        fitted = self.newly_fitted(trial)
        for member in fitted:
            trial.record.fit_epochs[member] = epoch
        return fitted

    def depart(self, trial: TrialRun, fitted: list[int], epoch: int) -> None:
        """Members that fit leave the batch at once, as `MLP.freeze_fitted` does in a run
        alone: their weights are kept, their loss stays their loss at exit, and they stop
        costing compute; the trial trains on with the others."""
        trial.departed_state = trial.full_state(self.batch)
        ids = [self.batch.first_member[trial.index] + member for member in fitted]
        columns = torch.tensor([trial.columns.start + member for member in fitted])
        self.departed_ids = torch.cat([self.departed_ids, columns])
        self.departed_losses = torch.cat([self.departed_losses, self.losses[epoch - 1, columns]])
        self.batch.remove_members(ids)

    def exit_reason(self, trial: TrialRun, epoch: int) -> str | None:
        """The hook's verdict first (as a single run's pruning callback comes first), then fit."""
        metrics = trial.record.member_metrics
        reason = self.on_validation(trial.index, epoch, metrics) if self.on_validation else None
        if reason is not None and reason not in EXIT_STATUS:
            raise ValueError(
                f"on_validation returned {reason!r}; "
                f"expected None or one of {', '.join(EXIT_STATUS)}"
            )
        threshold = self.schedule.stop_at_val_acc
        if reason is None and threshold is not None and fits(metrics, threshold):
            reason = "fit"
        return reason

    def end_epoch(self, epoch: int) -> None:
        """The loss curves and fit pictures when their callbacks' rules say so (the trials
        share their settings, so the first trial's callbacks answer for all)."""
        first = self.trials[0]
        flush = first.loss_curve.due(epoch)
        picture = first.pictures.due(epoch, self.schedule.max_epochs)
        if not (flush or picture):
            return
        failed = []
        for trial in self.active():
            trial.record.epochs_trained = epoch
            try:
                if flush:
                    trial.loss_curve.flush(trial.holder, trial.record)
            except NonFiniteLossError as error:
                failed.append((trial, "failed", str(error)))
                continue
            if picture:
                trial.record.load_state_dict(trial.full_state(self.batch))
                trial.pictures.log_picture(trial.holder, trial.record, epoch)
        self.leave(failed)

    # ---- leaving -----------------------------------------------------------------------

    def leave(self, exits: list[tuple[TrialRun, str, str | None]]) -> None:
        """Take the trials out of the batch at once (their weights first), then finish each."""
        if not exits:
            return
        for trial, _, _ in exits:
            trial.record.load_state_dict(trial.full_state(self.batch))
        self.batch.remove([trial.index for trial, _, _ in exits])
        for trial, status, error in exits:
            self.finish(trial, status, error)

    def finish(self, trial: TrialRun, status: str, error: str | None, tell: bool = True) -> None:
        """Write the trial's folder as `training.train` does for a run ending this way."""
        record, holder = trial.record, trial.holder
        result = run_result(record, trial.run_dir, time.perf_counter() - self.started)
        result.status, result.error = status, error
        try:
            trial.loss_curve.flush(holder, record)
        except NonFiniteLossError as failure:
            if result.status == "completed":
                result.status, result.error = "failed", str(failure)
        finally:
            trial.loss_curve.close()
        completed = result.status == "completed"
        final_fit = trial.pictures.log_picture(holder, record, result.epochs) if completed else None
        trial.hparams.write(holder, record)
        if completed:
            self.write_outputs(trial, final_fit, result)
        write_metrics(result)
        holder.logger.finalize("success" if result.status == "completed" else "failed")
        trial.result = result
        if tell and self.on_exit is not None:
            self.on_exit(trial.index, result)

    def write_outputs(self, trial: TrialRun, final_fit: Figure | None, result: RunResult) -> None:
        """fit.png, loss.png and the checkpoint of a completed trial (`training.finish`'s part)."""
        if trial.cfg.logger.pictures and final_fit is not None:
            save_png(final_fit, result.run_dir / "fit.png")
            epochs, val_losses = (
                zip(*trial.record.val_history, strict=True)
                if trial.record.val_history
                else ((), ())
            )
            figure = loss_figure(
                trial.record.epoch_losses[: result.epochs].numpy(), list(epochs), list(val_losses)
            )
            save_png(figure, result.run_dir / "loss.png")
        if trial.cfg.trainer.checkpoint:
            save_checkpoint(trial.record, result.run_dir / "checkpoints" / "last.ckpt")
