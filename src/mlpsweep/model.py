"""The tutorial's sigmoid MLP as a LightningModule, optionally as a batched ensemble.

`ensemble=K` trains K independent initialisations in lockstep as one network whose weights
are shaped (K, in, out), stepped by the compiled step (`mlpsweep.step`, `mlpsweep.native`)
and evaluated with `torch.baddbmm` (`step.forward`). The loss is the *sum* of the
members' mean losses, so each member's gradient is exactly its own; Adam is elementwise,
so the members stay independent while sharing every kernel launch. K=1 is the tutorial's
network, initialised with the same random draws as its `nn.Linear` layers.

Lightning sees one step per epoch (see `data.EpochLoader`); the minibatch loop runs here,
each step by `mlpsweep.step` (the same compiled forward, backward and Adam a batch of trials
runs), and per-epoch losses go into a preallocated buffer that is written to the
logger in chunks, so the hot loop never waits on `.item()`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from mlpsweep import layout, step
from mlpsweep.data import Minibatches
from mlpsweep.fit_rule import FIT_VAL_ACC, member_fits
from mlpsweep.step import LayerPairs

Batch = tuple[torch.Tensor, torch.Tensor]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot recover."""


def linear_init(fan_in: int, fan_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw weights the way `nn.Linear(fan_in, fan_out)` does, in the same RNG order."""
    layer = nn.Linear(fan_in, fan_out)
    return layer.weight.detach().T.clone(), layer.bias.detach().clone()


Layers = layout.Layers


def draw_members(hidden: int, layers: int, ensemble: int) -> Layers:
    """Every member's layers drawn from the global RNG, member by member, layer by layer (so
    member 0 equals a K=1 model with the same seed): per layer, the weights (K, in, out)
    and biases (K, 1, out). `MLP` is built from these, and a batch of trials draws each
    trial's with them, so a trial starts from the weights it would have alone."""
    widths = [1] + [hidden] * layers + [1]
    draws = [
        [linear_init(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        for _ in range(ensemble)
    ]
    return [
        (
            torch.stack([member[depth][0] for member in draws]),
            torch.stack([member[depth][1] for member in draws]).unsqueeze(1),
        )
        for depth in range(len(widths) - 1)
    ]


def propagate(inputs: torch.Tensor, layers: LayerPairs, members: int) -> torch.Tensor:
    """x (N, 1) through every member's sigmoid layers at once: (K, N, 1) probabilities."""
    return step.forward(inputs, layers, members)[-1]


def parameter_count(hidden: int, layers: int, inputs: int = 1, outputs: int = 1) -> int:
    """Weights and biases of one member: inputs -> hidden x layers -> outputs."""
    widths = [inputs] + [hidden] * layers + [outputs]
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True))


class MLP(pl.LightningModule):
    """`layers` hidden layers of `hidden` sigmoid units, sigmoid output, BCE loss, Adam.

    Every architecture and optimiser argument is a required keyword: the defaults live in
    `conf/model/mlp.yaml` only, and `training.build` passes `**cfg.model`. They are saved as
    hyperparameters, so `MLP.load_from_checkpoint(path)` needs no arguments.

    **The Lightning contract, bent on purpose.** Lightning costs about 0.35-0.5 ms per
    optimizer step on these machines whatever the model; the tutorial's whole epoch (4
    minibatches) takes 1.27 ms in plain PyTorch, and a plain Lightning port 2.5-2.9 ms. So:

    - Lightning sees *one step per epoch* (`data.EpochLoader` yields an epoch's minibatches)
      and `training_step` runs the minibatch loop itself (1.45 ms/epoch in the prototype);
    - it steps the *raw* torch optimizer's state (`self.raw_optimizer`), not Lightning's
      wrapper, with gradients computed by hand (`mlpsweep.step`), not `manual_backward`;
    - `__setattr__` short-cuts one attribute Lightning writes ~30 times an epoch (~0.1 ms).

    What follows, pinned by `tests/test_training.py` so that a change is deliberate:

    - `trainer.global_step` stays 0 (it counts wrapper steps); epochs are the clock, and
      every logged x axis is the epoch count;
    - the hooks `on_before_backward`, `on_after_backward`, `on_before_optimizer_step` and
      `on_before_zero_grad` never fire, so gradient-norm logging or clipping does nothing;
    - a learning-rate scheduler returned from `configure_optimizers` is never stepped
      (manual optimisation), and `LearningRateMonitor` records nothing at all;
    - the run is CPU-only (`accelerator="cpu"`, float32): the config has no accelerator,
      devices or precision key, and setting one is refused as an unknown key.

    To add any of those, step the Lightning optimizer and call `manual_backward` per
    minibatch, and pay the per-step cost above.
    """

    def __init__(
        self,
        *,
        hidden: int,
        layers: int,
        lr: float,
        ensemble: int,
        fused_adam: bool,
        x_shift: float = 0.0,
        x_scale: float = 1.0,
        fit_val_acc: float = FIT_VAL_ACC,
        stop_val_acc: float | None = None,
    ) -> None:
        """`x_shift`/`x_scale` standardise raw x (the data module's; identity by default).

        `fit_val_acc` is the fit definition's val/acc bar (`mlpsweep.fit_rule`, logged as
        `fit_rate`); `stop_val_acc`, when set, is the bar of the stop rule (`stop_fit_rate`,
        which `training.stop_when_fit` watches; not written to TensorBoard).
        """
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        # the canonical layout (`mlpsweep.layout`): what a batch of trials computes this trial at
        for weight, bias in layout.canonical(draw_members(hidden, layers, ensemble), hidden):
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))
        self.epoch_losses = torch.empty(0)
        self.member_metrics: dict[str, list[float]] = {}
        # (epoch, members' mean val/loss), one per validation
        self.val_history: list[tuple[int, float]] = []
        self.epochs_trained = 0
        # per member, the validation epoch at which it fit by the stop rule (None: not yet)
        self.fit_epochs: list[int | None] = [None] * ensemble
        self.frozen: FrozenMembers | None = None
        # the compiled step's address arrays, kept while they point at the model's tensors
        self.step_kernel: step.StepKernel | None = None
        self.resumed_exit_losses: torch.Tensor | None = None  # from a checkpoint's "mlpsweep"

    @property
    def ensemble(self) -> int:
        return int(self.hparams.ensemble)

    @property
    def parameter_count(self) -> int:
        """Trainable parameters of one member (the architecture's size, not K times it)."""
        return parameter_count(self.hparams.hidden, self.hparams.layers)

    def layer_pairs(self) -> tuple[tuple[nn.Parameter, nn.Parameter], ...]:
        """(weight, bias) per layer in the canonical layout (`mlpsweep.layout`: hidden units
        padded to a multiple of 16 with dead units); built once per epoch, not per step."""
        return tuple(zip(self.weights, self.biases, strict=True))

    def real_layers(self) -> Layers:
        """Every member's weights and biases at the real width, (K, in, out) and (K, 1, out):
        the network a person means by `hidden` units, without the layout's padding."""
        pairs = [(w.detach(), b.detach()) for w, b in self.layer_pairs()]
        return layout.real_units(pairs, self.hparams.hidden)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """x (N, 1), already standardised -> probabilities (K, N, 1), one row per member."""
        return propagate(inputs, self.layer_pairs(), self.ensemble)

    def predict_raw(self, raw_x: torch.Tensor) -> torch.Tensor:
        """Probabilities for x on the data's own scale (what the plots and users pass)."""
        return self((raw_x - self.hparams.x_shift) / self.hparams.x_scale)

    def member_losses(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each member's mean BCE on (x, y): shape (K,)."""
        prob = self(inputs)
        target = labels.expand_as(prob)
        return F.binary_cross_entropy(prob, target, reduction="none").mean(dim=(1, 2))

    def member_accuracy(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each member's accuracy at threshold 0.5: shape (K,)."""
        hits = (self(inputs) > 0.5).to(labels.dtype) == labels.expand(self.ensemble, -1, -1)
        return hits.to(torch.float32).mean(dim=(1, 2))

    # ---- training -------------------------------------------------------------------

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, fused=self.hparams.fused_adam
        )

    def on_train_start(self) -> None:
        self.raw_optimizer = self.optimizers().optimizer  # skip the wrapper in the hot loop
        resumed = self.epoch_losses[: self.epochs_trained]  # a checkpoint's epochs, or none
        self.epoch_losses = torch.full((self.trainer.max_epochs, self.ensemble), math.nan)
        if self.epochs_trained:
            self.epoch_losses[: self.epochs_trained] = resumed

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The loss curve and validations so far: Lightning saves weights, optimizer and loops,
        but this state lives outside them (the hot loop writes a buffer, not the logger)."""
        checkpoint["mlpsweep"] = {
            "epoch_losses": self.epoch_losses[: self.epochs_trained].clone(),
            "val_history": list(self.val_history),
            "member_metrics": dict(self.member_metrics),
            "epochs_trained": self.epochs_trained,
            "fit_epochs": list(self.fit_epochs),
            "exit_losses": self.frozen.losses.clone() if self.frozen else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A resumed run (`trainer.fit(ckpt_path=...)`) continues the curve it had."""
        state = checkpoint.get("mlpsweep")
        if state:
            self.epoch_losses = state["epoch_losses"]
            self.val_history = [tuple(entry) for entry in state["val_history"]]
            self.member_metrics = dict(state["member_metrics"])
            self.epochs_trained = int(state["epochs_trained"])
            self.fit_epochs = list(state.get("fit_epochs", self.fit_epochs))
            self.resumed_exit_losses = state.get("exit_losses")

    def training_step(self, minibatches: Minibatches, batch_idx: int) -> None:
        """One epoch: the tutorial's minibatch loop over all members at once.

        Each step is `mlpsweep.step`'s hand-written forward, BCE, backward and Adam, as a
        batch of trials runs it, so a trial trains here exactly as it does in a batch. The
        gradient is that of the sum of the members' mean BCE, so each member's is its own;
        the epoch's loss is the members' BCE summed over the epoch's points, over the points.
        """
        layers = self.layer_pairs()
        groups, params = [(layers, self.ensemble)], step.parameters(layers)
        kernel = self.step_kernel
        if kernel is None or not kernel.points_at(params, self.raw_optimizer):
            kernel = self.step_kernel = step.StepKernel(groups, params, self.raw_optimizer)
        total = torch.zeros(self.ensemble)
        points = 0
        with torch.no_grad():
            for inputs, labels in minibatches:
                try:
                    total += kernel.step(inputs, labels)
                except step.NonFiniteProbabilities as error:
                    raise self.non_finite(self.current_epoch) from error
                except step.AdamOverflowError as error:
                    raise self.step_overflow() from error
                points += inputs.shape[0]
        self.epoch_losses[self.current_epoch] = total / points
        self.epochs_trained = self.current_epoch + 1
        if self.frozen is None and any(epoch is not None for epoch in self.fit_epochs):
            self.frozen = FrozenMembers.of(self, self.resumed_exit_losses)
        if self.frozen is not None:
            self.frozen.restore(self, self.current_epoch)

    def freeze_fitted(self, fitted: list[int]) -> None:
        """Members that fit by the stop rule stop training, as they leave a batch of trials
        (`BatchTrainer.depart`): their weights and Adam state are put back after every
        epoch and their loss stays their loss at exit. They are still computed with the
        others (a run alone is one small network; a batch is where the saving counts), and
        since a member's kernels do not depend on its neighbours (`mlpsweep.layout`), the
        others train exactly as in a batch that let them go."""
        epoch = self.epochs_trained
        for member in fitted:
            self.fit_epochs[member] = epoch
        self.frozen = FrozenMembers.of(self, self.frozen.losses if self.frozen else None)

    def step_overflow(self, epoch: int | None = None) -> NonFiniteLossError:
        """A step too large for float32 ends the run like a non-finite loss.

        The fused Adam writes inf into the weights (the next loss is NaN), but the
        per-tensor one refuses a step size beyond float32's range (lr / (1 - beta1) at
        the first step, so lr >= 3.4e37) with a RuntimeError deep inside torch.
        """
        return NonFiniteLossError(
            f"the Adam step overflowed float32 at epoch "
            f"{self.current_epoch if epoch is None else epoch}; "
            f"lower model.lr (now {self.hparams.lr})"
        )

    def non_finite(self, epoch: int) -> NonFiniteLossError:
        return NonFiniteLossError(
            f"training loss became non-finite at epoch {epoch}; "
            f"lower model.lr (now {self.hparams.lr}) or check the data"
        )

    def __setattr__(self, name: str, value: object) -> None:
        """Lightning records the running hook's name on the module ~30 times an epoch;
        `nn.Module.__setattr__` checks every write against parameters, buffers and
        submodules, which a string never is. A plain write for it saves ~0.1 ms/epoch."""
        if name == "_current_fx_name":
            self.__dict__[name] = value
            return
        super().__setattr__(name, value)

    # ---- validation -----------------------------------------------------------------

    def validation_step(self, batch: dict[str, Batch], batch_idx: int) -> None:
        """Members' loss and accuracy on the grid, their accuracy on the training points."""
        val_x, val_y = batch["val"]
        train_x, train_y = batch["train"]
        per_member = {
            "val/loss": self.member_losses(val_x, val_y),
            "val/acc": self.member_accuracy(val_x, val_y),
            "train/acc": self.member_accuracy(train_x, train_y),
        }
        if self.epochs_trained:  # also right for trainer.validate() after fit
            per_member["train/loss"] = self.epoch_losses[self.epochs_trained - 1]
        self.member_metrics = {key: values.tolist() for key, values in per_member.items()}
        if self.hparams.stop_val_acc is not None and self.fitting():
            fitting = member_fits(
                per_member["train/acc"], per_member["val/acc"], self.hparams.stop_val_acc
            )
            fitted = [
                member
                for member in fitting.nonzero().flatten().tolist()
                if self.fit_epochs[member] is None
            ]
            if fitted:
                self.freeze_fitted(fitted)
        self.val_history.append((self.current_epoch + 1, self.metric_means()["val/loss"]))
        points = val_x.shape[0]
        # x axis = epochs done, as for the per-epoch loss curve and the pictures
        # (not Lightning's step - 1)
        self.log("step", float(self.current_epoch + 1), batch_size=points)
        fit_rate = self.fit_rate(per_member, self.hparams.fit_val_acc)
        self.log("fit_rate", fit_rate, batch_size=points)
        if self.hparams.stop_val_acc is not None:
            stop_rate = self.fit_rate(per_member, self.hparams.stop_val_acc)
            self.log("stop_fit_rate", stop_rate, batch_size=points, logger=False)
        for key, values in per_member.items():
            # the per-epoch train/loss curve is LossCurveLogger's: a copy here would land out
            # of step order
            self.log(key, values.mean(), batch_size=points, logger=key != "train/loss")
            if self.ensemble > 1:
                self.log(f"{key}_min", values.min(), batch_size=points)
                self.log(f"{key}_max", values.max(), batch_size=points)
                self.log(f"{key}_std", values.std(), batch_size=points)

    def fitting(self) -> bool:
        """Whether a Trainer is fitting this model now (not `trainer.validate`, not a test
        calling `validation_step` by hand)."""
        trainer = getattr(self, "_trainer", None)
        return trainer is not None and trainer.state.fn == "fit"

    @staticmethod
    def fit_rate(per_member: dict[str, torch.Tensor], val_acc_bar: float) -> torch.Tensor:
        """The share of members that fit (`mlpsweep.fit_rule`): train/acc 1 and val/acc >= bar."""
        fits = member_fits(per_member["train/acc"], per_member["val/acc"], val_acc_bar)
        return fits.to(torch.float32).mean()

    def finished_epoch_losses(self, from_epoch: int, until_epoch: int) -> torch.Tensor:
        """Members' mean per-epoch loss for epochs [from_epoch, until_epoch), raising on NaN/inf.

        Only the new chunk is checked and averaged: over the whole curve at every flush, a
        7000-epoch run did quadratic work (12% of a batch of trials' time)."""
        losses = self.epoch_losses[from_epoch:until_epoch]
        finite = torch.isfinite(losses)
        if not finite.all():
            raise self.non_finite(from_epoch + int((~finite).any(dim=1).nonzero()[0]))
        return losses.mean(dim=1)

    @property
    def last_validated_epoch(self) -> int:
        return self.val_history[-1][0] if self.val_history else 0

    def metric_means(self) -> dict[str, float]:
        """The last validation's metrics as members' means (what HParams and titles show)."""
        return {key: sum(values) / len(values) for key, values in self.member_metrics.items()}


class FrozenMembers:
    """The members of a run that fit and left: their rows of every parameter and of Adam's
    moments, and their per-epoch loss at exit, written back after each epoch."""

    def __init__(
        self,
        rows: torch.Tensor,
        params: list[torch.Tensor],
        moments: list[tuple[torch.Tensor, torch.Tensor] | None],
        losses: torch.Tensor,
    ) -> None:
        self.rows, self.params, self.moments, self.losses = rows, params, moments, losses

    @classmethod
    def of(cls, model: MLP, earlier_losses: torch.Tensor | None) -> FrozenMembers:
        """A snapshot of `model`'s members with a fit epoch, now; a member frozen before keeps
        its loss at exit (`earlier_losses`, over the ensemble)."""
        rows = torch.tensor([m for m, at in enumerate(model.fit_epochs) if at is not None])
        state = model.raw_optimizer.state if hasattr(model, "raw_optimizer") else {}
        params = [param.detach()[rows].clone() for param in model.parameters()]
        moments = [
            (state[p]["exp_avg"][rows].clone(), state[p]["exp_avg_sq"][rows].clone())
            if p in state and "exp_avg" in state[p]
            else None
            for p in model.parameters()
        ]
        last = model.epoch_losses[max(model.epochs_trained - 1, 0)].clone()
        if earlier_losses is not None:
            known = ~torch.isnan(earlier_losses)
            last[known] = earlier_losses[known]
        losses = torch.full((model.ensemble,), math.nan)
        losses[rows] = last[rows]
        return cls(rows, params, moments, losses)

    def restore(self, model: MLP, epoch: int) -> None:
        """Put the frozen members back as they left, and their loss at exit into `epoch`."""
        state = model.raw_optimizer.state
        with torch.no_grad():
            for param, saved, moments in zip(
                model.parameters(), self.params, self.moments, strict=True
            ):
                param[self.rows] = saved
                if moments is not None and param in state:
                    state[param]["exp_avg"][self.rows] = moments[0]
                    state[param]["exp_avg_sq"][self.rows] = moments[1]
        model.epoch_losses[epoch, self.rows] = self.losses[self.rows]
