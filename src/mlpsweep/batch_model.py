"""Many trials' MLPs trained as one network: the per-operation overhead is paid once per batch.

A trial is (hidden, layers, ensemble K, seed); its K members become members of one batched
network, as `MLP` already does for one trial's ensemble. Trials of equal depth and equal
canonical width (`layout.canonical_width`: hidden rounded up to a multiple of 16) share one
*group*, each trial in the layout `MLP` holds it in alone (`mlpsweep.layout`), so every
kernel computes a member the same way in any batch as alone: bit for bit, which is what a
chaotic net needs for its numbers to be its own (`tests/test_layout.py`). A padded unit's
weights start at exactly 0 and its bias at -inf, so its sigmoid is exactly 0 whatever its
input: it feeds nothing forward, and since sigmoid's derivative at 0 output is 0, it
receives no gradient. Every gradient reaching padding is therefore exactly 0, and Adam is
elementwise (zero gradient and zero state give a zero update), so padding stays 0 and -inf.

No Lightning here: a batch of trials, each with its own exits, is a small hand-written loop
(see `batch_training`); Lightning keeps driving single runs. Each step is `mlpsweep.step`'s,
as in `MLP.training_step`, so each member trains exactly as it would alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from mlpsweep import layout, step
from mlpsweep.data import Minibatches
from mlpsweep.model import Layers, draw_members


@dataclass(frozen=True)
class TrialSpec:
    """What makes a trial's network: its architecture, ensemble size and seed."""

    hidden: int
    layers: int
    ensemble: int
    seed: int


class StepOverflow(RuntimeError):
    """Adam's step left float32's range (the per-tensor Adam refuses it; see
    `MLP.step_overflow`). The learning rate is the batch's, so every trial is hit."""


class TrialsDiverged(Exception):
    """These trials' probabilities turned NaN in a step's forward pass (no weight moved)."""

    def __init__(self, trials: list[int]) -> None:
        super().__init__(f"trials {trials} diverged")
        self.trials = trials


@dataclass(frozen=True)
class StepPlan:
    """What every step of a batch needs from its depth groups, taken once per change of the
    batch (its start and each departure), not once per minibatch: each group's (weight, bias)
    pairs and member count, and all parameters in the order their gradients come."""

    groups: tuple[tuple[tuple[tuple[nn.Parameter, nn.Parameter], ...], int], ...]
    params: tuple[nn.Parameter, ...]
    adam_lists: step.FusedAdamLists | None
    kernel: step.StepKernel | None

    @classmethod
    def of(cls, groups: Sequence[DepthGroup], optimizer: torch.optim.Adam | None) -> StepPlan:
        pairs = tuple((group.layer_pairs(), group.size) for group in groups)
        params = tuple(param for layers, _ in pairs for param in step.parameters(layers))
        if optimizer is None:
            return cls(pairs, params, None, None)
        lists = step.fused_adam_lists(optimizer, params)
        return cls(pairs, params, lists, step.StepKernel(pairs, params, optimizer, lists))


@dataclass(frozen=True)
class EpochLosses:
    """One epoch's result: the mean loss of every member still in the batch (batch order),
    and the trials whose probabilities became NaN during it (already removed)."""

    losses: torch.Tensor
    diverged: tuple[int, ...]


def rows_of(tensor: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The members `rows` of `tensor` (a fresh, contiguous copy)."""
    return tensor.index_select(0, rows).contiguous()


def initial_members(spec: TrialSpec) -> Layers:
    """The trial's members drawn exactly as a run alone draws them (`training.build`): seed
    everything, then draw (the data module built in between draws nothing)."""
    pl.seed_everything(spec.seed, workers=False, verbose=False)
    return draw_members(spec.hidden, spec.layers, spec.ensemble)


class DepthGroup(nn.Module):
    """The trials of one depth and one canonical width, each in the canonical layout (as `MLP`
    holds it): weights (M, in, out), biases (M, 1, out), M = all members of its trials, trial
    by trial, member by member."""

    def __init__(
        self,
        depth: int,
        trials: Sequence[tuple[int, TrialSpec, Layers]],
    ) -> None:
        super().__init__()
        self.depth = depth
        self.trial_ids = [trial_id for trial_id, _, _ in trials]
        self.hidden = [spec.hidden for _, spec, _ in trials]
        # per trial, the members (indices into its ensemble) still training, in row order
        self.member_index = [list(range(spec.ensemble)) for _, spec, _ in trials]
        widths = {layout.canonical_width(hidden) for hidden in self.hidden}
        if len(widths) != 1:
            raise ValueError(f"a group holds one canonical width, not {sorted(widths)}")
        self.width = widths.pop()
        drawn = [layout.canonical(layers, spec.hidden) for _, spec, layers in trials]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.cat([layers[layer][0] for layers in drawn]))
            for layer in range(depth + 1)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.cat([layers[layer][1] for layers in drawn]))
            for layer in range(depth + 1)
        )

    @property
    def members(self) -> list[int]:
        """Members still training, per trial."""
        return [len(indices) for indices in self.member_index]

    @property
    def size(self) -> int:
        return sum(self.members)

    def layer_pairs(self) -> tuple[tuple[nn.Parameter, nn.Parameter], ...]:
        """(weight, bias) per layer, as `MLP.layer_pairs`."""
        return tuple(zip(self.weights, self.biases, strict=True))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """x (N, 1) -> (M, N, 1), as `model.propagate`."""
        return step.forward(inputs, self.layer_pairs(), self.size)[-1]

    def rows(self, trial_id: int) -> slice:
        """The trial's members within this group."""
        at = self.trial_ids.index(trial_id)
        start = sum(self.members[:at])
        return slice(start, start + self.members[at])

    def trial_state_dict(self, trial_id: int) -> dict[str, torch.Tensor]:
        """The trial's weights under MLP's keys and in MLP's (canonical) shapes."""
        rows = self.rows(trial_id)
        state = {}
        for layer in range(self.depth + 1):
            state[f"weights.{layer}"] = self.weights[layer].detach()[rows].clone()
            state[f"biases.{layer}"] = self.biases[layer].detach()[rows].clone()
        return state

    def keep(
        self, leaving: set[tuple[int, int]], optimizer_state: dict[nn.Parameter, dict]
    ) -> bool:
        """Drop the `leaving` members ((trial id, member index) pairs) from the parameters and
        their Adam state; a trial with no member left goes. False when no trial is left. The
        width stays: it is every trial's canonical one."""
        rows: list[int] = []
        trial_ids, hidden, member_index = [], [], []
        row = 0
        for trial_id, width, indices in zip(
            self.trial_ids, self.hidden, self.member_index, strict=True
        ):
            kept = []
            for member in indices:
                if (trial_id, member) not in leaving:
                    rows.append(row)
                    kept.append(member)
                row += 1
            if kept:
                trial_ids.append(trial_id)
                hidden.append(width)
                member_index.append(kept)
        if not rows:
            return False
        self.trial_ids, self.hidden, self.member_index = trial_ids, hidden, member_index
        kept_rows = torch.tensor(rows)
        # New Parameter objects rather than a shape change under `.data`: autograd caches a
        # leaf's shape in its gradient accumulator, which a live graph would keep stale.
        self.weights = self.narrowed(self.weights, kept_rows, optimizer_state)
        self.biases = self.narrowed(self.biases, kept_rows, optimizer_state)
        return True

    @staticmethod
    def narrowed(
        params: nn.ParameterList,
        rows: torch.Tensor,
        optimizer_state: dict[nn.Parameter, dict],
    ) -> nn.ParameterList:
        """`params` cut to `rows`; their Adam state moves with them."""
        kept = nn.ParameterList()
        for param in params:
            kept.append(nn.Parameter(rows_of(param.detach(), rows)))
            state = optimizer_state.pop(param, None)
            if state is not None:  # `step` is shared: every trial of a batch started together
                optimizer_state[kept[-1]] = {
                    key: rows_of(value, rows) if key in ("exp_avg", "exp_avg_sq") else value
                    for key, value in state.items()
                }
        return kept


class BatchedMLP(nn.Module):
    """Several trials' ensembles as one network with one Adam; trials are numbered by their
    position in `trials`, and keep that number while others leave."""

    def __init__(self, trials: Sequence[TrialSpec], lr: float, fused_adam: bool = True) -> None:
        super().__init__()
        if not trials:
            raise ValueError("a batch needs at least one trial")
        self.specs = list(trials)
        self.lr, self.fused_adam = lr, fused_adam
        drawn = [
            (trial_id, spec, initial_members(spec)) for trial_id, spec in enumerate(self.specs)
        ]
        self.groups = nn.ModuleList(
            DepthGroup(depth, [t for t in drawn if group_key(t[1]) == (depth, width)])
            for depth, width in sorted({group_key(spec) for spec in self.specs})
        )
        firsts = torch.tensor([0] + [spec.ensemble for spec in self.specs]).cumsum(0).tolist()
        self.first_member = firsts[:-1]  # a trial's first member id, in the original trial order
        self.optimizer: torch.optim.Adam | None = self.new_optimizer({})
        self.member_ids = self.current_member_ids()
        self.plan = StepPlan.of(self.groups, self.optimizer)

    # ---- who is where ----------------------------------------------------------------

    @property
    def active_trials(self) -> list[int]:
        """Trials still in the batch, in batch order (by depth and width, then by number)."""
        return [trial_id for group in self.groups for trial_id in group.trial_ids]

    @property
    def members(self) -> int:
        return sum(group.size for group in self.groups)

    def current_member_ids(self) -> torch.Tensor:
        """For each member in batch order, its id in the original order: trial by trial,
        member by member, ids [first_member[t], first_member[t] + K)."""
        ids = [
            self.first_member[trial_id] + member
            for group in self.groups
            for trial_id, indices in zip(group.trial_ids, group.member_index, strict=True)
            for member in indices
        ]
        return torch.tensor(ids, dtype=torch.long)

    def group_of(self, trial_id: int) -> DepthGroup:
        for group in self.groups:
            if trial_id in group.trial_ids:
                return group
        raise KeyError(f"trial {trial_id} is not in the batch")

    def trial_rows(self, trial_id: int) -> slice:
        """The trial's members in batch order (rows of `forward`'s and `train_epoch`'s output)."""
        offset = 0
        for group in self.groups:
            if trial_id in group.trial_ids:
                rows = group.rows(trial_id)
                return slice(offset + rows.start, offset + rows.stop)
            offset += group.size
        raise KeyError(f"trial {trial_id} is not in the batch")

    def member_indices(self, trial_id: int) -> list[int]:
        """The trial's members still training (indices into its ensemble), in row order."""
        group = self.group_of(trial_id)
        return list(group.member_index[group.trial_ids.index(trial_id)])

    def trial_state_dict(
        self, trial_id: int, departed: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """The trial's own weights, every member of its ensemble: loadable by
        `MLP.load_state_dict`. Once members have left (`remove_members`), `departed` is a
        state of the whole ensemble holding theirs (an earlier result of this call)."""
        active = self.group_of(trial_id).trial_state_dict(trial_id)
        indices = self.member_indices(trial_id)
        if indices == list(range(self.specs[trial_id].ensemble)):
            return active
        if departed is None:
            raise ValueError(f"members of trial {trial_id} have left: pass their state")
        merged = {key: value.clone() for key, value in departed.items()}
        for key, value in active.items():
            merged[key][indices] = value
        return merged

    # ---- computing ---------------------------------------------------------------------

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """x (N, 1), already standardised -> probabilities (M, N, 1) in batch order."""
        outputs = [group(inputs) for group in self.groups]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def new_optimizer(self, carried: dict[nn.Parameter, dict]) -> torch.optim.Adam:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr, fused=self.fused_adam)
        for param in self.parameters():
            if param in carried:
                optimizer.state[param] = carried[param]
        return optimizer

    def train_epoch(self, minibatches: Minibatches) -> EpochLosses:
        """One epoch of the tutorial's minibatch loop over every member at once.

        Each step is `mlpsweep.step`'s, as in `MLP.training_step`, so each member's gradient
        is its own, and nothing waits on `.item()`. BCE refuses NaN probabilities for the
        whole batch; the trials that produced them leave at once and the minibatch is run
        again for the others (no weight moved before the loss).
        """
        total, points, diverged = torch.zeros(self.members), 0, []
        with torch.no_grad():
            for inputs, labels in minibatches:
                sums = None
                while sums is None and self.optimizer is not None:
                    try:
                        sums = self.train_step(inputs, labels)
                    except TrialsDiverged as error:
                        total = total[self.rows_kept(error.trials)]
                        self.remove(error.trials)
                        diverged += error.trials
                if sums is None:  # every trial has left
                    break
                total += sums
                points += inputs.shape[0]
        return EpochLosses(total / max(points, 1), tuple(diverged))

    def train_step(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One minibatch step of every trial (`step.train_step`): the members' loss sums, batch
        order. Raises `TrialsDiverged`, having moved no weight, when some trials'
        probabilities are NaN."""
        try:
            return step.train_step(
                inputs,
                labels,
                self.plan.groups,
                self.plan.params,
                self.optimizer,
                self.plan.adam_lists,
                self.plan.kernel,
            )
        except step.NonFiniteProbabilities as error:
            leaving = self.non_finite_trials(error.prob)
            if not leaving:  # NaN outside every trial's rows cannot be: a bug, not a divergence
                raise
            raise TrialsDiverged(leaving) from None
        except step.AdamOverflowError as error:
            raise StepOverflow(str(error)) from error

    def non_finite_trials(self, prob: torch.Tensor) -> list[int]:
        """Trials with a member whose probabilities are not all finite."""
        bad = ~torch.isfinite(prob).all(dim=2).all(dim=1)
        return [t for t in self.active_trials if bad[self.trial_rows(t)].any()]

    def rows_kept(self, leaving: Iterable[int]) -> torch.Tensor:
        """Boolean mask over batch order: the members that stay when `leaving` goes."""
        keep = torch.ones(self.members, dtype=torch.bool)
        for trial_id in leaving:
            keep[self.trial_rows(trial_id)] = False
        return keep

    @torch.no_grad()
    def member_metrics(
        self, val_x: torch.Tensor, val_y: torch.Tensor, train_x: torch.Tensor, train_y: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per member, batch order: val/loss and val/acc on the grid, train/acc on the training
        points, computed as `MLP.member_losses` and `MLP.member_accuracy` do."""
        val_prob, train_prob = self(val_x), self(train_x)
        return {
            "val/loss": F.binary_cross_entropy(
                val_prob, val_y.expand_as(val_prob), reduction="none"
            ).mean(dim=(1, 2)),
            "val/acc": accuracy(val_prob, val_y),
            "train/acc": accuracy(train_prob, train_y),
        }

    # ---- leaving -----------------------------------------------------------------------

    def remove(self, trial_ids: Iterable[int]) -> None:
        """Trials leave: their members leave the parameters and Adam's state, and empty
        groups go."""
        leaving = set(trial_ids)
        unknown = leaving - set(self.active_trials)
        if unknown:
            raise KeyError(f"trials {sorted(unknown)} are not in the batch")
        if not leaving:
            return
        self.drop({(t, m) for t in leaving for m in self.member_indices(t)})

    def remove_members(self, member_ids: Iterable[int]) -> None:
        """Members leave (ids in the original order, as `member_ids` holds them): their
        weights and Adam state leave the batch; a trial whose last member leaves goes."""
        member_ids = list(member_ids)
        trial_of = {
            self.first_member[t] + m: (t, m)
            for t in self.active_trials
            for m in self.member_indices(t)
        }
        unknown = [member for member in member_ids if member not in trial_of]
        if unknown:
            raise KeyError(f"members {sorted(unknown)} are not in the batch")
        if trial_of and member_ids:
            self.drop({trial_of[member] for member in member_ids})

    def drop(self, leaving: set[tuple[int, int]]) -> None:
        """Take the (trial, member) pairs out of every group, the optimizer and the plan."""
        carried = dict(self.optimizer.state)
        self.groups = nn.ModuleList(group for group in self.groups if group.keep(leaving, carried))
        self.optimizer = self.new_optimizer(carried) if self.groups else None
        self.member_ids = self.current_member_ids()
        self.plan = StepPlan.of(self.groups, self.optimizer)


def group_key(spec: TrialSpec) -> tuple[int, int]:
    """The group a trial trains in: its depth and canonical width."""
    return spec.layers, layout.canonical_width(spec.hidden)


def accuracy(prob: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each member's accuracy at threshold 0.5, as `MLP.member_accuracy`: shape (M,)."""
    hits = (prob > 0.5).to(labels.dtype) == labels.expand(prob.shape[0], -1, -1)
    return hits.to(torch.float32).mean(dim=(1, 2))
