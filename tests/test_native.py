"""The compiled step (`mlpsweep.native`, `step.StepKernel`) against the ATen step it replaced.

What must hold: its gradients are autograd's up to float32 rounding; the padded units of the
canonical layout receive exactly nothing; a member's numbers are the same bits in any batch;
the same source built for plain x86-64 (SSE2) gives the same bits as the build for this host
(AVX2 or AVX-512), so vector width cannot move a result; NaN stops a step before any weight
moves; and a missing compiler is one clear error."""

from __future__ import annotations

import copy
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlpsweep import layout, native, step
from test_step import drawn, hand_gradients, minibatch, network

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [(1, 1), (5, 1), (20, 1), (17, 2), (7, 3), (50, 4), (64, 2)]
U = 2.0**-24  # float32's unit roundoff: every IEEE operation's relative error is at most U


def kernel_for(layers: step.LayerPairs, lr: float = 0.01, library=None, **adam) -> tuple:
    """(kernel, optimizer, params) for one group of `layers`, fused Adam as training uses."""
    params = [tensor.clone() for tensor in step.parameters(layers)]
    depth = len(layers)
    pairs = list(zip(params[:depth], params[depth:], strict=True))
    optimizer = torch.optim.Adam(params, lr=lr, fused=True, **adam)
    members = pairs[0][0].shape[0]
    kernel = step.StepKernel([(pairs, members)], params, optimizer, library=library)
    return kernel, optimizer, params


def native_gradients(layers, inputs, labels) -> tuple[list[torch.Tensor], torch.Tensor]:
    kernel, _, _ = kernel_for(layers)
    group = kernel.groups[0]
    _, bad = group.gradients(inputs, labels)
    assert bad == 0
    return [grad.clone() for grad in group.grads], group.loss_sums.clone()


@pytest.mark.parametrize(("hidden", "layers"), SHAPES)
@pytest.mark.parametrize("points", [32, 4])
def test_gradients_and_losses_are_autograds_up_to_float32_rounding(hidden, layers, points):
    """Every gradient within a few float32 ulps of the ATen step's (autograd's bit for bit,
    `tests/test_step.py`), relative to the tensor's largest entry; the loss sums too."""
    layers_ = network(hidden, layers, 3)
    inputs, labels = minibatch(points)
    ours, sums = native_gradients(layers_, inputs, labels)
    theirs = hand_gradients(layers_, inputs, labels)
    for got, want in zip(ours, theirs, strict=True):
        scale = float(want.abs().max())
        assert float((got - want).abs().max()) <= 1e-5 * scale + 1e-12, (hidden, layers)
    # the loss on the kernel's own probabilities: each of the N positive terms is one log (1
    # ulp = 2u in each implementation, 1 - p exact by Sterbenz), each sum of N terms rounds
    # by at most (N - 1) u of the total: (2 N + 2) u apart, on any host
    kernel, _, _ = kernel_for(layers_)
    probs, _ = kernel.groups[0].gradients(inputs, labels)
    theirs_sums = step.loss_sums(probs.unsqueeze(2), labels)
    bound = (2 * points + 2) * U
    assert torch.all((kernel.groups[0].loss_sums - theirs_sums).abs() <= bound * theirs_sums)
    assert torch.equal(kernel.groups[0].loss_sums, sums)


def test_the_comparison_sees_a_wrong_gradient():
    """The tolerance above is tight: a gradient from other labels is far outside it."""
    layers_ = network(7, 3, 3)
    inputs, labels = minibatch(32)
    ours, _ = native_gradients(layers_, inputs, 1 - labels)
    theirs = hand_gradients(layers_, inputs, labels)
    worst = max(
        float((got - want).abs().max()) / float(want.abs().max())
        for got, want in zip(ours, theirs, strict=True)
    )
    assert worst > 1e-2


@pytest.mark.parametrize(("hidden", "layers"), [(5, 1), (7, 3), (50, 2)])
def test_padded_units_receive_nothing_over_many_steps(hidden, layers):
    """The dead units of the canonical layout stay dead (weights 0, biases -inf, their
    gradients exactly 0), so the network is the unpadded one."""
    layers_ = network(hidden, layers, 2)
    kernel, _, params = kernel_for(layers_)
    inputs, labels = minibatch(32)
    for _ in range(50):
        kernel.step(inputs, labels)
    depth = len(layers_)
    pairs = list(zip(params[:depth], params[depth:], strict=True))
    for index, (weight, bias) in enumerate(pairs):
        for dim in layout.hidden_dims(index, depth - 1, True):
            assert torch.all(weight.narrow(dim, hidden, weight.shape[dim] - hidden) == 0)
        if index < depth - 1:
            assert torch.all(bias[..., hidden:] == layout.PADDED_BIAS)
        else:
            assert torch.all(bias[..., 1:] == 0)
    real = step.parameters(layout.real_units([(w, b) for w, b in pairs], hidden))
    start = step.parameters(drawn(hidden, layers, 2))
    assert all(not torch.equal(a, b) for a, b in zip(real, start, strict=True)), "it trained"


def moment(optimizer: torch.optim.Adam, param: torch.Tensor, key: str) -> torch.Tensor:
    """A copy of `param`'s Adam moment `key` (zeros before its first step)."""
    state = optimizer.state.get(param)
    return state[key].clone() if state else torch.zeros_like(param)


def test_adam_update_is_fused_adams_up_to_rounding_and_keeps_its_state():
    """The compiled Adam from the optimizer's own state: the same step count, moments and
    parameters as `Adam(fused=True).step()` with the same gradients, weight decay included
    (on 16 units, a canonical width with no dead unit: torch's Adam decays a dead unit's bias
    of -inf to NaN, see the next test)."""
    layers_ = network(16, 2, 2)
    inputs, labels = minibatch(32)
    kernel, optimizer, params = kernel_for(layers_, weight_decay=0.01)
    reference = [param.clone().requires_grad_() for param in params]
    torch_adam = torch.optim.Adam(reference, lr=0.01, fused=True, weight_decay=0.01)
    beta1 = 0.9
    for _ in range(5):
        kernel.groups[0].gradients(inputs, labels)
        for param, grad in zip(reference, kernel.grads, strict=True):
            param.grad = grad.clone()
        before = [
            (param.clone(), *(moment(optimizer, param, key) for key in ("exp_avg", "exp_avg_sq")))
            for param in params
        ]
        torch_adam.step()
        kernel.adam()
        for param, param_ref, (old, old_m, old_v) in zip(params, reference, before, strict=True):
            ours, theirs = optimizer.state[param], torch_adam.state[param_ref]
            assert float(ours["step"]) == float(theirs["step"])
            # the same formulas on the same inputs, each side within 8u of the exact v measured
            # on its terms' sizes (the decayed gradient g + wd p can cancel, so its error is
            # 2u of |g| + wd |p|, not of itself): the decay's two roundings (4u once squared),
            # the square, the product by 1 - beta2 and the sum (u each; a fused multiply-add in
            # torch's vector kernel saves some); so 16u apart
            v_ours, v_theirs = ours["exp_avg_sq"], theirs["exp_avg_sq"]
            magnitude = param_ref.grad.abs() + 0.01 * old.abs()
            v_terms = 0.999 * old_v + 0.001 * magnitude**2
            assert torch.all((v_ours - v_theirs).abs() <= 16 * U * v_terms)
            # the parameter: p - step, p's own rounding (2u of |p| each side) and a step whose
            # size is at most lr / (1 - beta1^t) (b1 |m| + (1 - b1) |g|) / denom, computed in
            # some 8 operations each side: 16u of that size
            size = (beta1 * old_m.abs() + (1 - beta1) * magnitude) / (v_theirs.sqrt() + 1e-8)
            bias1 = 1 - beta1 ** float(theirs["step"])
            step_bound = 0.01 / bias1 * size
            gap = (param - param_ref.detach()).abs()
            assert torch.all(gap <= 4 * U * old.abs() + 16 * U * step_bound)
        # the next step starts from one state, so only one step's rounding is under test
        for param, param_ref in zip(params, reference, strict=True):
            param_ref.data.copy_(param)
            for key in ("exp_avg", "exp_avg_sq"):
                torch_adam.state[param_ref][key].copy_(optimizer.state[param][key])


def test_weight_decay_leaves_the_dead_units_dead():
    layers_ = network(5, 2, 2)
    kernel, _, params = kernel_for(layers_, weight_decay=0.01)
    inputs, labels = minibatch(32)
    for _ in range(20):
        kernel.step(inputs, labels)
    assert all(torch.isfinite(param).any() and not torch.isnan(param).any() for param in params)
    assert torch.all(params[len(layers_)][..., 5:] == layout.PADDED_BIAS)


def test_a_member_gets_the_same_bits_alone_and_beside_any_partners():
    """Member 0 of a (6, 3) trial alone, and beside members of other widths of the same
    canonical width, keeps the same weights bit for bit over 200 steps."""
    inputs, labels = minibatch(32)
    alone = network(6, 3, 1, seed=3)
    partners = [network(hidden, 3, 2, seed=hidden) for hidden in (1, 9, 16)]
    batch = [
        (torch.cat([p[i][0] for p in (*partners[:1], alone, *partners[1:])]),
         torch.cat([p[i][1] for p in (*partners[:1], alone, *partners[1:])]))
        for i in range(len(alone))
    ]
    kernel_alone, _, params_alone = kernel_for(alone)
    kernel_batch, _, params_batch = kernel_for(batch)
    for _ in range(200):
        sums_alone = kernel_alone.step(inputs, labels)
        sums_batch = kernel_batch.step(inputs, labels)
        assert torch.equal(sums_alone[0], sums_batch[2])
    for mine, shared in zip(params_alone, params_batch, strict=True):
        assert torch.equal(mine[0], shared[2])


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the SSE2 build is x86-64's baseline")
@pytest.mark.parametrize(("hidden", "layers"), [(5, 1), (7, 3), (50, 4)])
def test_the_plain_x86_64_build_gives_this_hosts_bits(hidden, layers):
    """The same source for SSE2 (4 floats a register) and for this host (8 or 16): the same
    losses and weights after 100 steps, bit for bit, so no result depends on vector width."""
    inputs, labels = minibatch(32)
    layers_ = network(hidden, layers, 3)
    host, _, params_host = kernel_for(layers_)
    plain, _, params_plain = kernel_for(layers_, library=native.load(native.PORTABLE_ARCH))
    assert host.library is not plain.library
    for _ in range(100):
        assert torch.equal(host.step(inputs, labels), plain.step(inputs, labels))
    for a, b in zip(params_host, params_plain, strict=True):
        assert torch.equal(a, b)


def test_nan_stops_the_step_before_any_weight_moves():
    layers_ = network(5, 2, 3)
    layers_[1][0][1].fill_(float("nan"))  # member 1's hidden weights
    kernel, _, params = kernel_for(layers_)
    before = [param.clone() for param in params]
    with pytest.raises(step.NonFiniteProbabilities) as caught:
        kernel.step(*minibatch(32))
    prob = caught.value.prob
    assert prob.shape == (3, 32, 1)
    assert torch.isnan(prob[1]).all() and torch.isfinite(prob[[0, 2]]).all()
    for param, old in zip(params, before, strict=True):  # bit for bit, NaN included
        assert torch.equal(param.view(torch.int32), old.view(torch.int32))


def test_a_missing_compiler_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    with pytest.raises(native.NativeBuildError, match="needs a C.. compiler .g..."):
        native.compiler()


def test_the_build_is_cached_by_source_and_flags(tmp_path, monkeypatch):
    """A second build is the cached file; another architecture is another file."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = native.build(native.NATIVE_ARCH)
    stamp = first.stat().st_mtime_ns
    assert native.build(native.NATIVE_ARCH) == first and first.stat().st_mtime_ns == stamp
    assert first.parent == tmp_path / "mlpsweep"
    assert native.library_path(native.PORTABLE_ARCH) != first
    assert not list(first.parent.glob("*.partial"))


@pytest.mark.parametrize("script", ["src/train.py", "src/sweep.py"])
def test_without_a_compiler_a_run_and_a_sweep_stop_with_one_line(script, tmp_path):
    """No g++ on the PATH: one `error:` line naming what to install, exit 1, nothing
    written (the run's checks may have made its empty output folder), before any training."""
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    out = tmp_path / "out"
    key = "output_dir" if script.endswith("train.py") else "sweep.output_dir"
    result = subprocess.run(
        [sys.executable, script, "trainer.max_epochs=1", "quiet=true", f"{key}={out}"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: the compiled training step needs")
    assert "apt-get install g++" in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_an_unwritable_cache_is_one_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(native.NativeBuildError, match="cannot be written.*XDG_CACHE_HOME"):
        native.build(native.NATIVE_ARCH)


def test_a_run_keeps_its_kernel_until_the_optimizer_state_is_replaced():
    """A run builds the compiled step's address arrays once, not every epoch, and builds them
    again when a tensor they point at is replaced (a checkpoint's optimizer state is loaded
    as new tensors), so no stale address is ever stepped."""
    from mlpsweep.data import PiecewiseDataModule
    from mlpsweep.model import MLP

    torch.manual_seed(0)
    model = MLP(hidden=5, layers=2, ensemble=2, lr=0.01, fused_adam=True)
    model.raw_optimizer = model.configure_optimizers()
    model.epoch_losses = torch.full((3, 2), float("nan"))
    data = PiecewiseDataModule(
        batch_size=32, shuffle=False, normalize=True, val_points=100, seed=0
    )
    minibatches = next(iter(data.train_dataloader()))
    model.training_step(minibatches, 0)
    first = model.step_kernel
    model.training_step(minibatches, 0)
    assert model.step_kernel is first
    saved = copy.deepcopy(model.raw_optimizer.state_dict())  # as a checkpoint read from disk
    model.raw_optimizer.load_state_dict(saved)  # the same values in new tensors
    model.training_step(minibatches, 0)
    assert model.step_kernel is not first
    assert model.step_kernel.points_at(step.parameters(model.layer_pairs()), model.raw_optimizer)
