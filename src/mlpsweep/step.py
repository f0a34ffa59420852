"""One optimizer step of the batched sigmoid MLP, by hand: forward, BCE, backward, Adam.

`MLP` (one run) and `BatchedMLP` (many trials as one network) both train through these
functions, on tensors in the canonical layout (`mlpsweep.layout`), so a trial computes the
same numbers, bit for bit, in a batch as alone. Why by hand: at these
sizes a step is a few dozen small kernels, and what autograd and `Adam.step` add around them
cost more than the arithmetic for most of the map. Measured per epoch (4 steps, 1 thread)
for a batch of 16 cells x 4 members: one hidden layer of 1..16 units 2.8 -> 1.7 ms, of
49..64 units 5.2 -> 3.3 ms; four hidden layers of 49..64 units 26 -> 19-24 ms.

- **Backward** calls the kernels autograd's formulas call, in the same order
  (`binary_cross_entropy_backward`, `sigmoid_backward`, `bmm` with a transposed operand,
  `sum` over the broadcast dimension), so every gradient is autograd's bit for bit
  (`tests/test_step.py`), and a run trains as it did before this module existed. One
  kernel differs: the gradient flowing back from the single output unit is an outer
  product, which `bmm` computes on a slow path (0.28 ms at 64 members x 64 units) and an
  elementwise product computes exactly, with the same bits, in 0.03 ms.
- **Adam** is `Adam(fused=True)`'s kernel called on the optimizer's own state: its
  `step()` regroups and checks the tensors in Python on every call (0.16-1 ms a step).
  `fused_adam: false` keeps `optimizer.step()`.
- Nothing here builds an autograd graph: callers run under `torch.no_grad()`.

Kept as they are, measured: the output unit's weight gradient stays a `bmm` (0.17 ms at
64 x 64). A product and a sum over the points is 4x faster, but that sum rounds by the
tensor's width and member count, and a trial then drifted 2e-4 from itself alone in
`test_batch_sweep`; `bmm` gave the same bits at every width.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mlpsweep import layout

# per layer: weights (K, in, out) and biases (K, 1, out) of all members
LayerPairs = Sequence[tuple[torch.Tensor, torch.Tensor]]


def bmm(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """`left.bmm(right)` computed for at least two members. torch hands a batch of one matrix
    to MKL's plain gemm and a larger one to its batched gemm, and the two round apart for a
    single output column (measured: 1e-6 at 32 points x 16 units); a lone member is
    therefore computed twice in one batched call and its first copy kept."""
    if left.shape[0] > 1:
        return left.bmm(right)
    return left.expand(2, -1, -1).bmm(right.expand(2, -1, -1))[:1]


def layer_output(
    activations: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, members: int
) -> torch.Tensor:
    """sigmoid(activations (K, N, in) @ weight (K, in, out) + bias (K, 1, out)), every member
    at once, computed so that no member's element falls in a kernel's scalar tail: the result
    is written into a buffer of `layout.TAIL_FREE`-multiple length and the sigmoid runs over
    the whole buffer (its spare end holds junk no one reads).

    Each layer takes the kernel measured fastest for its shape, all of them computing a
    member's elements the same way in a batch of any size (`tests/test_layout.py`):

    - the input layer (in = 1) is an outer product: `addcmul` (the batched product's thin
      path took 0.39 ms forward and backward for 64 members of width 64, this 0.26 ms);
    - the output unit (out = 1) is a product and a sum over the hidden units (2-4x faster
      than `baddbmm`'s matrix-vector path on these shapes, and exact in the canonical
      layout, where every member sums the same number of units);
    - hidden layers are `baddbmm`, at least two members at a time (see `bmm`)."""
    points, fan_in, width = activations.shape[1], weight.shape[1], weight.shape[2]
    rows = members if members > 1 or fan_in == 1 or width == 1 else 2
    size = rows * points * width
    buffer = weight.new_empty(layout.tail_free_length(size))
    out = buffer[:size].view(rows, points, width)
    if fan_in == 1:  # the input layer: an outer product per member
        torch.addcmul(bias, activations, weight, out=out)
    elif width == 1:  # the output unit: a product and a sum over the hidden units
        torch.sum(activations * weight.transpose(1, 2), dim=2, keepdim=True, out=out)
        out += bias
    elif rows == members:
        torch.baddbmm(bias, activations, weight, out=out)
    else:
        torch.baddbmm(*(t.expand(rows, -1, -1) for t in (bias, activations, weight)), out=out)
    torch.sigmoid_(buffer)
    return out[:members]


@torch.no_grad()
def forward(inputs: torch.Tensor, layers: LayerPairs, members: int) -> list[torch.Tensor]:
    """x (N, 1) through every member's sigmoid layers: each layer's output (K, N, width), the
    last one the probabilities (K, N, 1). Backward needs them all. The output bias is column
    0 of its row (`layout.OUTPUT_BIAS_SLOTS`). No autograd graph (the products write into
    preallocated buffers): gradients are `backpropagate`'s."""
    activations = inputs.expand(members, -1, -1)
    outputs = []
    depth = len(layers) - 1
    for layer, (weight, bias) in enumerate(layers):
        if layer == depth:
            bias = bias[..., :1]
        activations = layer_output(activations, weight, bias, members)
        outputs.append(activations)
    return outputs


def loss_sums(prob: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each member's BCE summed over the points: shape (K,). BCE raises a RuntimeError on
    NaN probabilities, before any loss exists; callers turn it into their own exit."""
    losses = F.binary_cross_entropy(prob, labels.expand_as(prob), reduction="none")
    return losses.sum(dim=(1, 2))


@functools.cache
def per_point_weight(points: int, dtype: torch.dtype) -> torch.Tensor:
    """1/N as the 0-d tensor autograd seeds BCE's backward with (made once per N, not per
    step; never written to)."""
    return torch.full((), 1.0 / points, dtype=dtype)


def output_gradient(prob: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d(sum of the members' mean BCE) / d(output pre-activation), shape (K, N, 1): what
    autograd computes from `loss_sums(...).backward(1/N per member)`."""
    per_point = per_point_weight(prob.shape[1], prob.dtype)
    targets = labels.expand_as(prob)
    grad_prob = torch.ops.aten.binary_cross_entropy_backward(per_point, prob, targets, None, 0)
    return torch.ops.aten.sigmoid_backward(grad_prob, prob)


def backpropagate(
    inputs: torch.Tensor,
    layers: LayerPairs,
    outputs: Sequence[torch.Tensor],
    output_grad: torch.Tensor,
) -> list[torch.Tensor]:
    """The gradients of every weight, then every bias (the order of `parameters(layers)`),
    from `output_grad` (see `output_gradient`) back through the layers `forward` ran."""
    depth = len(layers) - 1
    weight_grads: list[torch.Tensor] = []  # output layer first, reversed at the end
    bias_grads: list[torch.Tensor] = []
    grad = output_grad
    for layer in range(depth, -1, -1):
        bias_grad = grad.sum(dim=1, keepdim=True)
        if layer == depth:  # the output bias's row: column 0, the rest stays 0
            bias_grad = torch.constant_pad_nd(bias_grad, (0, layout.OUTPUT_BIAS_SLOTS - 1))
        bias_grads.append(bias_grad)
        if layer == 0:  # addcmul's weight: x (K, N, 1) * grad, summed over the points
            weight_grads.append((grad * inputs).sum(dim=1, keepdim=True))
            break
        below, weight = outputs[layer - 1], layers[layer][0]
        if layer == depth:  # one output unit: products and sums, as its forward
            weight_grads.append((below * grad).sum(dim=1, keepdim=True).transpose(1, 2))
            below_grad = grad * weight.transpose(1, 2)
        else:
            weight_grads.append(bmm(below.transpose(1, 2), grad))
            below_grad = bmm(grad, weight.transpose(1, 2))
        grad = torch.ops.aten.sigmoid_backward(below_grad, below)
    return [*reversed(weight_grads), *reversed(bias_grads)]


class NonFiniteProbabilities(RuntimeError):
    """A forward pass gave NaN probabilities (diverged weights); BCE refused them, so no loss
    exists and no weight moved. `prob` is the step's probabilities (K, N, 1), for the caller
    to tell whose they are."""

    def __init__(self, prob: torch.Tensor) -> None:
        super().__init__("the forward pass gave non-finite probabilities")
        self.prob = prob


def train_step(
    inputs: torch.Tensor,
    labels: torch.Tensor,
    groups: Sequence[tuple[LayerPairs, int]],
    params: Sequence[torch.Tensor],
    optimizer: torch.optim.Adam,
    adam_lists: FusedAdamLists | None = None,
) -> torch.Tensor:
    """One minibatch step of one or more networks that share an optimizer: `groups` are their
    (layers, members), `params` all their parameters in `parameters` order, group by group
    (`adam_lists`: their `fused_adam_lists`, gathered once for many steps).
    Returns every member's summed BCE (groups in order). `MLP` runs one group, a batch of
    trials one per depth, so both train through this one function.

    Raises `NonFiniteProbabilities` before any weight moves, and `AdamOverflowError`."""
    outputs = [forward(inputs, layers, members) for layers, members in groups]
    prob = outputs[0][-1] if len(outputs) == 1 else torch.cat([last[-1] for last in outputs])
    try:
        sums = loss_sums(prob, labels)
    except RuntimeError as error:  # BCE rejects NaN probabilities before any loss exists
        if torch.isfinite(prob).all():
            raise
        raise NonFiniteProbabilities(prob) from error
    output_grads = output_gradient(prob, labels).split([members for _, members in groups])
    grads = []
    for (layers, _), group_outputs, output_grad in zip(groups, outputs, output_grads, strict=True):
        grads += backpropagate(inputs, layers, group_outputs, output_grad)
    adam_step(optimizer, params, grads, adam_lists)
    return sums


def parameters(layers: LayerPairs) -> list[torch.Tensor]:
    """Every weight, then every bias: the order `backpropagate` returns gradients in."""
    return [weight for weight, _ in layers] + [bias for _, bias in layers]


class AdamOverflowError(RuntimeError):
    """The per-tensor Adam refused a step beyond float32's range (lr / (1 - beta1) at the first
    step, so lr >= 3.4e37); the fused kernel writes inf instead, and the next loss is NaN."""


@dataclass(frozen=True)
class FusedAdamLists:
    """The tensor lists the fused Adam kernel takes, gathered once per set of parameters (a
    run's epoch, a batch's start and each departure) rather than once per step: looking up
    every parameter's state in Python cost more than the kernel at small shapes."""

    params: list[torch.Tensor]
    exp_avgs: list[torch.Tensor]
    exp_avg_sqs: list[torch.Tensor]
    steps: list[torch.Tensor]


def fused_adam_lists(
    optimizer: torch.optim.Adam, params: Sequence[torch.Tensor]
) -> FusedAdamLists | None:
    """`params`' fused-Adam lists, their state created as `Adam` creates it; None when the
    optimizer must step itself (not fused, amsgrad or maximize)."""
    group = optimizer.param_groups[0]
    if not group["fused"] or group["amsgrad"] or group["maximize"]:
        return None
    states = [adam_state(optimizer, param) for param in params]
    return FusedAdamLists(
        params=list(params),
        exp_avgs=[state["exp_avg"] for state in states],
        exp_avg_sqs=[state["exp_avg_sq"] for state in states],
        steps=[state["step"] for state in states],
    )


def adam_step(
    optimizer: torch.optim.Adam,
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    lists: FusedAdamLists | None = None,
) -> None:
    """One Adam step of `params` (all of `optimizer`'s, in any order) with `grads`.

    Fused: the kernel `Adam(fused=True).step()` calls (`torch.optim.adam._fused_adam`), on
    the optimizer's state, created as `Adam` creates it; so checkpoints, resuming and the
    per-tensor Adam all see the usual state (`lists`, when given, are `fused_adam_lists` of
    these `params`). Not fused (or with an option the direct call does not pass on, amsgrad
    or maximize): `optimizer.step()` itself."""
    if lists is None:
        lists = fused_adam_lists(optimizer, params)
    if lists is None:
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        try:
            optimizer.step()
        except RuntimeError as error:
            if "overflow" not in str(error):
                raise
            raise AdamOverflowError(str(error)) from error
        return
    group = optimizer.param_groups[0]
    torch._foreach_add_(lists.steps, 1)
    beta1, beta2 = group["betas"]
    torch._fused_adam_(
        lists.params,
        [grad.contiguous() for grad in grads],
        lists.exp_avgs,
        lists.exp_avg_sqs,
        [],
        lists.steps,
        amsgrad=False,
        lr=group["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=False,
    )


def adam_state(optimizer: torch.optim.Adam, param: torch.Tensor) -> dict[str, torch.Tensor]:
    """`param`'s Adam state, created on first use exactly as `Adam._init_group` does for the
    fused kernel (a float32 step tensor, zeroed moments)."""
    state = optimizer.state[param]
    if not state:
        state["step"] = torch.zeros((), dtype=torch.float32)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return state
