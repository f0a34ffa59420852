"""Proposed changes to src/, measured by monkeypatching them into this process.

    python benchmarks/candidates.py [--epochs 1500] [--repeats 5]

Each candidate is a patch of `mlpsweep.model.MLP` or `mlpsweep.data.PiecewiseDataModule`
(the code a change to src/ would put there); the default run (`train()`, K=1 and K=32) is timed with and without it, interleaved,
and the patched run is checked to train the same network (per-epoch losses equal within
float tolerance to the unpatched run's).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from loops import Timing
from mlpsweep.data import Minibatches, PiecewiseDataModule
from mlpsweep.model import MLP, NonFiniteLossError

# ---- candidate 1: a leaner minibatch loop ----------------------------------------------
#
# `MLP.training_step` with the same results and fewer operations per optimizer step:
# - the layers as a tuple of (weight, bias) pairs, made once per epoch (each ParameterList
#   access costs a string-index lookup, twice per layer per step);
# - per member the *sum* of the points' BCE, and backward with a gradient of 1/n per member:
#   that is exactly the mean's gradient (d mean / d l_i = 1/n), with two autograd nodes fewer
#   (no mean over points, no sum over members) and no scalar `ones` gradient;
# - the epoch's loss accumulated as those sums (no multiply by the batch size per step),
#   divided by the point count once at the end of the epoch.


def lean_training_step(self: MLP, minibatches: Minibatches, batch_idx: int) -> None:
    """One epoch: the tutorial's minibatch loop, summing members' losses for backward."""
    optimizer, members = self.raw_optimizer, self.ensemble
    layers = tuple(zip(self.weights, self.biases, strict=True))
    total = torch.zeros(members)
    points = 0
    for x, y in minibatches:
        n = x.shape[0]
        optimizer.zero_grad(set_to_none=True)
        prob = x.expand(members, -1, -1)
        for weight, bias in layers:
            prob = torch.sigmoid(torch.baddbmm(bias, prob, weight))
        try:
            sums = F.binary_cross_entropy(prob, y.expand_as(prob), reduction="none").sum(dim=(1, 2))
        except RuntimeError as error:  # BCE rejects NaN probabilities before any loss exists
            if torch.isfinite(prob).all():
                raise
            raise NonFiniteLossError(
                f"training loss became non-finite at epoch {self.current_epoch}; "
                f"lower model.lr (now {self.hparams.lr}) or check the data"
            ) from error
        sums.backward(torch.full((members,), 1.0 / n))  # = backward of the sum of members' means
        optimizer.step()
        total += sums.detach()
        points += n
    epoch = self.current_epoch
    self.epoch_losses[epoch] = total / points
    self.epochs_trained = epoch + 1


# ---- candidate 2: no batch transfer on the CPU -----------------------------------------
#
# Lightning walks the epoch's list of (x, y) tuples with `apply_to_collection` every step to
# move it to the device; on the CPU that is a no-op that still costs the walk. The hook goes
# on the DataModule (on the LightningModule Lightning warns that a DataModule is passed too).


def cpu_transfer_batch_to_device(self: PiecewiseDataModule, batch, device: torch.device, dataloader_idx: int):
    if device.type == "cpu":
        return batch
    return super(PiecewiseDataModule, self).transfer_batch_to_device(batch, device, dataloader_idx)


# ---- candidate 3: a plain attribute write for Lightning's hook bookkeeping ---------------
#
# Lightning sets `pl_module._current_fx_name` before and after every hook call (about 30
# times per step here); `nn.Module.__setattr__` checks each write against parameters,
# buffers and submodules. A string needs none of that.


def fx_name_setattr(self: MLP, name: str, value) -> None:
    if name == "_current_fx_name":
        self.__dict__[name] = value
        return
    torch.nn.Module.__setattr__(self, name, value)


CANDIDATES: dict[str, tuple[type, dict[str, Callable]]] = {
    "lean_step": (MLP, {"training_step": lean_training_step}),
    "cpu_no_transfer": (PiecewiseDataModule, {"transfer_batch_to_device": cpu_transfer_batch_to_device}),
    "fx_setattr": (MLP, {"__setattr__": fx_name_setattr}),
}


@contextlib.contextmanager
def patched(names: tuple[str, ...]) -> Iterator[None]:
    saved = {}
    for name in names:
        cls, functions = CANDIDATES[name]
        for attr, function in functions.items():
            saved.setdefault((cls, attr), cls.__dict__.get(attr))
            setattr(cls, attr, function)
    try:
        yield
    finally:
        for (cls, attr), original in saved.items():
            if original is None:
                delattr(cls, attr)
            else:
                setattr(cls, attr, original)


class KeepLosses:
    """A callback keeping the model's per-epoch losses, to compare patched with unpatched runs."""

    def __new__(cls):
        import lightning.pytorch as pl

        class _Keep(pl.Callback):
            losses: torch.Tensor | None = None

            def on_train_end(self, trainer, pl_module) -> None:
                self.losses = pl_module.epoch_losses.clone()

        return _Keep()


def run_train(epochs: int, ensemble: int, output_dir: Path, names: tuple[str, ...]) -> tuple[Timing, torch.Tensor]:
    from mlpsweep.config import compose
    from mlpsweep.training import new_run_dir, train

    cfg = compose([f"trainer.max_epochs={epochs}", "quiet=true", f"output_dir={output_dir}",
                   f"model.ensemble={ensemble}"])
    keep = KeepLosses()
    with patched(names):
        timing = Timing.start()
        train(cfg, new_run_dir(output_dir), extra_callbacks=[keep])
        timing = timing.stop()
    return timing, keep.losses


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ensembles", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args(argv)

    from mlpsweep.training import quiet_lightning

    quiet_lightning()
    default_threads = torch.get_num_threads()
    combos: list[tuple[str, ...]] = [
        (), ("lean_step",), ("lean_step", "cpu_no_transfer"), ("lean_step", "cpu_no_transfer", "fx_setattr"),
    ]
    jobs = [(k, combo) for k in args.ensembles for combo in combos]
    times: dict[tuple[int, tuple[str, ...]], list[Timing]] = {job: [] for job in jobs}
    with tempfile.TemporaryDirectory(prefix="mlpsweep-candidates-") as tmp:
        output_dir = Path(tmp)
        reference: dict[int, torch.Tensor] = {}
        for k, combo in jobs:  # warm-up, and the same-network check
            torch.set_num_threads(default_threads)
            _, losses = run_train(200, k, output_dir, combo)
            if not combo:
                reference[k] = losses
            else:
                torch.testing.assert_close(losses, reference[k], rtol=1e-4, atol=1e-5)
        print("patched runs train the same network (per-epoch losses over 200 epochs within 1e-4)",
              file=sys.stderr)
        for repeat in range(args.repeats):
            shift = repeat % len(jobs)
            for k, combo in jobs[shift:] + jobs[:shift]:
                torch.set_num_threads(default_threads)
                timing, _ = run_train(args.epochs, k, output_dir, combo)
                times[k, combo].append(timing)
                print(f"  repeat {repeat + 1}/{args.repeats} K={k:<3d} {'+'.join(combo) or 'as is':30s} "
                      f"{1e3 * timing.cpu / args.epochs:.3f} ms/epoch CPU, {1e3 * timing.wall / args.epochs:.3f} wall",
                      file=sys.stderr, flush=True)
    torch.set_num_threads(default_threads)

    lines = [
        f"Candidate changes, default run at {args.epochs} epochs, {args.repeats} repeats interleaved; "
        "median and min (the least disturbed run: noise only ever adds time) of the process CPU time",
        "",
        "| K | patch | CPU ms/epoch, median | vs as is | CPU ms/epoch, min | vs as is | wall ms/epoch, median |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in args.ensembles:
        base_med = statistics.median(t.cpu for t in times[k, ()])
        base_min = min(t.cpu for t in times[k, ()])
        for combo in combos:
            cpu_med = statistics.median(t.cpu for t in times[k, combo])
            cpu_min = min(t.cpu for t in times[k, combo])
            wall = statistics.median(t.wall for t in times[k, combo])
            lines.append(f"| {k} | {' + '.join(combo) or 'as is'} | {1e3 * cpu_med / args.epochs:.3f} "
                         f"| {cpu_med / base_med:.3f} | {1e3 * cpu_min / args.epochs:.3f} | {cpu_min / base_min:.3f} "
                         f"| {1e3 * wall / args.epochs:.3f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
