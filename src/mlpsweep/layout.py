"""The canonical layout: every member's tensors look the same to every kernel, alone or in a batch.

Why: these sigmoid nets are chaotic (a 1-ulp change of one initial weight grows to 6e-2 in
loss within 100 epochs at 4 x 64), so a trial's numbers are only its own if every kernel
computes every member's elements by the same instructions in the same order whatever else
shares the tensor. Two things broke that before (issue "The engine"):

- **Padding changed the sums.** A trial padded to its batch's widest partner multiplied
  matrices with another reduction length than alone. Now every hidden layer is padded to
  `canonical_width` (a multiple of `WIDTH_QUANTUM`), alone as in any batch, and a batch only
  groups trials of one depth and one canonical width; the padded units are dead (weights 0,
  bias -inf: their sigmoid is exactly 0, and so is every gradient they pass on).
- **Tails of vectorised kernels.** An elementwise kernel (sigmoid, fused Adam) runs SIMD over
  the tensor's body and a scalar loop over its last `numel % (2 x lanes)` elements, and the
  two round differently (vectorised `exp` against libm's, fused multiply-adds). A member
  alone then fell in the tail where, in a batch, it sat in the body, and the tail's length
  depends on the host's vector width (8 lanes on AVX2, 16 on AVX-512): a test that held on
  one host failed on the other. So each member's block of every parameter is a multiple of
  `WIDTH_QUANTUM` floats (the output unit's bias is stored in a row of `OUTPUT_BIAS_SLOTS`,
  column 0 real), which leaves fused Adam no tail on either width, and every activation is
  computed inside a buffer whose length is a multiple of `TAIL_FREE` floats
  (`step.layer_output`), which leaves the sigmoid none.

What remains is measured, not assumed: `tests/test_layout.py` checks the kernels this layout
relies on (a member's matrix products and sums are the same bits in a batch of any size) on
whatever host runs the tests, so a host where a kernel breaks the contract fails by name.
"""

from __future__ import annotations

import torch

# Hidden widths are padded to a multiple of this: 16 float32 fill one AVX-512 register and two
# AVX2 ones, so a member's row of units never straddles a vector's edge on either host.
WIDTH_QUANTUM = 16
# An activation buffer's length is a multiple of this: above 2 x 16 lanes, the longest
# unrolled SIMD step of torch's elementwise loops on AVX-512 (`vectorized_loop`).
TAIL_FREE = 64
# The single output unit's bias is kept in a row this long (column 0 is the bias, the rest
# stay 0): a member's block of it is then as long as a row of hidden units.
OUTPUT_BIAS_SLOTS = WIDTH_QUANTUM
# A padded hidden unit's bias: its sigmoid is exactly 0, and so is every gradient it passes on.
PADDED_BIAS = float("-inf")

# per layer: the weights (K, in, out) and biases (K, 1, out) of all K members
Layers = list[tuple[torch.Tensor, torch.Tensor]]


def canonical_width(hidden: int) -> int:
    """The width a hidden layer of `hidden` units is computed at, alone and in any batch."""
    return -(-hidden // WIDTH_QUANTUM) * WIDTH_QUANTUM


def tail_free_length(size: int) -> int:
    """`size` rounded up to a whole number of `TAIL_FREE` floats."""
    return -(-size // TAIL_FREE) * TAIL_FREE


def hidden_dims(layer: int, depth: int, weight: bool) -> tuple[int, ...]:
    """The dimensions of layer `layer`'s weight (K, in, out) or bias (K, 1, out) that run over
    hidden units: `in` unless it is the input layer, `out` unless it is the output layer."""
    dims = []
    if weight and layer > 0:
        dims.append(1)
    if layer < depth:
        dims.append(2)
    return tuple(dims)


def pad_to(
    tensor: torch.Tensor, dims: tuple[int, ...], width: int, fill: float = 0.0
) -> torch.Tensor:
    """`tensor` grown to `width` along `dims`, the new entries exactly `fill`."""
    shape = list(tensor.shape)
    for dim in dims:
        shape[dim] = width
    padded = tensor.new_full(shape, fill)
    padded[tuple(slice(0, size) for size in tensor.shape)] = tensor
    return padded


def canonical(layers: Layers, hidden: int) -> Layers:
    """Members drawn at their real width (`model.draw_members`) in the canonical layout:
    hidden units padded to `canonical_width(hidden)` with dead units, the output bias in a
    row of `OUTPUT_BIAS_SLOTS`. The real units keep their values bit for bit."""
    width, depth = canonical_width(hidden), len(layers) - 1
    padded: Layers = []
    for layer, (weight, bias) in enumerate(layers):
        weight = pad_to(weight, hidden_dims(layer, depth, True), width)
        if layer < depth:
            bias = pad_to(bias, hidden_dims(layer, depth, False), width, PADDED_BIAS)
        else:
            bias = pad_to(bias, (2,), OUTPUT_BIAS_SLOTS)
        padded.append((weight, bias))
    return padded


def real_units(layers: Layers, hidden: int) -> Layers:
    """The canonical layout cut back to the real units (what a person reading the weights
    wants): weights (K, in, out) and biases (K, 1, out) at width `hidden`."""
    depth = len(layers) - 1
    real: Layers = []
    for layer, (weight, bias) in enumerate(layers):
        for dim in hidden_dims(layer, depth, True):
            weight = weight.narrow(dim, 0, hidden)
        bias = bias.narrow(2, 0, hidden if layer < depth else 1)
        real.append((weight.clone(), bias.clone()))
    return real
