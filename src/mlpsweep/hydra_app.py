"""What makes `src/train.py` a Hydra app that still fails in one line.

`@hydra.main` composes the config only when it is about to run, and reports a mistake with
Hydra's own multi-line text (or, for a value our schema rejects, only inside the job, after
the run folder exists). So `preflight` checks the command line first, with Hydra's own
parts: its argument parser, its override parser, `BasicSweeper.split_arguments` to expand a
multirun into its jobs, and the compose API to build every job's config exactly as
`@hydra.main` will (`return_hydra_config=True`). Each job's config then goes through the
schema and range checks, the checkpoint (if any) is matched against the model, and the
output folder is tried for writing (or, for a sweeper with a `check_before_launch`, such as
the project's Optuna sweeper, that sweeper checks its own settings and folders). Only then
does `@hydra.main` run. The alternative,
catching errors inside Hydra's private `_run_hydra`, would depend on how Hydra words and
prints them; this way Hydra is not touched and its flags keep working unchanged.

The cost is composing each job twice (Hydra's BasicSweeper composes each once more to
validate a batch): about 0.1 s per job, paid before a grid of seconds-long runs.

`ExitStatus` is a Hydra callback that gives the process its exit status: Hydra drops a
task's return value, and a multirun's jobs may run in other processes (joblib, submitit),
so a multirun reads each job's `metrics.json` when it ends.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mlpsweep.config import CONF_DIR, ConfigError, describe_hydra_error, validate
from mlpsweep.folders import claim_folder, free_folder_name
from mlpsweep.resources import check_run_fits

SHOW_ONLY = ("help", "hydra_help", "info", "shell_completion", "experimental_rerun")
FINE = ("completed", "pruned")  # a pruned trial of a sampling sweeper did its job
CHECKPOINT_KEYS = ("model.hidden", "model.layers", "model.ensemble", "model.lr", "data.normalize")

_reserve_run_dirs = False  # set by `reserve_run_dirs()` once a single run is about to start


def unique_dir(prefix: str) -> str:
    """`<prefix>_<4 hex>`, a folder no other run has: the resolver behind `hydra.run.dir`.

    Before a run starts (`--cfg hydra --resolve`, the preflight) it only names a free folder;
    once `reserve_run_dirs()` was called it creates it with an exclusive mkdir, so two runs
    started in the same second (even in parallel) never share one. Hydra then finds the
    folder made and writes into it. OmegaConf caches the result per config.
    """
    folder = claim_folder(prefix) if _reserve_run_dirs else free_folder_name(prefix)
    return str(folder)


def reserve_run_dirs() -> None:
    global _reserve_run_dirs
    _reserve_run_dirs = True


OmegaConf.register_new_resolver("mlpsweep.unique_dir", unique_dir, use_cache=True, replace=True)


# ---- the command line ----------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Hydra's own argument parser, but a bad flag is one `error:` line (argparse prints usage).

    A bare `--cfg` means `--cfg job`, as it did before the app used `@hydra.main`.
    """
    from hydra._internal.utils import get_args_parser

    args = list(argv)
    for index, arg in enumerate(args):
        if arg in ("--cfg", "-c") and (
            index + 1 == len(args) or args[index + 1] not in ("job", "hydra", "all")
        ):
            args.insert(index + 1, "job")
            break
    parser = get_args_parser()

    def one_line(message: str) -> None:
        raise ConfigError(f"{message} (python src/train.py --help lists the flags)")

    parser.error = one_line  # type: ignore[method-assign]
    return parser.parse_args(args), args


def preflight(argv: Sequence[str]) -> list[str]:
    """Check the command line as `@hydra.main` will run it; return the arguments to hand on.

    Raises ConfigError (one line) for every mistake a user can make in it, before any folder
    or file is written. `--help`, `--info` and shell completion pass unchecked: they take
    partial command lines by design.
    """
    args, argv = parse_args(argv)
    if any(getattr(args, name) for name in SHOW_ONLY) or args.config_path or args.config_dir:
        return argv
    check_one_command(args)
    config_name = args.config_name or "train"
    with hydra_compose_context():
        fixed = not_sweeps(args.overrides) if args.multirun else args.overrides
        base = compose_job(config_name, fixed, args.overrides)
        if not args.multirun:
            check_checkpoint(base)
            check_run_fits(base)
        for number, overrides in enumerate(
            job_overrides(base, args.overrides) if args.multirun else []
        ):
            try:
                job = compose_job(config_name, overrides, args.overrides)
                check_checkpoint(job)
                check_run_fits(job)
            except ConfigError as error:
                where = f"multirun job #{number}: {' '.join(overrides)}"
                raise ConfigError(f"{error} ({where})") from None
    if args.cfg == "hydra" and args.resolve:
        check_resolvable_alone(base)
    if args.multirun:
        sweeper = check_plugins(base)
        if hasattr(sweeper, "check_before_launch"):  # a sweeper that checks its own settings
            sweeper.check_before_launch(base, args.overrides)
        else:
            try_writing(base, "hydra.sweep.dir")
    elif args.cfg is None:
        refuse_sweeper_without_multirun(base)
        try_writing(base, "hydra.run.dir")
        reserve_run_dirs()
    return argv


def check_one_command(args: argparse.Namespace) -> None:
    """Hydra's own rules for its flags, raised there as exceptions with a traceback."""
    commands = [
        flag
        for flag, given in (
            ("--run", args.run),
            ("--multirun", args.multirun),
            ("--cfg", args.cfg is not None),
        )
        if given
    ]
    if len(commands) > 1:
        raise ConfigError(f"{' and '.join(commands)}: use only one of --run, --multirun and --cfg")
    if args.resolve and args.cfg is None:
        raise ConfigError(
            "--resolve: only with --cfg job|hydra|all (it resolves what --cfg prints)"
        )


def not_sweeps(overrides: Sequence[str]) -> list[str]:
    """The overrides of a multirun that every job shares (`model.hidden=5,10` is a sweep)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as error:
        raise ConfigError(describe_hydra_error(error, overrides)) from error
    return [o.input_line for o in parsed if not o.is_sweep_override()]


@contextmanager
def hydra_compose_context() -> Iterator[None]:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()


def compose_job(config_name: str, overrides: Sequence[str], typed: Sequence[str]) -> DictConfig:
    """One job's whole config (Hydra's node too), its job part type- and range-checked."""
    from hydra import compose

    try:
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    except Exception as error:  # Hydra's errors are many classes; all are the user's words
        raise ConfigError(describe_hydra_error(error, typed)) from error
    validate(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]))
    return cfg


def job_overrides(base: DictConfig, overrides: Sequence[str]) -> list[list[str]]:
    """Every job of a multirun, as Hydra's BasicSweeper will launch them.

    Another sweeper chooses its jobs while it runs: then only the overrides that are not
    sweeps are checked here, and each job's config is checked again when it starts.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not str(base.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return [not_sweeps(overrides)]
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(list(overrides))
        sampled = [
            o.input_line for o in parsed if o.is_sweep_override() and not o.is_discrete_sweep()
        ]
        if sampled:
            raise ConfigError(
                f"{sampled[0]}: Hydra's basic sweeper takes lists (a,b), range() and glob();"
                " interval() needs a sampling sweeper"
            )
        params = base.hydra.sweeper.get("params") or {}
        from_config = parser.parse_overrides([f"{key}={value}" for key, value in params.items()])
        (batch,) = BasicSweeper.split_arguments([*from_config, *parsed], max_batch_size=None)
    except ConfigError:
        raise
    except Exception as error:  # Hydra's words for an override it cannot expand
        raise ConfigError(describe_hydra_error(error, overrides)) from error
    return [list(job) for job in batch]


def check_resolvable_alone(cfg: DictConfig) -> None:
    """`--cfg hydra --resolve` resolves Hydra's node without the job's keys, and `hydra.run.dir`
    names `output_dir`: Hydra would answer with a traceback."""
    try:
        OmegaConf.to_container(OmegaConf.masked_copy(cfg, ["hydra"]), resolve=True)
    except Exception as error:
        key = getattr(error, "full_key", "hydra")
        first = str(error).splitlines()[0]
        raise ConfigError(
            f"--cfg hydra --resolve: {key}: {first} without the job's keys; use --cfg all --resolve"
        ) from None


def check_checkpoint(cfg: DictConfig) -> None:
    """`ckpt_path` must be a checkpoint of this model that has epochs left to train."""
    path = OmegaConf.select(cfg, "ckpt_path")
    if path is None:
        return
    checkpoint = load_checkpoint(str(path))
    hparams = checkpoint.get("hyper_parameters", {})
    saved = {
        "model.hidden": hparams.get("hidden"),
        "model.layers": hparams.get("layers"),
        "model.ensemble": hparams.get("ensemble"),
        "model.lr": hparams.get("lr"),
        "data.normalize": hparams.get("x_scale", 1.0) != 1.0 or hparams.get("x_shift", 0.0) != 0.0,
    }
    differ = [key for key in CHECKPOINT_KEYS if saved[key] != OmegaConf.select(cfg, key)]
    if differ:
        asked = " ".join(f"{key}={OmegaConf.select(cfg, key)}" for key in differ)
        has = " ".join(f"{key}={saved[key]}" for key in differ)
        raise ConfigError(
            f"ckpt_path={path}: a checkpoint of {has}, not {asked}; resume with the same model"
        )
    epochs = int(checkpoint.get("mlpsweep", {}).get("epochs_trained", checkpoint.get("epoch", 0)))
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if max_epochs <= epochs:
        raise ConfigError(
            f"trainer.max_epochs={max_epochs}: ckpt_path={path} has trained {epochs} epochs"
            " already;"
            f" resume with trainer.max_epochs > {epochs}"
        )


_checkpoints: dict[str, dict[str, Any]] = {}


def load_checkpoint(path: str) -> dict[str, Any]:
    """A Lightning checkpoint's metadata (read once per path: a multirun asks per job)."""
    if path not in _checkpoints:
        if not Path(path).is_file():
            raise ConfigError(f"ckpt_path={path}: no such file; give a run's checkpoints/last.ckpt")
        import torch

        try:
            _checkpoints[path] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ConfigError(
                f"ckpt_path={path}: not a checkpoint this app can read ({type(error).__name__})"
            ) from error
    return _checkpoints[path]


def check_plugins(cfg: DictConfig) -> type:
    """The launcher and sweeper classes a multirun will instantiate must import; returns the
    sweeper's class."""
    from hydra.utils import get_class

    classes = {}
    for group in ("launcher", "sweeper"):
        target = str(cfg.hydra[group].get("_target_", ""))
        try:
            classes[group] = get_class(target)
        except Exception as error:
            cause = error.__cause__ or error
            raise ConfigError(
                f"hydra/{group}: its class {target} does not import ({cause}); install its package"
            ) from None
    return classes["sweeper"]


def refuse_sweeper_without_multirun(cfg: DictConfig) -> None:
    """Without -m Hydra runs one job and never calls the sweeper: `hparams_search=arch` would
    train one plain run with the search's settings, and search nothing."""
    if str(cfg.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return
    choices = cfg.hydra.runtime.choices
    chosen = (
        f"hparams_search={choices['hparams_search']}"
        if choices.get("hparams_search") is not None
        else f"hydra/sweeper={choices.get('hydra/sweeper')}"
    )
    raise ConfigError(
        f"{chosen}: a sweeper runs only in a multirun; add -m (python src/train.py -m {chosen} ...)"
    )


def try_writing(cfg: DictConfig, key: str) -> None:
    """Try creating the folder `key` names, and a file in it, or fail in one line."""
    try:
        folder = Path(str(OmegaConf.select(cfg, key)))
    except Exception:  # an interpolation only a running job can resolve (hydra:job.num...)
        return
    existed = folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{secrets.token_hex(4)}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"{key}={folder}: cannot write there ({error.strerror}); choose a writable folder"
        ) from None
    if not existed:  # Hydra makes its own a moment later: its `${now:}` may be a second on
        folder.rmdir()


# ---- exit status ---------------------------------------------------------------------------


class ExitStatus(Callback):
    """The process's exit status: a run's (0, 1 failed, 130 interrupted), or a multirun's."""

    def __init__(self) -> None:
        self.started = 0.0

    def on_run_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        code = job_return.return_value if job_return.status == JobStatus.COMPLETED else 0
        if isinstance(code, int) and code:
            sys.exit(code)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        MULTIRUN.update(sweep_dir=Path(str(config.hydra.sweep.dir)), started=self.started)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """List the jobs whose `metrics.json` does not say `completed`; exit 1 (130) if any."""
        line, code = unfinished_runs(Path(str(config.hydra.sweep.dir)), self.started)
        if line:
            print(f"error: {line}", file=sys.stderr)
            sys.exit(code)


MULTIRUN: dict[str, Any] = {}  # this process's multirun: its folder and start, for `launcher_died`
# what Hydra's launchers raise when a job's process died: joblib's loky executor, submitit
JOB_DIED = ("TerminatedWorkerError", "BrokenProcessPool", "UncompletedJobError", "FailedJobError")


def unfinished_runs(sweep_dir: Path, started: float) -> tuple[str, int]:
    """One line naming this multirun's runs that did not complete, and the exit status
    (130 if one was interrupted, else 1); ("", 0) when every run completed."""
    jobs = [p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")]
    this_sweep = [
        job for job in jobs if (job / ".hydra" / "overrides.yaml").stat().st_mtime >= started - 1
    ]
    failed = {
        job: job_status(job) for job in sorted(this_sweep, key=lambda p: (len(p.name), p.name))
    }
    failed = {job: status for job, status in failed.items() if status not in FINE}
    if not failed:
        return "", 0
    listed = "; ".join(
        f"#{job.relative_to(sweep_dir)} ({overrides_of(job)}): {status}"
        for job, status in failed.items()
    )
    line = f"{len(failed)} of {len(this_sweep)} runs did not complete: {listed} (in {sweep_dir})"
    return line, 130 if "interrupted" in failed.values() else 1


def launcher_died(error: BaseException) -> str | None:
    """The one line for a multirun whose launcher raised because a job's process died
    (killed, out of memory): the runs that did not complete, and the launcher's reason.
    None for any other error, which keeps its traceback."""
    if not MULTIRUN or not any(cls.__name__ in JOB_DIED for cls in type(error).__mro__):
        return None
    line, _ = unfinished_runs(MULTIRUN["sweep_dir"], MULTIRUN["started"])
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0]
    cause = f"a job's process died ({type(error).__name__}: {reason})"
    return f"{line}; {cause}" if line else cause


def job_status(job_dir: Path) -> str:
    import json

    try:
        return str(json.loads((job_dir / "metrics.json").read_text())["status"])
    except (OSError, ValueError, KeyError):
        return "no metrics.json (did not finish)"


def overrides_of(job_dir: Path) -> str:
    overrides = OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")
    return " ".join(str(o) for o in overrides) or "(no overrides)"
