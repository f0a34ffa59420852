"""Trials batched into one padded network train exactly as they would alone: same initial
weights, same losses, padding that stays inert (weights 0, biases -inf, Adam moments 0), and
leaving without disturbing the rest."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from mlpsweep.batch_model import BatchedMLP, TrialSpec
from mlpsweep.data import PiecewiseDataModule
from mlpsweep.layout import OUTPUT_BIAS_SLOTS
from mlpsweep.layout import hidden_dims as width_dims
from mlpsweep.model import MLP
from mlpsweep.training import build

LR = 0.01
# Mixed widths, depths, ensemble sizes and seeds; depth 1 holds two widths, depth 3 one trial.
MIXED = (
    TrialSpec(hidden=3, layers=1, ensemble=2, seed=0),
    TrialSpec(hidden=7, layers=1, ensemble=1, seed=1),
    TrialSpec(hidden=5, layers=2, ensemble=2, seed=2),
    TrialSpec(hidden=4, layers=2, ensemble=1, seed=3),
    TrialSpec(hidden=2, layers=3, ensemble=1, seed=4),
)


# training runs on one thread, as `trainer.threads=1` (conftest's fixture)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> PiecewiseDataModule:
    return PiecewiseDataModule(
        batch_size=32, shuffle=False, normalize=True, val_points=1000, seed=0
    )


def minibatches(data: PiecewiseDataModule):
    return next(iter(data.train_dataloader()))


def alone(spec: TrialSpec, lr: float = LR) -> MLP:
    pl.seed_everything(spec.seed, workers=False, verbose=False)
    return MLP(
        hidden=spec.hidden, layers=spec.layers, ensemble=spec.ensemble, lr=lr, fused_adam=True
    )


def train_alone(model: MLP, data: PiecewiseDataModule, epochs: int) -> torch.Tensor:
    """`MLP.training_step` itself, outside Lightning: per-epoch, per-member mean losses."""
    model.raw_optimizer = model.configure_optimizers()
    model.epoch_losses = torch.full((1, model.ensemble), float("nan"))  # epoch 0 without a trainer
    losses = []
    for _ in range(epochs):
        model.training_step(minibatches(data), 0)
        losses.append(model.epoch_losses[0].clone())
    return torch.stack(losses)


def train_batch_epochs(
    batch: BatchedMLP, data: PiecewiseDataModule, epochs: int
) -> list[torch.Tensor]:
    return [batch.train_epoch(minibatches(data)).losses for _ in range(epochs)]


def padded_entries(batch: BatchedMLP) -> dict[str, list[torch.Tensor]]:
    """Every entry that belongs to a padded unit, by kind: weights, biases, Adam moments."""
    entries: dict[str, list[torch.Tensor]] = {"weights": [], "biases": [], "moments": []}
    for group in batch.groups:
        real = torch.cat([  # (M, width): each member's real units
            (torch.arange(group.width) < hidden).expand(members, -1)
            for hidden, members in zip(group.hidden, group.members, strict=True)
        ])
        for layer in range(group.depth + 1):
            for param, kind in ((group.weights[layer], "weights"), (group.biases[layer], "biases")):
                state = batch.optimizer.state.get(param, {})
                tensors = [(kind, param.detach())] + [
                    ("moments", state[k]) for k in ("exp_avg", "exp_avg_sq") if k in state
                ]
                for tensor_kind, tensor in tensors:
                    for dim in width_dims(layer, group.depth, kind == "weights"):
                        shape = [group.size, 1, 1]
                        shape[dim] = group.width
                        padded = ~real.view(*shape).expand_as(tensor)
                        entries[tensor_kind].append(tensor[padded])
    return entries


def assert_padding_inert(entries: dict[str, list[torch.Tensor]]) -> None:
    """Padded weights and moments exactly 0, padded biases exactly -inf."""
    for kind, expected in (("weights", 0.0), ("biases", float("-inf")), ("moments", 0.0)):
        for entry in entries[kind]:
            assert torch.equal(entry, torch.full_like(entry, expected)), (kind, entry)


def test_every_trial_starts_from_the_weights_it_would_draw_alone(make_cfg):
    batch = BatchedMLP(MIXED, LR)
    for trial_id, spec in enumerate(MIXED):
        _, model = build(make_cfg(f"model.hidden={spec.hidden}", f"model.layers={spec.layers}",
                                  f"model.ensemble={spec.ensemble}", f"seed={spec.seed}"))
        reference = model.state_dict()
        ours = batch.trial_state_dict(trial_id)
        assert ours.keys() == reference.keys()
        for key, tensor in reference.items():
            assert ours[key].shape == tensor.shape, key
            assert torch.equal(ours[key], tensor), f"trial {trial_id} {key}"


def test_padding_starts_inert_and_a_group_holds_one_depth_at_one_canonical_width():
    batch = BatchedMLP(MIXED, LR)
    assert [(g.depth, g.width, g.size) for g in batch.groups] == [
        (1, 16, 3), (2, 16, 3), (3, 16, 1)
    ]
    assert batch.groups[0].weights[0].shape == (3, 1, 16)
    assert batch.groups[1].weights[1].shape == (3, 16, 16)
    assert batch.groups[1].weights[2].shape == (3, 16, 1)
    assert batch.groups[1].biases[2].shape == (3, 1, OUTPUT_BIAS_SLOTS)
    split = BatchedMLP([MIXED[0], TrialSpec(hidden=20, layers=1, ensemble=2, seed=9)], LR)
    assert [(g.depth, g.width, g.size) for g in split.groups] == [(1, 16, 2), (1, 32, 2)]
    entries = padded_entries(batch)
    assert sum(e.numel() for e in entries["weights"]) > 0
    assert sum(e.numel() for e in entries["biases"]) > 0
    assert_padding_inert(entries)


def test_a_padded_units_weights_stay_exactly_zero_after_training(data):
    batch = BatchedMLP(MIXED, lr=0.1)  # large steps: any leak into the padding would show
    train_batch_epochs(batch, data, 30)
    entries = padded_entries(batch)
    assert sum(e.numel() for e in entries["weights"]) > 20
    assert sum(e.numel() for e in entries["moments"]) > 50
    assert_padding_inert(entries)
    moved = batch.trial_state_dict(2)["weights.1"]
    assert not torch.equal(moved, alone(MIXED[2]).weights[1].detach()), "the real weights did train"


def test_each_trials_losses_in_a_mixed_batch_match_the_trial_trained_alone(data):
    epochs, lr = 200, 0.05  # 800 Adam steps of a size that moves every trial's loss
    batch = BatchedMLP(MIXED, lr)
    # (epochs, members) in batch order
    batched = torch.stack(train_batch_epochs(batch, data, epochs))
    for trial_id, spec in enumerate(MIXED):
        own = batched[:, batch.trial_rows(trial_id)]
        reference = train_alone(alone(spec, lr), data, epochs)
        assert torch.equal(own, reference), f"trial {trial_id}: {(own - reference).abs().max()}"
        assert (reference[0] - reference[-1]).min() > 0.02, "the comparison is over real training"


def test_losses_come_back_in_batch_order_and_member_ids_map_them_to_trial_order():
    batch = BatchedMLP(MIXED, LR)
    # trial order: 2 + 1 + 2 + 1 + 1 members; batch order is by depth, then trial number
    assert batch.member_ids.tolist() == [0, 1, 2, 3, 4, 5, 6]
    reordered = BatchedMLP([MIXED[4], MIXED[0], MIXED[2]], LR)
    assert reordered.active_trials == [1, 2, 0]
    assert reordered.member_ids.tolist() == [1, 2, 3, 4, 0]
    assert reordered.trial_rows(0) == slice(4, 5)


def test_removing_trials_does_not_perturb_the_others_and_frees_their_members(data):
    # Trial 1 leaves a group that goes on; trial 4 is alone at depth 3, and its group goes.
    full = BatchedMLP(MIXED, LR)
    kept = (0, 2, 3)
    never = BatchedMLP([MIXED[i] for i in kept], LR)
    for _ in range(30):
        full.train_epoch(minibatches(data))
        never.train_epoch(minibatches(data))
    parameters_before = sum(p.numel() for p in full.parameters())
    full.remove([1, 4])
    assert full.active_trials == list(kept)
    assert [(g.depth, g.width, g.size) for g in full.groups] == [(1, 16, 2), (2, 16, 3)]
    assert sum(p.numel() for p in full.parameters()) < parameters_before
    for param in full.parameters():
        state = full.optimizer.state[param]
        assert state["exp_avg"].shape == state["exp_avg_sq"].shape == param.shape
    for _ in range(20):
        after = full.train_epoch(minibatches(data)).losses
        reference = never.train_epoch(minibatches(data)).losses
        assert torch.equal(after, reference), (after - reference).abs().max()
    for new_id, old_id in enumerate(kept):
        for key, tensor in never.trial_state_dict(new_id).items():
            assert torch.equal(full.trial_state_dict(old_id)[key], tensor), key


def test_the_last_trial_leaving_empties_the_batch(data):
    batch = BatchedMLP(MIXED[:2], LR)
    batch.remove([0, 1])
    assert batch.members == 0 and batch.active_trials == [] and batch.optimizer is None
    assert batch.train_epoch(minibatches(data)).losses.shape == (0,)
    with pytest.raises(KeyError, match="not in the batch"):
        batch.remove([0])


def test_a_trial_whose_probabilities_turn_nan_leaves_and_the_others_train_on(data):
    poisoned, twin = BatchedMLP(MIXED, LR), BatchedMLP(MIXED, LR)
    for _ in range(2):
        poisoned.train_epoch(minibatches(data))
        twin.train_epoch(minibatches(data))
    # A negative second moment makes Adam's first step of the next epoch NaN for trial 3's
    # weights only: its probabilities turn NaN at the epoch's second minibatch.
    first_layer = poisoned.groups[1].weights[0]
    poisoned.optimizer.state[first_layer]["exp_avg_sq"][poisoned.groups[1].rows(3)] = -1.0
    result = poisoned.train_epoch(minibatches(data))
    assert result.diverged == (3,)
    assert 3 not in poisoned.active_trials and poisoned.members == len(twin.member_ids) - 1
    expected = twin.train_epoch(minibatches(data)).losses[twin.rows_kept([3])]
    assert torch.allclose(result.losses, expected, rtol=0, atol=1e-6)


def test_a_trials_weights_load_into_an_mlp_that_predicts_what_the_batch_predicted(data):
    batch = BatchedMLP(MIXED, LR)
    train_batch_epochs(batch, data, 20)
    x = data.val_x
    with torch.no_grad():
        batched = batch(x)
        for trial_id, spec in enumerate(MIXED):
            model = alone(spec)
            model.load_state_dict(batch.trial_state_dict(trial_id))
            assert torch.allclose(model(x), batched[batch.trial_rows(trial_id)], rtol=0, atol=1e-6)


def test_validation_metrics_are_the_ones_an_mlp_computes(data):
    batch = BatchedMLP(MIXED, LR)
    train_batch_epochs(batch, data, 20)
    metrics = batch.member_metrics(data.val_x, data.val_y, data.x, data.y)
    for trial_id, spec in enumerate(MIXED):
        model = alone(spec)
        model.load_state_dict(batch.trial_state_dict(trial_id))
        rows = batch.trial_rows(trial_id)
        with torch.no_grad():
            assert torch.allclose(
                metrics["val/loss"][rows], model.member_losses(data.val_x, data.val_y), atol=1e-6
            )
            assert torch.equal(
                metrics["val/acc"][rows], model.member_accuracy(data.val_x, data.val_y)
            )
            assert torch.equal(metrics["train/acc"][rows], model.member_accuracy(data.x, data.y))
