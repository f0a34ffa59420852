"""`python src/sweep.py [key=value ...]`: an Optuna search over the MLP's architecture.

Sweep keys: sweep.study_name, sweep.storage, sweep.n_trials, sweep.workers, sweep.space,
sweep.sampler, sweep.pruner, sweep.objectives; `sweep=pareto` for accuracy vs size,
`sweep=grid` (make map) for every architecture of sweep.space once.
Any training key (trainer.max_epochs=300, model.lr=0.05) applies to every trial.
Running the same command again resumes the study up to sweep.n_trials finished trials.
`python src/train.py -m hparams_search=arch` is the same engine through Hydra's sweeper.
`hydra/launcher=joblib|submitit_local|submitit_slurm` (and any `hydra.launcher.*` setting)
runs the sweep.workers as jobs of that Hydra launcher, as train.py -m does (docs/cluster.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mlpsweep.cli import config_or_exit, fail


def with_sweep_selected(argv: list[str]) -> list[str]:
    """The sweep config group defaults to `sweep=default` unless the user picked one."""
    if any(arg.split("=", 1)[0] in ("sweep", "+sweep") for arg in argv):
        return argv
    return ["sweep=default", *argv]


def through_a_launcher(argv: list[str]) -> list[str] | None:
    """`hydra/launcher=<name>` (or `hydra.launcher.*`) here means the workers as that Hydra
    launcher's jobs: the same search through `src/train.py -m hparams_search=...`, the door
    that has Hydra's launchers (`mlpsweep.sweep.jobs`). None: this door's own workers."""
    if not any(arg.startswith(("hydra/launcher=", "hydra.launcher.")) for arg in argv):
        return None
    search = "hparams_search=grid" if "sweep=grid" in argv else "hparams_search=arch"
    return ["-m", search, *argv]


def main(argv: list[str]) -> int:
    hydra_argv = through_a_launcher(argv)
    if hydra_argv is not None:  # this process becomes that command (Hydra must run as __main__)
        train = str(Path(__file__).with_name("train.py"))
        os.execv(sys.executable, [sys.executable, train, *hydra_argv])
    overrides = with_sweep_selected(argv)
    cfg = config_or_exit(overrides, usage=__doc__ or "")
    from mlpsweep.config import ConfigError
    from mlpsweep.sweep import launch

    try:
        return launch(cfg, overrides)
    except ConfigError as error:
        return fail(str(error))
    except KeyboardInterrupt:
        return fail(
            "interrupted; running trials were queued again: re-run the same command to resume",
            code=130,
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
