"""The sigmoid MLP: shapes, the tutorial's initialisation, and independent ensemble members."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from mlpsweep import step
from mlpsweep.config import compose
from mlpsweep.data import EpochLoader, training_points
from mlpsweep.layout import OUTPUT_BIAS_SLOTS, canonical_width
from mlpsweep.model import MLP, NonFiniteLossError, parameter_count


@functools.cache
def yaml_model() -> dict[str, Any]:
    """`conf/model/mlp.yaml`'s keys: the only place the model's defaults are written."""
    model = OmegaConf.to_container(compose([]).model)
    assert isinstance(model, dict)
    return model


def mlp(**changes: Any) -> MLP:
    """The yaml's model with `changes`, unseeded (each test seeds torch itself)."""
    return MLP(**{**yaml_model(), **changes})


def tutorial_layers(hidden: int, layers: int) -> list[nn.Linear]:
    """The tutorial's layers in construction order: 1 -> hidden (x layers) -> 1."""
    widths = [1] + [hidden] * layers + [1]
    return [nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)]


def tutorial_network(hidden: int, layers: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    for layer in tutorial_layers(hidden, layers):
        modules += [layer, nn.Sigmoid()]
    return nn.Sequential(*modules)


@pytest.mark.parametrize("ensemble", [1, 3])
@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_shapes_for_layers_and_members(layers, ensemble):
    hidden = 7
    model = mlp(hidden=hidden, layers=layers, ensemble=ensemble)
    widths = [1] + [hidden] * layers + [1]
    stored = [1] + [canonical_width(hidden)] * layers + [1]
    assert len(model.weights) == len(model.biases) == layers + 1
    for depth, (weight, bias) in enumerate(model.real_layers()):
        assert weight.shape == (ensemble, widths[depth], widths[depth + 1])
        assert bias.shape == (ensemble, 1, widths[depth + 1])
    for depth, (weight, bias) in enumerate(model.layer_pairs()):  # the canonical layout
        assert weight.shape == (ensemble, stored[depth], stored[depth + 1])
        bias_width = OUTPUT_BIAS_SLOTS if depth == layers else stored[depth + 1]
        assert bias.shape == (ensemble, 1, bias_width)
    inputs = torch.linspace(-50, 49, 13).unsqueeze(1)
    out = model(inputs)
    assert out.shape == (ensemble, 13, 1)
    assert ((out > 0) & (out < 1)).all(), "sigmoid output"
    assert model.member_losses(inputs, (inputs > 0).float()).shape == (ensemble,)
    assert model.member_accuracy(inputs, (inputs > 0).float()).shape == (ensemble,)
    reference = sum(p.numel() for p in tutorial_network(hidden, layers).parameters())
    assert model.parameter_count == parameter_count(hidden, layers) == reference
    assert sum(p.numel() for p in model.real_layers()[0]) < sum(
        p.numel() for p in model.layer_pairs()[0]
    ), "7 units are stored padded to 16"


@pytest.mark.parametrize("hidden,layers", [(20, 1), (10, 2), (5, 3)])
def test_single_member_is_the_tutorials_network_after_the_same_seed(hidden, layers):
    torch.manual_seed(1234)
    model = mlp(hidden=hidden, layers=layers, ensemble=1)
    torch.manual_seed(1234)
    reference = tutorial_network(hidden, layers)
    linears = [m for m in reference if isinstance(m, nn.Linear)]
    for (weight, bias), layer in zip(model.real_layers(), linears, strict=True):
        assert torch.equal(weight[0], layer.weight.detach().T)
        assert torch.equal(bias[0, 0], layer.bias.detach())
    inputs = torch.arange(-50, 50, dtype=torch.float32).unsqueeze(1)
    with torch.no_grad():
        assert torch.allclose(model(inputs)[0], reference(inputs), atol=1e-6)


def test_default_model_is_the_tutorials_two_linear_layers():
    torch.manual_seed(0)
    model = mlp()
    torch.manual_seed(0)
    input_layer, output_layer = nn.Linear(1, 20), nn.Linear(20, 1)
    (input_weight, input_bias), (output_weight, output_bias) = model.real_layers()
    assert torch.equal(input_weight[0], input_layer.weight.detach().T)
    assert torch.equal(input_bias[0, 0], input_layer.bias.detach())
    assert torch.equal(output_weight[0], output_layer.weight.detach().T)
    assert torch.equal(output_bias[0, 0], output_layer.bias.detach())
    assert (model.hparams.hidden, model.hparams.layers, model.hparams.lr) == (20, 1, 0.01)


def test_members_are_distinct_and_member_zero_is_the_single_model():
    torch.manual_seed(5)
    single = mlp(hidden=6, layers=2, ensemble=1)
    torch.manual_seed(5)
    ensemble = mlp(hidden=6, layers=2, ensemble=4)
    for w_single, w_ens in zip(single.weights, ensemble.weights, strict=True):
        assert torch.equal(w_ens[0], w_single[0])
        for member in range(1, 4):
            assert not torch.equal(w_ens[member], w_ens[0]), (
                f"member {member} repeats member 0's draw"
            )


def single_from_member(model: MLP, member: int) -> MLP:
    """A K=1 model holding `model`'s member `member` weights (copied, not shared)."""
    single = MLP(**{**model.hparams, "ensemble": 1})
    with torch.no_grad():
        for target, source in zip(single.weights, model.weights, strict=True):
            target.copy_(source[member : member + 1])
        for target, source in zip(single.biases, model.biases, strict=True):
            target.copy_(source[member : member + 1])
    return single


def test_forward_and_losses_per_member_equal_the_member_alone():
    torch.manual_seed(2)
    model = mlp(hidden=8, layers=2, ensemble=3)
    inputs, labels = training_points()
    with torch.no_grad():
        probs, losses, accs = (
            model(inputs),
            model.member_losses(inputs, labels),
            model.member_accuracy(inputs, labels),
        )
        for member in range(3):
            single = single_from_member(model, member)
            assert torch.allclose(probs[member], single(inputs)[0], atol=1e-6)
            assert losses[member].item() == pytest.approx(
                nn.BCELoss()(single(inputs)[0], labels).item(), rel=1e-5
            )
            expected_acc = ((single(inputs)[0] > 0.5).float() == labels).float().mean().item()
            assert accs[member].item() == pytest.approx(expected_acc)


def train_epochs(model: MLP, epochs: int, seed: int) -> None:
    """The model's own training_step (its Adam, its minibatch loop) outside Lightning."""
    model.raw_optimizer = model.configure_optimizers()
    model.epoch_losses = torch.full((1, model.ensemble), float("nan"))
    loader = EpochLoader(*training_points(), batch_size=32, shuffle=True, seed=seed)
    for _ in range(epochs):
        for minibatches in loader:
            model.training_step(minibatches, 0)


@pytest.mark.parametrize("fused_adam", [False, True])
def test_members_trained_in_lockstep_end_where_they_end_alone(fused_adam):
    epochs, seed = 60, 11
    torch.manual_seed(seed)
    ensemble = mlp(hidden=10, layers=2, lr=0.01, ensemble=3, fused_adam=fused_adam)
    initial = [w.clone() for pair in ensemble.real_layers() for w in pair]
    alone = [single_from_member(ensemble, member) for member in range(3)]

    train_epochs(ensemble, epochs, seed)
    for single in alone:  # the same shuffled batches, drawn from a loader with the same seed
        train_epochs(single, epochs, seed)

    trained = [w for pair in ensemble.real_layers() for w in pair]
    for before, after in zip(initial, trained, strict=True):
        assert (before - after).abs().max() > 1e-3, "the ensemble must actually have trained"
    for member, single in enumerate(alone):
        for w_single, w_ens in zip(single.weights, ensemble.weights, strict=True):
            torch.testing.assert_close(w_ens[member], w_single[0], rtol=1e-4, atol=1e-5)
        for b_single, b_ens in zip(single.biases, ensemble.biases, strict=True):
            torch.testing.assert_close(b_ens[member], b_single[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            ensemble.epoch_losses[0, member], single.epoch_losses[0, 0], rtol=1e-4, atol=1e-6
        )


def test_one_member_blowing_up_does_not_touch_the_others():
    """A member's NaN gradient must stay in that member: nothing is shared between members."""
    torch.manual_seed(3)
    model = mlp(hidden=4, layers=1, ensemble=3)
    inputs, labels = training_points()
    inputs, labels = inputs[:32], labels[:32]
    optimizer = model.configure_optimizers()
    before = [p.detach().clone() for p in model.parameters()]
    layers = model.layer_pairs()
    outputs = step.forward(inputs, layers, 3)
    output_grad = step.output_gradient(outputs[-1], labels)
    output_grad[1] = float("nan")  # member 1's gradient blows up
    grads = step.backpropagate(inputs, layers, outputs, output_grad)
    with torch.no_grad():
        step.adam_step(optimizer, step.parameters(layers), grads)
    for old, new in zip(before, model.parameters(), strict=True):
        assert new[1].isnan().any(), "member 1 took its NaN step"
        others_before, others = old[[0, 2]], new.detach()[[0, 2]]
        assert not others.isnan().any(), "the NaN reached another member"
        assert not torch.equal(others_before, others), "members 0 and 2 trained"


def test_predict_raw_applies_the_standardisation_of_the_hparams():
    torch.manual_seed(0)
    model = mlp(hidden=5, x_shift=-0.5, x_scale=29.0)
    raw = torch.linspace(-50, 49, 11).unsqueeze(1)
    with torch.no_grad():
        assert torch.allclose(model.predict_raw(raw), model((raw + 0.5) / 29.0))


def test_nan_weights_raise_non_finite_loss_error_in_training_step():
    torch.manual_seed(0)
    model = mlp(hidden=4)
    model.raw_optimizer = model.configure_optimizers()
    model.epoch_losses = torch.full((1, 1), float("nan"))
    with torch.no_grad():
        model.weights[0][0, 0, 0] = float("nan")
    (minibatches,) = list(EpochLoader(*training_points(), batch_size=32, shuffle=False, seed=0))
    with pytest.raises(NonFiniteLossError, match="non-finite.*model.lr"):
        model.training_step(minibatches, 0)


def test_finished_epoch_losses_reports_the_first_bad_epoch():
    model = mlp(hidden=2, ensemble=2)
    model.epoch_losses = torch.tensor([[0.7, 0.6], [0.5, float("inf")], [0.4, 0.3]])
    assert torch.allclose(model.finished_epoch_losses(0, 1), torch.tensor([0.65]))
    assert torch.allclose(model.finished_epoch_losses(2, 3), torch.tensor([0.35]))
    for chunk_start in (0, 1):  # the epoch is counted from the run's start, not the chunk's
        with pytest.raises(NonFiniteLossError, match="epoch 1"):
            model.finished_epoch_losses(chunk_start, 3)
