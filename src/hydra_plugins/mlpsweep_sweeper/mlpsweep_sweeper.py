"""The Sweeper: Hydra's `-m` hands the command line to `mlpsweep.sweep.launch`, nothing more.

Hydra's own sweepers (basic, optuna, ax) expand the command line into jobs and give each
batch of jobs to a launcher, which waits for the whole batch before the next is asked. The
project's engine works differently: its workers ask Optuna for trials, train a batch of
trials as one network, tell each trial as it ends and never wait for each other, and it
can resume and spread over machines. So this sweeper does not launch trials: it passes the
user's overrides to the engine, which composes each trial's config itself, exactly as it
does for `python src/sweep.py`. One engine, two doors. With `hydra/launcher=...` the
launcher gets the *workers* as its jobs instead (`mlpsweep.sweep.jobs`): `sweep.workers`
jobs, each the engine's worker loop, with no barrier between them.

Hydra drops a sweeper's return value, so `sweep` ends the process with the engine's exit
status when it is not 0 (1: the study is incomplete or nothing completed; 2: a setting the
storage refused, such as a resume with other training settings; 130: Ctrl-C). The engine
is imported only when a search starts: Hydra imports this module for every command.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from mlpsweep.config import ConfigError

INTERRUPTED = "interrupted; running trials were queued again: re-run the same command to resume"


class MlpsweepOptunaSweeper(Sweeper):
    """`hydra/sweeper=mlpsweep_optuna`: the project's Optuna search behind Hydra's `-m`."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.launcher = None  # built only for `hydra/launcher=...`: see mlpsweep.sweep.jobs

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep the composed config and the task: with a launcher, each job runs the task,
        which sees it is a worker of the study (`jobs.is_worker_job`)."""
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config

    def sweep(self, arguments: list[str]) -> int:
        """Run the search as `python src/sweep.py <the same overrides>` would; 0 when complete.

        Without `hydra/launcher`, the engine's own worker processes; with one, the workers
        are that launcher's jobs (`mlpsweep.sweep.jobs.LauncherJobs`).
        """
        assert self.config is not None, "Hydra calls setup() before sweep()"
        from mlpsweep.sweep.jobs import LauncherJobs, uses_launcher

        runner = None
        if uses_launcher(self.config):
            assert self.hydra_context is not None and self.task_function is not None
            runner = LauncherJobs(self.hydra_context, self.task_function, self.config, arguments)
        code = run_engine(engine_overrides(self.config, arguments), runner)
        if code:
            sys.exit(code)
        return code

    @staticmethod
    def check_before_launch(config: DictConfig, typed: Sequence[str]) -> None:
        """Every mistake in a search's command line as one ConfigError, before anything exists.

        Called by `mlpsweep.hydra_app.preflight` with the composed config (Hydra's node too)
        and everything typed: lists and ranges of values, or `hydra.sweep.*`, would be
        silently ignored by this sweeper, so they are refused, as is a launcher whose jobs
        may run elsewhere with an SQLite storage; then the engine's own checks run on the
        settings and on a trial's config.
        """
        parsed = parse(typed)
        refuse_hydra_grids(parsed)
        refuse_sweep_dir(parsed)
        from mlpsweep.config import compose
        from mlpsweep.sweep.jobs import check_launcher
        from mlpsweep.sweep.launcher import check_before_creating
        from mlpsweep.sweep.settings import parse_settings

        typed_for_the_job = [o.input_line for o in parsed if not o.is_hydra_override()]
        overrides = engine_overrides(config, typed_for_the_job)
        settings = parse_settings(compose(overrides))
        check_launcher(config, settings)
        check_before_creating(settings, overrides)


def engine_overrides(config: DictConfig, arguments: Sequence[str]) -> list[str]:
    """The overrides `src/sweep.py` would receive: those typed (Hydra's `hydra.*` aside), and
    `sweep=default` first when nothing chose a sweep config, as `src/sweep.py` does."""
    return engine_overrides_for(OmegaConf.select(config, "hydra.runtime.choices.sweep"), arguments)


def engine_overrides_for(chosen_sweep: str | None, arguments: Sequence[str]) -> list[str]:
    return list(arguments) if chosen_sweep is not None else ["sweep=default", *arguments]


def run_engine(overrides: list[str], run_workers: Any = None) -> int:
    """`mlpsweep.sweep.launch` on the config `src/sweep.py` composes; its exit status."""
    from mlpsweep.cli import fail
    from mlpsweep.config import compose
    from mlpsweep.sweep import launch

    try:
        return launch(compose(overrides), overrides, run_workers)
    except ConfigError as error:
        return fail(str(error))
    except KeyboardInterrupt:
        return fail(INTERRUPTED, code=130)


def parse(typed: Sequence[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mlpsweep.config import describe_hydra_error

    try:
        return OverridesParser.create().parse_overrides(list(typed))
    except Exception as error:  # Hydra's words for an override it cannot read
        raise ConfigError(describe_hydra_error(error, typed)) from error


def refuse_hydra_grids(parsed: Sequence[Any]) -> None:
    """`model.hidden=5,10` is a grid for Hydra's basic sweeper; here Optuna picks the values."""
    for override in parsed:
        if override.is_sweep_override() and not override.is_hydra_override():
            key = override.get_key_element()
            raise ConfigError(
                f"{override.input_line}: the Optuna search chooses each trial's values; search "
                f"{key} through sweep.space.{key} (or give it one value)"
            )


def refuse_sweep_dir(parsed: Sequence[Any]) -> None:
    """Trials are written under `sweep.output_dir`, not Hydra's sweep folder."""
    for override in parsed:
        if override.get_key_element().startswith("hydra.sweep."):
            raise ConfigError(
                f"{override.input_line}: the Optuna search writes its trials under "
                "sweep.output_dir/<sweep.study_name>; set sweep.output_dir instead"
            )
