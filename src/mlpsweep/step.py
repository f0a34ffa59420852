"""One optimizer step of the batched sigmoid MLP: forward, BCE, backward, Adam.

`MLP` (one run) and `BatchedMLP` (many trials as one network) both train through
`train_step`, on tensors in the canonical layout (`mlpsweep.layout`), so a trial computes the
same numbers, bit for bit, in a batch as alone. The step is compiled (`mlpsweep.native`,
`StepKernel`): each member by its own loops, every sum in one fixed order, the same bits with
any vector width. Measured per epoch (4 steps, 1 thread, 16 cells x 4 members) against the
ATen step it replaced, in the same run: 0.93 -> 0.25 ms at 1..16 units x 1 layer, 2.87 -> 1.68
ms at 17..32 x 2, 18.0 -> 14.8 ms at 49..64 x 4 (`benchmarks/step_bench.py`, 2026-12-03).

The ATen step stays (`forward`, `backpropagate` and `adam_step`) as the reference the
compiled one is tested against (`tests/test_native.py`) and the benchmark's baseline
(`benchmarks/step_bench.py`); `forward` is also the validation's forward pass. Its design:

- **Backward** calls the kernels autograd's formulas call, in the same order
  (`binary_cross_entropy_backward`, `sigmoid_backward`, `bmm` with a transposed operand,
  `sum` over the broadcast dimension), so every gradient is autograd's bit for bit
  (`tests/test_step.py`). One kernel differs: the gradient flowing back from the single
  output unit is an outer product, which `bmm` computes on a slow path (0.28 ms at 64
  members x 64 units) and an elementwise product computes exactly, with the same bits, in
  0.03 ms.
- **Adam** is `Adam(fused=True)`'s kernel called on the optimizer's own state: its
  `step()` regroups and checks the tensors in Python on every call (0.16-1 ms a step).
  `fused_adam: false` keeps `optimizer.step()` (in the compiled step too).
- Nothing here builds an autograd graph: callers run under `torch.no_grad()`.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mlpsweep import layout, native

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
    kernel: StepKernel | None = None,
) -> torch.Tensor:
    """One minibatch step of one or more networks that share an optimizer: `groups` are their
    (layers, members), `params` all their parameters in `parameters` order, group by group
    (`adam_lists`: their `fused_adam_lists`; `kernel`: their `StepKernel`; both gathered once
    for many steps). Returns every member's summed BCE (groups in order). `MLP` runs one
    group, a batch of trials one per depth, so both train through this one function, the
    compiled step (`mlpsweep.native`).

    Raises `NonFiniteProbabilities` before any weight moves, and `AdamOverflowError`."""
    if kernel is None:
        kernel = StepKernel(groups, params, optimizer, adam_lists)
    return kernel.step(inputs, labels)


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


def as_float32(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` as the compiled step reads it: contiguous float32 (a copy only if it is not)."""
    if tensor.dtype is torch.float32 and tensor.is_contiguous():
        return tensor
    return tensor.to(torch.float32).contiguous()


def pointer_array(tensors: Sequence[torch.Tensor]) -> ctypes.Array:
    """The tensors' data addresses as a C array (the caller keeps the tensors alive)."""
    return (ctypes.c_void_p * len(tensors))(*[tensor.data_ptr() for tensor in tensors])


class GroupKernel:
    """One group's tensors as the compiled step takes them: a member count, a depth, a
    canonical width, the address arrays of its parameters and of gradient buffers shaped as
    them, a loss buffer, and per minibatch size the probabilities and the scratch space."""

    def __init__(self, layers: LayerPairs, members: int, library: ctypes.CDLL) -> None:
        self.library = library
        self.members = members
        self.hidden_layers = len(layers) - 1
        self.width = layers[0][0].shape[2]
        self.params = parameters(layers)
        for tensor in self.params:
            if tensor.dtype != torch.float32 or not tensor.is_contiguous():
                raise ValueError("the compiled step takes contiguous float32 parameters")
        if self.width % layout.WIDTH_QUANTUM or layers[-1][1].shape[2] != layout.OUTPUT_BIAS_SLOTS:
            raise ValueError("the compiled step takes the canonical layout (mlpsweep.layout)")
        self.grads = [torch.zeros_like(tensor) for tensor in self.params]
        self.param_pointers = pointer_array(self.params)
        self.grad_pointers = pointer_array(self.grads)
        self.loss_sums = torch.zeros(members)
        self.buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def buffers_for(self, points: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities (K, N), scratch) for minibatches of `points` points."""
        if points not in self.buffers:
            floats = self.library.mlp_scratch_floats(self.hidden_layers, self.width, points)
            self.buffers[points] = (torch.zeros(self.members, points), torch.zeros(floats))
        return self.buffers[points]

    def gradients(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Every member's gradient into `grads`, its loss sum into `loss_sums`: (the
        probabilities (K, N), how many members' are not finite)."""
        probs, scratch = self.buffers_for(inputs.shape[0])
        if not self.members:  # a group all of whose trials have left: nothing to compute
            return probs, 0
        bad = self.library.mlp_gradients(
            self.members,
            self.hidden_layers,
            self.width,
            inputs.shape[0],
            inputs.data_ptr(),
            labels.data_ptr(),
            self.param_pointers,
            self.grad_pointers,
            self.loss_sums.data_ptr(),
            probs.data_ptr(),
            scratch.data_ptr(),
        )
        return probs, bad


class StepKernel:
    """`train_step` for one set of groups, built once per change of the set (a run's epoch, a
    batch's start and each departure): the address arrays ctypes passes are gathered here,
    not on every step. Holds its tensors, so none it points to is freed while it lives.
    `library`: another build of the step (`native.load(arch)`), for the tests."""

    def __init__(
        self,
        groups: Sequence[tuple[LayerPairs, int]],
        params: Sequence[torch.Tensor],
        optimizer: torch.optim.Adam,
        adam_lists: FusedAdamLists | None = None,
        library: ctypes.CDLL | None = None,
    ) -> None:
        self.library = library if library is not None else native.load()
        self.groups = [GroupKernel(layers, members, self.library) for layers, members in groups]
        self.params = list(params)
        self.grads = [grad for group in self.groups for grad in group.grads]
        if len(self.grads) != len(self.params):
            raise ValueError("params must be the groups' parameters, group by group")
        self.optimizer = optimizer
        self.adam_lists = adam_lists if adam_lists is not None else fused_adam_lists(
            optimizer, self.params
        )
        if self.adam_lists is not None:
            lists = self.adam_lists
            state = (lists.params, self.grads, lists.exp_avgs, lists.exp_avg_sqs, lists.steps)
            self.adam_pointers = [pointer_array(tensors) for tensors in state]
            self.sizes = (ctypes.c_long * len(self.params))(*[p.numel() for p in self.params])

    def points_at(self, params: Sequence[torch.Tensor], optimizer: torch.optim.Adam) -> bool:
        """Whether this kernel still steps exactly these tensors: the same parameters, optimizer
        and Adam state objects (a loaded checkpoint replaces the state with new tensors). A
        few identity checks, where building a kernel anew cost 28 us a run's epoch."""
        if optimizer is not self.optimizer or len(params) != len(self.params):
            return False
        if any(new is not old for new, old in zip(params, self.params, strict=True)):
            return False
        lists = self.adam_lists
        if lists is None:
            return True
        for index, param in enumerate(params):
            state = optimizer.state.get(param)
            if state is None or state["exp_avg"] is not lists.exp_avgs[index]:
                return False
            if state["exp_avg_sq"] is not lists.exp_avg_sqs[index]:
                return False
            if state["step"] is not lists.steps[index]:
                return False
        return True

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One minibatch step (see `train_step`)."""
        inputs, labels = as_float32(inputs), as_float32(labels)
        results = [group.gradients(inputs, labels) for group in self.groups]
        if any(bad for _, bad in results):
            prob = torch.cat([probs for probs, _ in results]).unsqueeze(2)
            raise NonFiniteProbabilities(prob)
        self.adam()
        if len(self.groups) == 1:
            return self.groups[0].loss_sums.clone()
        return torch.cat([group.loss_sums for group in self.groups])

    def adam(self) -> None:
        """Adam over every parameter: the compiled update on the optimizer's own state (as
        `adam_step` keeps it), or `optimizer.step()` for options it does not take."""
        if self.adam_lists is None:
            for param, grad in zip(self.params, self.grads, strict=True):
                param.grad = grad
            try:
                self.optimizer.step()
            except RuntimeError as error:
                if "overflow" not in str(error):
                    raise
                raise AdamOverflowError(str(error)) from error
            return
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        self.library.adam_update(
            len(self.params),
            *self.adam_pointers,
            self.sizes,
            group["lr"],
            beta1,
            beta2,
            group["eps"],
            group["weight_decay"],
        )
