"""The hand-written step (`mlpsweep.step`) against what it replaces: autograd's gradients,
`Adam(fused=True).step()`, and a trial alone against the same trial padded into a batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlpsweep import layout, step
from mlpsweep.model import draw_members

# on one thread, as training runs (`trainer.threads=1`): a kernel's rounding can follow its
# thread count
pytestmark = pytest.mark.usefixtures("one_thread")


def minibatch(
    points: int, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised x in (-1.7, 1.7) and 0/1 labels, like the tutorial's data."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.rand(points, 1, generator=generator, dtype=dtype) * 3.4 - 1.7
    labels = (torch.rand(points, 1, generator=generator) > 0.5).to(dtype)
    return inputs, labels


def drawn(hidden: int, layers: int, members: int, seed: int = 0) -> step.LayerPairs:
    """Members at their real width, as `model.draw_members` draws them."""
    torch.manual_seed(seed)
    return [(w.clone(), b.clone()) for w, b in draw_members(hidden, layers, members)]


def network(hidden: int, layers: int, members: int, seed: int = 0) -> step.LayerPairs:
    """Members in the canonical layout, as `MLP` and a batch hold them."""
    return layout.canonical(drawn(hidden, layers, members, seed), hidden)


def hand_gradients(layers, inputs, labels) -> list[torch.Tensor]:
    members = layers[0][0].shape[0]
    outputs = step.forward(inputs, layers, members)
    return step.backpropagate(
        inputs, layers, outputs, step.output_gradient(outputs[-1], labels)
    )


def reference_outputs(inputs, layers) -> list[torch.Tensor]:
    """Every layer's output by plain differentiable formulas (the step's kernels), each sigmoid
    over a tensor padded to `layout.TAIL_FREE` as `step.layer_output` does, so that the
    forward values are the step's bit for bit and only backward is under test."""
    members, depth = layers[0][0].shape[0], len(layers) - 1
    activations, outputs = inputs.expand(members, -1, -1), []
    for layer, (weight, bias) in enumerate(layers):
        if layer == depth:
            bias = bias[..., :1]
        if weight.shape[1] == 1:
            pre = torch.addcmul(bias, activations, weight)
        elif weight.shape[2] == 1:  # the output unit, as the step computes it
            pre = (activations * weight.transpose(1, 2)).sum(dim=2, keepdim=True) + bias
        else:
            pre = torch.baddbmm(bias, activations, weight)
        flat = pre.reshape(-1)
        padded = F.pad(flat, (0, layout.tail_free_length(flat.numel()) - flat.numel()))
        activations = torch.sigmoid(padded)[: flat.numel()].view_as(pre)
        outputs.append(activations)
    return outputs


def autograd_gradients(layers, inputs, labels) -> list[torch.Tensor]:
    """What autograd computes from the members' summed BCE, backward with 1/N per member."""
    params = [t.clone().requires_grad_() for t in step.parameters(layers)]
    depth = len(layers)
    pairs = list(zip(params[:depth], params[depth:], strict=True))
    members = pairs[0][0].shape[0]
    sums = step.loss_sums(reference_outputs(inputs, pairs)[-1], labels)
    sums.backward(torch.full((members,), 1.0 / inputs.shape[0], dtype=inputs.dtype))
    return [param.grad for param in params]


@pytest.mark.parametrize(("hidden", "layers", "points"), [(20, 1, 32), (7, 3, 32), (12, 2, 4)])
def test_gradients_are_autograds_bit_for_bit(hidden, layers, points):
    net = network(hidden, layers, members=3)
    inputs, labels = minibatch(points)
    ours, theirs = hand_gradients(net, inputs, labels), autograd_gradients(net, inputs, labels)
    assert len(ours) == len(theirs) == 2 * (layers + 1)
    for index, (mine, reference) in enumerate(zip(ours, theirs, strict=True)):
        assert mine.shape == reference.shape, index
        assert torch.equal(mine, reference), f"gradient {index} differs from autograd's"


@pytest.mark.parametrize("hidden", [1, 5, 16, 20, 33, 63])
@pytest.mark.parametrize("points", [32, 4])
def test_canonical_padding_receives_nothing_and_computes_the_unpadded_network(hidden, points):
    """Why padding to the canonical width changes no result but rounding: every output and
    gradient of padding is exactly 0, and the real units' outputs and gradients are the
    unpadded network's. Compared in float64, where the different summation order of the
    wider products shows only as rounding far below 1e-12, on any host's vector width."""
    layers = 3
    real = [(w.double(), b.double()) for w, b in drawn(hidden, layers, 4, seed=hidden)]
    wide = layout.canonical(real, hidden)
    inputs, labels = minibatch(points, seed=hidden, dtype=torch.float64)
    pairs = [
        *zip(reference_outputs(inputs, real), step.forward(inputs, wide, 4), strict=True),
        *zip(
            autograd_gradients(real, inputs, labels),
            hand_gradients(wide, inputs, labels),
            strict=True,
        ),
    ]
    # The bound, from float64's rounding (not from a host): a sum of n terms in another order
    # moves by at most n * eps * (sum of |terms|) with eps = 1.1e-16; here n <= 64 units or 32
    # points, |terms| sum to at most ~10 (weights ~1, activations in [0, 1]), and each of the
    # 4 layers passes it on through a sigmoid (slope <= 1/4) and a product with |w| <= ~3:
    # 64 * 1.1e-16 * 10 * 4 layers * 3 = 8.5e-13, so 1e-12 of the tensor's scale. float32
    # would give 1e-5 here, which is why this is compared in float64.
    for unpadded, padded in pairs:
        cut = tuple(slice(0, size) for size in unpadded.shape)
        scale = float(unpadded.abs().max())
        torch.testing.assert_close(padded[cut], unpadded, rtol=0, atol=1e-12 * max(scale, 1.0))
        padding = padded.clone()
        padding[cut] = 0.0
        assert (padding == 0).all(), "padding got an output or a gradient"


def test_adam_step_is_fused_adams_step_bit_for_bit_with_the_same_state():
    torch.manual_seed(0)
    ours = [torch.randn(4, 8, 8), torch.randn(4, 1, 8)]
    theirs = [tensor.clone().requires_grad_() for tensor in ours]
    our_adam = torch.optim.Adam(ours, lr=0.05, fused=True)
    their_adam = torch.optim.Adam(theirs, lr=0.05, fused=True)
    for _ in range(3):
        grads = [torch.randn_like(tensor) for tensor in ours]
        step.adam_step(our_adam, ours, grads)
        for param, grad in zip(theirs, grads, strict=True):
            param.grad = grad.clone()
        their_adam.step()
    for mine, reference in zip(ours, theirs, strict=True):
        assert torch.equal(mine, reference.detach())
        mine_state, reference_state = our_adam.state[mine], their_adam.state[reference]
        assert mine_state.keys() == reference_state.keys()
        for key, value in reference_state.items():
            assert value.dtype == mine_state[key].dtype and torch.equal(mine_state[key], value), key
    # the state is Adam's own: a checkpoint of it resumes in a plain Adam
    restored = torch.optim.Adam([t.clone() for t in ours], lr=0.05, fused=True)
    restored.load_state_dict(our_adam.state_dict())
    assert float(restored.state_dict()["state"][0]["step"]) == 3.0


def test_adam_step_without_fusing_is_optimizer_step_and_names_an_overflow():
    params = [torch.zeros(2, 1, 3)]
    adam = torch.optim.Adam(params, lr=1e39, fused=False)
    with pytest.raises(step.AdamOverflowError, match="overflow"):
        step.adam_step(adam, params, [torch.ones(2, 1, 3)])


def test_adam_options_the_direct_kernel_call_does_not_pass_on_go_through_adam_step():
    torch.manual_seed(1)
    ours = [torch.randn(3, 4, 4)]
    theirs = [ours[0].clone().requires_grad_()]
    our_adam = torch.optim.Adam(ours, lr=0.05, fused=True, amsgrad=True)
    their_adam = torch.optim.Adam(theirs, lr=0.05, fused=True, amsgrad=True)
    for scale in (1.0, 0.01):  # a smaller second gradient: amsgrad keeps the larger moment
        grad = torch.randn(3, 4, 4) * scale
        step.adam_step(our_adam, ours, [grad])
        theirs[0].grad = grad.clone()
        their_adam.step()
    assert torch.equal(ours[0], theirs[0].detach())
    assert "max_exp_avg_sq" in our_adam.state[ours[0]]

