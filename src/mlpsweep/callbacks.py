"""Lightning callbacks of a run: loss curve, fit pictures, last-epoch validation, progress.

Each does its work every N epochs only; on the other epochs it costs one modulo.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from matplotlib.figure import Figure

from mlpsweep.data import PiecewiseDataModule
from mlpsweep.event_file import ScalarSeriesFile
from mlpsweep.model import MLP
from mlpsweep.plots import curve_x, fit_figure, to_rgb_array

# the hyperparameters the project varies: first among TensorBoard's HParams columns
SHOWN_FIRST = ("model.hidden", "model.layers")


def epochs_done(trainer: pl.Trainer) -> int:
    """Epochs finished, counted from the current epoch (inside on_train_epoch_end too)."""
    return trainer.current_epoch + 1


class ValidateLastEpoch(pl.Callback):
    """Ask for validation after the final epoch even when it is off the `val_every` grid.

    Lightning validates a stopping run at the end of its batch; raising `should_stop` in
    the last epoch is how a run gets final metrics without a second `trainer.validate`.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if epochs_done(trainer) >= (trainer.max_epochs or 0):
            trainer.should_stop = True


class LossCurveLogger(pl.Callback):
    """Writes the per-epoch training loss in chunks, and stops the run if it is not finite.

    The curve goes to its own events file in the run's folder (`ScalarSeriesFile`), written
    synchronously a chunk at a time: through the SummaryWriter each point cost 67 us."""

    def __init__(self, flush_every: int) -> None:
        self.flush_every = flush_every
        self.flushed = 0
        self.series: ScalarSeriesFile | None = None

    def due(self, epoch: int) -> bool:
        """Whether the curve is written after `epoch` (a batch of trials asks this too)."""
        return epoch % self.flush_every == 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.due(epochs_done(trainer)):
            self.flush(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            self.flush(trainer, pl_module)
        finally:
            self.close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.close()

    def flush(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, MLP)
        # not the trainer's count: it runs one ahead after an early stop
        done = pl_module.epochs_trained
        losses = pl_module.finished_epoch_losses(self.flushed, done).tolist()
        if trainer.logger is not None and trainer.logger.log_dir is not None:
            if self.series is None:
                self.series = ScalarSeriesFile(trainer.logger.log_dir, "train_loss")
            self.series.write("train/loss", losses, first_step=self.flushed + 1)
        self.flushed = max(self.flushed, done)

    def close(self) -> None:
        if self.series is not None:
            self.series.close()


class FitPictureLogger(pl.Callback):
    """The tutorial's picture (points and the network's curve) as a TensorBoard image.

    The last one, drawn when training ends, is kept as `final_figure` so the run's
    fit.png is the same picture, not a second rendering.
    """

    def __init__(self, datamodule: PiecewiseDataModule, every: int, label: str) -> None:
        self.datamodule, self.every, self.label = datamodule, every, label
        self.grid = curve_x()
        self.final_figure: Figure | None = None

    def due(self, epoch: int, max_epochs: int | None) -> bool:
        """A picture every `every` epochs (0: none), but not after the last epoch: the final
        picture is drawn when training ends. A batch of trials asks this too."""
        return bool(self.every) and epoch % self.every == 0 and epoch != max_epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = epochs_done(trainer)
        if self.due(epoch, trainer.max_epochs):
            self.log_picture(trainer, pl_module, epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # current_epoch has already moved past the last epoch here
        assert isinstance(pl_module, MLP)
        self.final_figure = self.log_picture(trainer, pl_module, pl_module.epochs_trained)

    def log_picture(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> Figure:
        assert isinstance(pl_module, MLP)
        val_acc = pl_module.metric_means().get("val/acc")
        accuracy = f", val acc {val_acc:.3f}" if val_acc is not None else ""
        title = f"{self.label}, epoch {epoch}{accuracy}"
        figure = fit_picture(pl_module, self.datamodule, self.grid, title)
        if trainer.logger is not None:
            image = to_rgb_array(figure)
            trainer.logger.experiment.add_image("fit", image, epoch, dataformats="HWC")
        return figure


def fit_picture(model: MLP, datamodule: PiecewiseDataModule, grid: torch.Tensor, title: str):
    """Figure of the training points and every member's predicted curve over `grid`."""
    with torch.no_grad():
        probs = model.predict_raw(grid).squeeze(-1).numpy()
    return fit_figure(
        datamodule.raw_x.squeeze(1).numpy(),
        datamodule.y.squeeze(1).numpy(),
        grid.squeeze(1).numpy(),
        probs,
        title,
    )


class HParamsLogger(pl.Callback):
    """TensorBoard's HParams entry: the run's hyperparameters against its *final* metrics.

    Lightning's own entry shows a placeholder (-1) or nothing; this one is written when
    training ends, before Lightning closes the event file, with the last validation's
    members' means; the architecture's parameter count is a column beside its hidden and
    layers. A run stopped early (a sweep's pruned trial) gets one too, with the metrics it
    had reached, so the HParams tab shows every trial of a study.

    Numbers are numbers, so the tab's filters, sorting and parallel coordinates work; its
    table prints every number with JavaScript's toPrecision(5) (5 as 5.0000), which a log
    cannot change: written as strings they would read 5 but sort 10 before 2.
    """

    def __init__(
        self, hparams: dict[str, Any], shown_first: Sequence[str] = SHOWN_FIRST
    ) -> None:
        self.hparams = hparams
        self.shown_first = tuple(shown_first)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer, pl_module)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.write(trainer, pl_module)

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, MLP)
        if trainer.logger is None or not pl_module.member_metrics:
            return
        from torch.utils.tensorboard.summary import hparams

        # The HParams tab reads each metric's value from the run's scalar of that tag; the
        # validation scalars are there already (Lightning's log_hyperparams would write
        # them a second time). The parameter count is a property of the architecture, not
        # a measurement over epochs: a column beside hidden and layers, not a scalar.
        final = pl_module.metric_means()
        shown = {**self.hparams, PARAMETER_COUNT: pl_module.parameter_count}
        epoch, writer = pl_module.last_validated_epoch, trainer.logger.experiment
        experiment, start, end = hparams(shown, final)
        columns = columns_first(experiment, (*self.shown_first, PARAMETER_COUNT))
        for summary in (columns, start, end):
            writer.file_writer.add_summary(summary, epoch)


PARAMETER_COUNT = "parameter_count"


def columns_first(experiment: Any, names: Sequence[str]) -> Any:
    """The experiment summary with `names` marked as the hyperparameters that differ, and
    the data set's keys (`data.*`) that are not among them left out of the columns.

    TensorBoard's HParams tab takes one run's experiment summary as the table's columns,
    sorts them by `differs` then by name and ticks only the first five by default; torch
    marks none as differing, so with a dozen keys the constant `data.*` filled those five
    and came before the metrics. Marking the searched keys puts them first; the data set's
    settings stay in each run's hyperparameters (and its config.yaml) but are no column
    unless searched.
    """
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    value = experiment.value[0]
    content = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    kept = [info for info in content.experiment.hparam_infos
            if info.name in names or not info.name.startswith("data.")]
    for info in kept:
        info.differs = info.name in names
    del content.experiment.hparam_infos[:]
    content.experiment.hparam_infos.extend(kept)
    value.metadata.plugin_data.content = content.SerializeToString()
    return experiment


class RunProgress(pl.Callback):
    """One bar for the whole run (Lightning's default draws one per epoch)."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar: Any = None
        self.shown = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=trainer.max_epochs, desc=self.description, unit="epoch",
            file=sys.stderr, mininterval=0.5, dynamic_ncols=True, leave=False,
        )
        self.refresh_every = max(1, (trainer.max_epochs or 1) // 200)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        done = epochs_done(trainer)
        if done % self.refresh_every == 0:
            self.bar.update(done - self.shown)
            self.shown = done

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        if self.bar is not None and "val/acc" in metrics:
            self.bar.set_postfix(
                val_acc=f"{float(metrics['val/acc']):.3f}",
                val_loss=f"{float(metrics['val/loss']):.4f}",
                refresh=False,
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, error: BaseException
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
