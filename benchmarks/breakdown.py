"""Where the default run's time goes: the same run with its parts added one at a time.

    python benchmarks/breakdown.py [--epochs 1500] [--repeats 3]

Each level is measured at two run lengths (N and N/5) in this one process, interleaved,
and split into a fixed cost per run and a marginal cost per epoch; the difference between
neighbouring levels is what that part costs. Then the run's one-off pieces are timed
directly: one validation pass, one fit picture for TensorBoard, the two PNGs and the
checkpoint written at the end. Times are process CPU time (robust on a shared machine;
everything here runs on one thread) with wall time beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from loops import Timing, eager_floor
from run import project_run

LEVELS: tuple[tuple[str, str], ...] = (
    (
        "floor",
        "eager floor: nn.Linear, pre-sliced batches, fused Adam (no Lightning, no project code)",
    ),
    ("step", "the project's `MLP.training_step` called in a plain loop (no Trainer)"),
    ("lightning", "+ Lightning: bare `Trainer.fit` (no logger, no callbacks, no validation)"),
    (
        "logged",
        "+ `train()`: TensorBoard logger, our callbacks, validation at the end only, no pictures",
    ),
    ("validated", "+ validation every 100 epochs (`trainer.val_every=100`)"),
    ("imaged", "+ the fit picture in TensorBoard every 1000 epochs (`logger.image_every=1000`)"),
    ("default", "+ fit.png, loss.png and the checkpoint at the end: the default run"),
)


def level_overrides(key: str, epochs: int) -> list[str]:
    no_end = ["logger.pictures=false", "trainer.checkpoint=false"]
    return {
        "logged": [f"trainer.val_every={epochs}", "logger.image_every=0", *no_end],
        "validated": ["logger.image_every=0", *no_end],
        "imaged": no_end,
        "default": [],
    }[key]


def compose_run(epochs: int, output_dir: Path, overrides: list[str]):
    from mlpsweep.config import compose

    return compose(
        [f"trainer.max_epochs={epochs}", "quiet=true", f"output_dir={output_dir}", *overrides]
    )


def runner(key: str, epochs: int, output_dir: Path) -> Callable[[], Timing]:
    """A callable that runs `key` for `epochs` epochs and returns its timing."""
    import lightning.pytorch as pl

    from mlpsweep.training import build

    if key == "floor":
        return lambda: eager_floor(epochs)

    if key == "step":
        def step() -> Timing:
            cfg = compose_run(epochs, output_dir, [])
            torch.set_num_threads(cfg.trainer.threads)
            datamodule, model = build(cfg)
            model.raw_optimizer = model.configure_optimizers()
            model.epoch_losses = torch.full((epochs, model.ensemble), float("nan"))
            minibatches = next(iter(datamodule.train_dataloader()))
            timing = Timing.start()
            for _ in range(epochs):
                model.training_step(minibatches, 0)
            return timing.stop()
        return step

    if key == "lightning":
        def bare() -> Timing:
            cfg = compose_run(epochs, output_dir, [])
            torch.set_num_threads(cfg.trainer.threads)
            timing = Timing.start()
            datamodule, model = build(cfg)
            trainer = pl.Trainer(
                accelerator="cpu", devices=1, max_epochs=epochs, logger=False, callbacks=[],
                limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False,
            )
            trainer.fit(model, datamodule=datamodule)
            return timing.stop()
        return bare

    return project_run(epochs, level_overrides(key, epochs), output_dir)


def one_off_costs(output_dir: Path, repeats: int) -> list[tuple[str, Timing]]:
    """The pieces of a run that happen every 100 or 1000 epochs, or once at the end."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from mlpsweep.callbacks import fit_picture
    from mlpsweep.plots import curve_x, loss_figure, save_png, to_rgb_array
    from mlpsweep.training import build, new_run_dir

    cfg = compose_run(200, output_dir, [])
    torch.set_num_threads(cfg.trainer.threads)
    datamodule, model = build(cfg)
    run_dir = new_run_dir(output_dir)
    logger = TensorBoardLogger(save_dir=str(run_dir), name="", version="", default_hp_metric=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=200,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=None,
        val_check_interval=100,
    )
    trainer.fit(model, datamodule=datamodule)
    grid = curve_x()
    losses = model.epoch_losses.numpy()
    val_epochs, val_losses = zip(*model.val_history, strict=True)

    def tb_picture() -> None:
        figure = fit_picture(model, datamodule, grid, "epoch 1000")
        logger.experiment.add_image("fit", to_rgb_array(figure), 1000, dataformats="HWC")

    def pngs() -> None:
        save_png(fit_picture(model, datamodule, grid, "title"), run_dir / "fit.png")
        save_png(loss_figure(losses, list(val_epochs), list(val_losses)), run_dir / "loss.png")

    def validation() -> None:
        trainer.validate(model, datamodule=datamodule, verbose=False)

    # after fit, current_epoch == max_epochs: one more row so validation_step can read "this epoch"
    model.epoch_losses = torch.cat([model.epoch_losses, model.epoch_losses[-1:]])

    pieces = [
        ("one validation pass via `trainer.validate` (upper bound of one in-fit pass)", validation),
        (
            "one fit picture rendered and added to TensorBoard "
            "(every `image_every` epochs, and at the end)",
            tb_picture,
        ),
        ("fit.png + loss.png at the end (`logger.pictures`)", pngs),
        (
            "the checkpoint at the end (`trainer.checkpoint`)",
            lambda: trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt"),
        ),
    ]
    results = []
    for label, piece in pieces:
        piece()  # warm
        timings = []
        for _ in range(repeats):
            timing = Timing.start()
            piece()
            timings.append(timing.stop())
        results.append((label, Timing(statistics.median(t.wall for t in timings),
                                      statistics.median(t.cpu for t in timings))))
    return results


def split(long: float, short: float, epochs: int, short_epochs: int) -> tuple[float, float]:
    """(fixed seconds, marginal ms/epoch) from the medians at two run lengths."""
    marginal = (long - short) / (epochs - short_epochs)
    return long - epochs * marginal, 1e3 * marginal


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    short = max(1, args.epochs // 5)

    from mlpsweep.training import quiet_lightning

    quiet_lightning()
    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="mlpsweep-breakdown-") as tmp:
        output_dir = Path(tmp)
        for key, _ in LEVELS:  # warm-up: lazy imports, first-call costs
            runner(key, 20, output_dir)()
        jobs = [
            (key, n, runner(key, n, output_dir)) for key, _ in LEVELS for n in (args.epochs, short)
        ]
        times: dict[tuple[str, int], list[Timing]] = {(key, n): [] for key, n, _ in jobs}
        for repeat in range(args.repeats):
            shift = repeat % len(jobs)
            for key, n, run in jobs[shift:] + jobs[:shift]:
                torch.set_num_threads(default_threads)
                timing = run()
                times[key, n].append(timing)
                print(f"  repeat {repeat + 1}/{args.repeats} {key:10s} {n:5d} epochs: "
                      f"{1e3 * timing.cpu / n:.3f} ms/epoch CPU, {1e3 * timing.wall / n:.3f} wall",
                      file=sys.stderr, flush=True)
        pieces = one_off_costs(output_dir, repeats=max(3, args.repeats))
    torch.set_num_threads(default_threads)

    def med(key: str, n: int, attr: str) -> float:
        return statistics.median(getattr(t, attr) for t in times[key, n])

    lines = [
        f"Per-epoch breakdown of the default run ({args.epochs} and {short} epochs, "
        f"{args.repeats} repeats, medians; CPU = process CPU time, wall beside it)",
        "",
        f"| level | CPU ms/epoch at {args.epochs} | fixed s (CPU) | marginal ms/epoch (CPU) "
        "| added marginal | added fixed s | wall ms/epoch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    previous = None
    for key, label in LEVELS:
        fixed, marginal = split(
            med(key, args.epochs, "cpu"), med(key, short, "cpu"), args.epochs, short
        )
        added = "" if previous is None else f"{marginal - previous[1]:+.3f}"
        added_fixed = "" if previous is None else f"{fixed - previous[0]:+.2f}"
        lines.append(
            f"| {label} | {1e3 * med(key, args.epochs, 'cpu') / args.epochs:.3f} | {fixed:.2f} "
            f"| {marginal:.3f} | {added} | {added_fixed} "
            f"| {1e3 * med(key, args.epochs, 'wall') / args.epochs:.3f} |"
        )
        previous = (fixed, marginal)
    lines += ["", "| one-off piece | CPU ms | wall ms |", "| --- | ---: | ---: |"]
    lines += [f"| {label} | {1e3 * t.cpu:.1f} | {1e3 * t.wall:.1f} |" for label, t in pieces]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
