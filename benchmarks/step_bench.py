"""The batched step per epoch on the map's three shapes, against the ATen step and plain autograd.

    python benchmarks/step_bench.py [--repeats 7] [--json] [--write]

`--write` puts the table into `benchmarks/results.md` (its own section, as `make bench` does).

- S1: 16 cells of hidden 1..16 x 1 layer, S2: 17..32 x 2, S3: 49..64 x 4; 4 members each,
  the tutorial's minibatches (32, 32, 32, 4 points of standardised x), one thread.
- `engine`: `BatchedMLP.train_epoch`, the project's step (compiled, `mlpsweep.native`);
- `aten`: the same batch through `aten_step` (ATen kernels), the ATen step the compiled one
  replaced, in the same run (the issue's targets are ratios against it);
- `autograd`: the same padded network by plain autograd and `Adam(fused=True).step()`;
- `peak`: this host's float32 peak, a 1024 x 1024 matmul on one thread (GFLOP/s), measured,
  not assumed (AVX2 and AVX-512 hosts differ by 2x).

Variants are interleaved, each timed over a block of epochs, repeated; medians are reported
with the load average, since these machines are shared and noisy. Times are the process's
CPU time (one thread), which other processes on the host inflate far less than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mlpsweep import layout, step  # noqa: E402
from mlpsweep.batch_model import BatchedMLP, StepPlan, TrialSpec  # noqa: E402
from mlpsweep.data import PiecewiseDataModule  # noqa: E402

SHAPES = {
    "S1": (range(1, 17), 1),
    "S2": (range(17, 33), 2),
    "S3": (range(49, 65), 4),
}
MEMBERS = 4
STEP_BEGIN, STEP_END = "<!-- step_bench.py: begin -->", "<!-- step_bench.py: end -->"
EPOCHS_PER_BLOCK = {"S1": 200, "S2": 100, "S3": 30}
# issue "The engine": per epoch against the ATen step (the engine the issue measured)
TARGETS = {"S1": 2.5, "S2": 1.5, "S3": 1.1}


def peak_gflops(repeats: int = 5) -> float:
    """float32 GFLOP/s of a 1024^2 matmul on one thread: the host's practical peak."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    times = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(5):
            a @ b
        times.append((time.process_time() - started) / 5)
    return 2 * 1024**3 / min(times) / 1e9


def minibatches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = PiecewiseDataModule(
        batch_size=32, shuffle=False, normalize=True, val_points=1000, seed=0
    )
    return next(iter(data.train_dataloader()))


def specs(shape: str) -> list[TrialSpec]:
    widths, layers = SHAPES[shape]
    return [TrialSpec(hidden, layers, MEMBERS, seed) for seed, hidden in enumerate(widths)]


def engine_epoch(shape: str, batches) -> Callable[[], None]:
    batch = BatchedMLP(specs(shape), lr=0.01)
    return lambda: batch.train_epoch(batches)


def aten_step(
    inputs: torch.Tensor, labels: torch.Tensor, plan: StepPlan, optimizer: torch.optim.Adam
) -> torch.Tensor:
    """One step of a batch by ATen kernels (`step.forward`, `step.backpropagate`,
    `step.adam_step`: autograd's gradients bit for bit), the engine before the compiled one."""
    outputs = [step.forward(inputs, layers, members) for layers, members in plan.groups]
    prob = torch.cat([last[-1] for last in outputs])
    sums = step.loss_sums(prob, labels)
    output_grads = step.output_gradient(prob, labels).split([m for _, m in plan.groups])
    grads = []
    for (layers, _), group_outputs, grad in zip(plan.groups, outputs, output_grads, strict=True):
        grads += step.backpropagate(inputs, layers, group_outputs, grad)
    step.adam_step(optimizer, plan.params, grads, plan.adam_lists)
    return sums


def aten_epoch(shape: str, batches) -> Callable[[], None]:
    """The same batch stepped by the ATen step the compiled one replaced (`aten_step`): the
    issue's "today's `BatchedMLP`", measured in the same run."""
    batch = BatchedMLP(specs(shape), lr=0.01)

    def epoch() -> None:
        with torch.no_grad():
            for inputs, labels in batches:
                aten_step(inputs, labels, batch.plan, batch.optimizer)

    return epoch


def autograd_epoch(shape: str, batches) -> Callable[[], None]:
    """The padded network as a plain autograd loop would train it (the issue's peer)."""
    widths, layers = SHAPES[shape]
    width, members = max(widths), MEMBERS * len(widths)
    dims = [1] + [width] * layers + [1]
    params = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
        params.append((torch.randn(members, fan_in, fan_out) * 0.3).requires_grad_())
        params.append(torch.zeros(members, 1, fan_out).requires_grad_())
    adam = torch.optim.Adam(params, lr=0.01, fused=True)

    def epoch() -> None:
        for inputs, labels in batches:
            activations = inputs.expand(members, -1, -1)
            for weight, bias in zip(params[0::2], params[1::2], strict=True):
                activations = torch.sigmoid(torch.baddbmm(bias, activations, weight))
            loss = torch.nn.functional.binary_cross_entropy(
                activations, labels.expand_as(activations), reduction="none"
            ).mean(dim=(1, 2)).sum()
            adam.zero_grad(set_to_none=True)
            loss.backward()
            adam.step()

    return epoch


def useful_flop_per_epoch(shape: str) -> float:
    """Multiply-adds of the real (unpadded) units, forward and backward (3x forward), 100
    points an epoch."""
    widths, layers = SHAPES[shape]
    per_point = sum(2 * h + (layers - 1) * h * h for h in widths) * MEMBERS
    return 2 * 3 * per_point * 100


def padded_flop_per_epoch(shape: str) -> float:
    """The same count over the units the kernels compute: every layer at its canonical width."""
    widths, layers = SHAPES[shape]
    per_point = 0
    for hidden in widths:
        width = layout.canonical_width(hidden)
        per_point += (2 * width + (layers - 1) * width * width) * MEMBERS
    return 2 * 3 * per_point * 100


def measure(repeats: int) -> dict:
    torch.set_num_threads(1)
    batches = minibatches()
    peak = peak_gflops()
    load = os.getloadavg()[0]
    results: dict = {"peak_gflops": round(peak, 1), "load_start": load, "shapes": {}}
    for shape in SHAPES:
        variants = {
            "engine": engine_epoch(shape, batches),
            "aten": aten_epoch(shape, batches),
            "autograd": autograd_epoch(shape, batches),
        }
        epochs = EPOCHS_PER_BLOCK[shape]
        timings: dict[str, list[float]] = {name: [] for name in variants}
        for run in variants.values():
            run()  # warm up
        for _ in range(repeats):  # interleaved
            for name, run in variants.items():
                started = time.process_time()
                for _ in range(epochs):
                    run()
                timings[name].append((time.process_time() - started) / epochs * 1e3)
        medians = {name: statistics.median(values) for name, values in timings.items()}
        useful = useful_flop_per_epoch(shape) / (medians["engine"] / 1e3) / 1e9
        results["shapes"][shape] = {
            "engine_ms": round(medians["engine"], 3),
            "aten_ms": round(medians["aten"], 3),
            "speedup_vs_aten": round(medians["aten"] / medians["engine"], 2),
            "target_vs_aten": TARGETS[shape],
            "autograd_ms": round(medians["autograd"], 3),
            "speedup_vs_autograd": round(medians["autograd"] / medians["engine"], 2),
            "useful_gflops": round(useful, 2),
            "share_of_peak": round(useful / peak, 4),
            "useful_share_of_padded": round(
                useful_flop_per_epoch(shape) / padded_flop_per_epoch(shape), 3
            ),
        }
    results["load_end"] = os.getloadavg()[0]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--write", action="store_true", help="write into results.md")
    args = parser.parse_args()
    results = measure(args.repeats)
    if args.json:
        print(json.dumps(results))
        return
    text = "\n".join(report(results, args.repeats))
    print(text)
    if args.write:
        from batch_bench import write_section

        write_section(text, STEP_BEGIN, STEP_END)


def report(results: dict, repeats: int) -> list[str]:
    """The section of results.md: the peak, then a row per shape."""
    lines = [
        "## The batched step per epoch (16 cells x 4 members, 1 thread)",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; this host's float32 "
        f"peak on one thread (1024^2 matmul): **{results['peak_gflops']} GFLOP/s**; load "
        f"{results['load_start']:.2f} -> {results['load_end']:.2f}; medians of {repeats} "
        "interleaved blocks, CPU time (`python benchmarks/step_bench.py`)",
        "",
        "| shape | engine ms/epoch | ATen step ms/epoch | speed-up (target) |"
        " plain autograd + fused Adam ms/epoch | speed-up | useful GFLOP/s | share of peak |"
        " useful share of the padded arithmetic |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = {"S1": "S1: 1..16 x 1", "S2": "S2: 17..32 x 2", "S3": "S3: 49..64 x 4"}
    for shape, row in results["shapes"].items():
        met = "met" if row["speedup_vs_aten"] >= row["target_vs_aten"] else "**not met**"
        lines.append(
            f"| {names[shape]} | {row['engine_ms']} | {row['aten_ms']} | "
            f"{row['speedup_vs_aten']}x (>= {row['target_vs_aten']}x: {met}) | "
            f"{row['autograd_ms']} | {row['speedup_vs_autograd']}x | {row['useful_gflops']} | "
            f"{row['share_of_peak']:.1%} | {row['useful_share_of_padded']:.0%} |"
        )
    lines += [
        "",
        "- engine: `BatchedMLP.train_epoch`, the compiled step (`mlpsweep.native`); ATen step:"
        " the same batch through `aten_step` (ATen kernels), the engine before it (the issue's"
        ' "today\'s `BatchedMLP`"); autograd: the same padded network by `loss.backward()` and'
        " `Adam(fused=True).step()`.",
    ]
    return lines


if __name__ == "__main__":
    main()
