"""The sweep's workers as jobs of a Hydra launcher: `-m hparams_search=arch hydra/launcher=...`.

The engine needs no barrier (each worker loops ask -> train -> tell on the shared storage),
so the unit handed to a launcher is the *worker*, not the trial: `sweep.workers` jobs, each
running the same worker loop as a worker process of `src/sweep.py` (`run_worker_job`), while
this process only watches the study and draws the progress bar. The launcher is Hydra's
own plugin (joblib, submitit_local, submitit_slurm, ...); nothing here schedules anything.

- *Jobs fail like workers.* A dead job's trials are queued again at once when its process
  is known dead on this host (`liveness`), by heartbeat otherwise. joblib's executor kills
  every job when one dies, and submitit returns before the others end: so after each launch
  this process waits for the trials still running, and launches a fresh set of workers
  (new worker numbers) while the study is short and a job died, at most `sweep.max_retry`
  times. A job SLURM requeues (submitit's checkpoint) simply rejoins the study.
- *Ctrl-C* raises in this process inside the launcher. The jobs' worker numbers are then
  marked stopped in the study; each job watches that mark (`StopWatch`) and stops as a
  worker stops on SIGTERM, queueing its trials again. joblib kills its jobs itself, and
  their trials are queued again here.
- *Storage.* A job on another machine cannot reach this machine's SQLite file, so a
  launcher other than joblib and submitit_local needs a server (`check_launcher`), unless
  the user declares the file shared (`sweep.storage_shared=true`, at their own risk). The
  password never goes into a job's overrides (which launchers log and pickle into job
  folders): the jobs get the URL without it, and libpq's own `PGPASSWORD` variable in their
  environment, which joblib, submitit's local jobs and `sbatch` (`--export=ALL`, SLURM's
  default) pass on.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import optuna
from omegaconf import DictConfig, OmegaConf, open_dict

from mlpsweep.config import ConfigError
from mlpsweep.storage import scrub

if TYPE_CHECKING:
    from hydra.types import HydraContext, TaskFunction

    from mlpsweep.sweep.launcher import SweepProgress
    from mlpsweep.sweep.settings import SweepSettings

SWEEPER_CLASS = "MlpsweepOptunaSweeper"
# launchers whose jobs run on this machine (every other may run them elsewhere)
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher", "LocalLauncher")
STOPPED_ATTR = "mlpsweep:stopped_workers"  # worker numbers whose launch was interrupted
JOB_DIED = ("TerminatedWorkerError", "BrokenProcessPool", "UncompletedJobError", "FailedJobError")
STOP_TIMEOUT_S = 30


# ---- in the launching process --------------------------------------------------------


def launcher_name(config: DictConfig) -> str:
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    return str(OmegaConf.select(config, "hydra.runtime.choices.hydra/launcher", default=target))


def uses_launcher(config: DictConfig) -> bool:
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    return not target.endswith(".BasicLauncher")


def check_launcher(config: DictConfig, settings: SweepSettings) -> None:
    """A launcher that may run jobs on other machines needs a storage they all reach."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    local = target.rsplit(".", 1)[-1] in LOCAL_LAUNCHERS
    declared_shared = bool(OmegaConf.select(config, "sweep.storage_shared", default=False))
    if local or declared_shared or not settings.storage_url.startswith("sqlite"):
        return
    raise ConfigError(
        f"hydra/launcher={launcher_name(config)}: its jobs may run on other machines, which "
        f"cannot share the SQLite file of sweep.storage={settings.storage_display!r}; give "
        "them a server they all reach: sweep.storage=postgresql://user@host:5432/db (or, "
        "for a file on a shared file system, sweep.storage_shared=true: see docs/cluster.md)"
    )


def without_password(overrides: Sequence[str]) -> tuple[list[str], str | None]:
    """The overrides with `sweep.storage`'s password removed, and that password (or None)."""
    password = None
    kept = []
    for override in overrides:
        key, sep, url = override.partition("=")
        if key.lstrip("+") == "sweep.storage" and sep and urlsplit(url).password:
            parts = urlsplit(url)
            password = parts.password
            netloc = parts.netloc.rsplit("@", 1)[1]
            user = parts.username or ""
            override = f"{key}={parts._replace(netloc=f'{user}@{netloc}').geturl()}"
        kept.append(override)
    return kept, password


def without_secret(config: DictConfig, password: str | None) -> DictConfig:
    """A copy of `config` in which no string holds `:<password>@` (`sweep.storage` itself,
    Hydra's record of the overrides, `hydra.job.override_dirname`...)."""
    if password is None:
        return config.copy()
    secret = f":{password}@"

    def scrubbed(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: scrubbed(value) for key, value in node.items()}
        if isinstance(node, list):
            return [scrubbed(value) for value in node]
        return node.replace(secret, "@") if isinstance(node, str) else node

    plain = OmegaConf.to_container(config, resolve=False)
    copy = OmegaConf.create(scrubbed(plain))
    assert isinstance(copy, DictConfig)
    OmegaConf.copy_cache(from_config=config, to_config=copy)
    return copy


class LauncherJobs:
    """A `launcher.WorkerRunner`: the study's workers as jobs of the configured Hydra launcher."""

    def __init__(
        self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig,
        arguments: Sequence[str],
    ) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.job_arguments, self.password = without_password(arguments)

    def __call__(
        self,
        settings: SweepSettings,
        overrides: Sequence[str],
        study: optuna.Study,
        progress: SweepProgress,
        first_number: int,
    ) -> list[str]:
        from mlpsweep.sweep.optuna_setup import open_sweep_storage

        storage = open_sweep_storage(settings)
        launcher = self.instantiate(settings)
        jobs_dir = (settings.study_dir / "jobs").resolve()
        arguments = [*self.job_arguments, f"hydra.sweep.dir={jobs_dir}"]
        if self.password is not None:
            os.environ["PGPASSWORD"] = self.password  # libpq's own: see the module docstring
        dead: list[str] = []
        number = first_number
        for attempt in range(settings.max_retry + 1):
            before = finished(study)
            died = self.launch_once(launcher, arguments, settings, study, storage, progress,
                                    number, dead)
            wait_for_running(study, storage)  # jobs that outlived the launcher's return
            # once more after a death; again only if the study moved (else it fails alike)
            hopeful = died and (attempt == 0 or finished(study) > before)
            if not hopeful or finished(study) >= settings.n_trials:
                return dead
            if attempt < settings.max_retry:
                number = new_worker_numbers(settings)
        return dead

    def instantiate(self, settings: SweepSettings) -> Any:
        """Hydra's launcher, from a copy of the config whose password-free job overrides
        are the only ones it sees (it logs them, and submitit pickles itself into job folders)."""
        from hydra.core.plugins import Plugins

        config = without_secret(self.config, self.password)
        with open_dict(config):
            config.hydra.sweep.dir = str((settings.study_dir / "jobs").resolve())
            config.hydra.overrides.task = list(self.job_arguments)
        return Plugins.instance().instantiate_launcher(
            hydra_context=self.hydra_context, task_function=self.task_function, config=config
        )

    def launch_once(
        self, launcher: Any, arguments: list[str], settings: SweepSettings,
        study: optuna.Study, storage: optuna.storages.RDBStorage, progress: SweepProgress,
        number: int, dead: list[str],
    ) -> bool:
        """One launch of `sweep.workers` jobs; appends the jobs that failed to `dead` and
        returns whether one died (its process gone, not a worker that returned an error)."""
        try:
            with refreshing(progress, study), quiet_logger(launcher):
                returns = launcher.launch([arguments] * settings.workers, initial_job_idx=number)
        except KeyboardInterrupt:
            stop_jobs(study, storage, range(number, number + settings.workers))
            raise
        except Exception as error:
            reason = (str(error).strip().splitlines() or [""])[0].split(". ")[0]
            if not any(cls.__name__ in JOB_DIED for cls in type(error).__mro__):
                # not a job's death: the launcher itself refused (no srun, a bad partition)
                raise ConfigError(
                    f"hydra/launcher={launcher_name(self.config)}: the launcher failed "
                    f"({type(error).__name__}: {scrub(reason)}); the study is kept: "
                    "fix its settings (hydra.launcher.*) and re-run the same command"
                ) from error
            dead.append(f"a job of hydra/launcher={launcher_name(self.config)} "
                        f"({type(error).__name__}: {scrub(reason)})")
            return True
        for index, job in enumerate(returns):
            code = job_code(job)
            if code:
                dead.append(f"job #{number + index} (exit {code})")
        return False


def job_code(job: Any) -> int:
    """A finished job's exit status: the task's return value, 1 if it raised."""
    from hydra.core.utils import JobStatus

    if job.status != JobStatus.COMPLETED:
        return 1
    return job.return_value if isinstance(job.return_value, int) else 0


def finished(study: optuna.Study) -> int:
    from mlpsweep.sweep.trial_states import finished_count

    return finished_count(study.get_trials(deepcopy=False))


def new_worker_numbers(settings: SweepSettings) -> int:
    """Fresh worker numbers for a relaunch, so its samplers are seeded apart from the last."""
    from mlpsweep.sweep.locks import storage_lock
    from mlpsweep.sweep.optuna_setup import claim_worker_numbers, open_sweep_storage

    with storage_lock(settings):
        storage = open_sweep_storage(settings)
        return claim_worker_numbers(storage, settings.study_name, settings.workers)


def wait_for_running(study: optuna.Study, storage: optuna.storages.RDBStorage) -> None:
    """Until no trial is RUNNING: trials of dead processes here are queued again at once,
    stale ones (other hosts) once their heartbeat's grace period is over."""
    from optuna.trial import TrialState

    from mlpsweep.sweep.liveness import requeue_dead_local

    while True:
        optuna.storages.fail_stale_trials(study)
        requeue_dead_local(study, storage)
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return
        time.sleep(1.0)


def stop_jobs(
    study: optuna.Study, storage: optuna.storages.RDBStorage, numbers: range
) -> None:
    """Ctrl-C: mark these workers stopped (each job sees it within a heartbeat and queues
    its trials again), wait (at most STOP_TIMEOUT_S) for the trials running now to leave
    RUNNING, and queue again those of jobs that are dead here (joblib kills its own)."""
    from optuna.trial import TrialState

    from mlpsweep.sweep.liveness import requeue_dead_local

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        identifier = storage.get_study_id_from_name(study.study_name)
        stopped = set(storage.get_study_system_attrs(identifier).get(STOPPED_ATTR, []))
        storage.set_study_system_attr(identifier, STOPPED_ATTR, sorted(stopped | set(numbers)))
        running = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while running and time.monotonic() < deadline:
            time.sleep(0.5)
            requeue_dead_local(study, storage)
            still = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
            running &= still
    finally:
        signal.signal(signal.SIGINT, previous)


def study_storage_of(study: optuna.Study) -> Any:
    from mlpsweep.sweep.optuna_private import study_storage

    return study_storage(study)


@contextlib.contextmanager
def refreshing(progress: SweepProgress, study: optuna.Study) -> Iterator[None]:
    """The progress bar redrawn each second from a thread while the launcher blocks."""
    from mlpsweep.sweep.outage import StorageLost

    done = threading.Event()

    def loop() -> None:
        while not done.wait(1.0):
            try:
                if progress.done():  # every trial finished: the clock stops now
                    return
                progress.refresh(study)
            except StorageLost:
                return

    thread = threading.Thread(target=loop, name="sweep-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def quiet_logger(launcher: Any) -> Iterator[None]:
    """The launcher's INFO lines (its jobs' overrides) off stdout: the command prints what
    `src/sweep.py` prints. Its warnings still show."""
    logger = logging.getLogger(type(launcher).__module__.rsplit(".", 1)[0])
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


# ---- in a job ------------------------------------------------------------------------


def is_worker_job(hydra_cfg: Any) -> bool:
    """A multirun job started by the project's sweeper: a worker of the study."""
    from hydra.types import RunMode

    target = str(OmegaConf.select(hydra_cfg, "sweeper._target_", default=""))
    return hydra_cfg.mode == RunMode.MULTIRUN and target.endswith(SWEEPER_CLASS)


def run_worker_job(hydra_cfg: Any) -> int:
    """One worker of the study, as a launcher job: its worker number is Hydra's job number.

    Exit status as a worker process's: 0, 130 stopped (Ctrl-C on the command, SIGTERM,
    submitit's cancel), 75 the storage lost (`outage`).
    """
    from hydra_plugins.mlpsweep_sweeper.mlpsweep_sweeper import engine_overrides_for
    from mlpsweep.config import compose
    from mlpsweep.sweep.liveness import interrupt_on_sigterm
    from mlpsweep.sweep.optuna_setup import open_sweep_storage, worker_study
    from mlpsweep.sweep.outage import STORAGE_LOST_EXIT, StorageLost
    from mlpsweep.sweep.settings import parse_settings
    from mlpsweep.sweep.trial_config import training_overrides
    from mlpsweep.sweep.worker import run_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    number = int(hydra_cfg.job.num)
    overrides = engine_overrides_for(
        OmegaConf.select(hydra_cfg, "runtime.choices.sweep"), list(hydra_cfg.overrides.task)
    )
    try:
        interrupt_on_sigterm()
        settings = parse_settings(compose(overrides))
        storage = open_sweep_storage(settings)
        study = worker_study(settings, storage, number)
        with StopWatch(study, number, settings.heartbeat_interval):
            run_trials(study, settings, storage, training_overrides(overrides))
    except KeyboardInterrupt:
        return 130
    except StorageLost:
        return STORAGE_LOST_EXIT
    except ConfigError as error:
        logging.getLogger("mlpsweep.error").error("%s", error)
        return 2
    return 0


class StopWatch:
    """Interrupts this job (as Ctrl-C would) once the launching command marked its worker
    number stopped: the one signal that reaches a job on any machine is the study."""

    def __init__(self, study: optuna.Study, number: int, interval: float) -> None:
        self.study, self.number, self.interval = study, number, interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="stop-watch", daemon=True)

    def __enter__(self) -> StopWatch:
        if self.stopped():
            raise KeyboardInterrupt("the launching command was interrupted")
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.done.set()

    def stopped(self) -> bool:
        storage = study_storage_of(self.study)
        identifier = storage.get_study_id_from_name(self.study.study_name)
        attrs = storage.get_study_system_attrs(identifier)
        return self.number in attrs.get(STOPPED_ATTR, [])

    def watch(self) -> None:
        while not self.done.wait(self.interval):
            try:
                if self.stopped():
                    _thread.interrupt_main()
                    return
            except Exception:  # the storage's outage is the worker's own to report
                continue
