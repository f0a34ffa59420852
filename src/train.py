"""`python src/train.py [key=value ...]`: one training run (the tutorial's by default).

A Hydra app: `-m` runs a grid (one folder per job under `hydra.sweep.dir`, any installed
launcher), `--cfg job|hydra|all`, `--info`, `--help`, `--shell-completion` are Hydra's, and
every run folder has Hydra's `.hydra/` record and a `train.log`. `-m hparams_search=arch`
(or `=grid`) runs the Optuna search of `src/sweep.py` through the project's Hydra sweeper.
User mistakes print one line and exit 2, before anything is written (see
`mlpsweep.hydra_app.preflight`); a run that fails (non-finite loss) exits 1, Ctrl-C 130.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mlpsweep.cli import compiled_step_or_exit, fail
from mlpsweep.config import ConfigError

log = logging.getLogger("mlpsweep.result")
log_error = logging.getLogger("mlpsweep.error")
log_warning = logging.getLogger("mlpsweep.warning")  # its lines carry their own "warning:"


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def train_app(cfg: DictConfig) -> int:
    """One run in the folder Hydra made; returns the exit status (see hydra_app.ExitStatus)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mlpsweep.config import validate

    logging.captureWarnings(True)  # the run's warnings go to its train.log too
    hydra_cfg = HydraConfig.get()
    from mlpsweep.sweep.jobs import is_worker_job, run_worker_job

    if is_worker_job(hydra_cfg):  # `-m hparams_search=... hydra/launcher=...`: a sweep worker
        return run_worker_job(hydra_cfg)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        cfg = validate(cfg)  # checked before launch too; a sweeper's proposals only here
    except ConfigError as error:
        log_error.error("%s", error)
        return 2
    from mlpsweep.model import NonFiniteLossError
    from mlpsweep.training import closing_line, learned_nothing_warning, train

    try:
        result = train(cfg, run_dir)
    except NonFiniteLossError as error:
        log_error.error("%s (run folder kept for inspection: %s)", error, run_dir)
        return 1
    except KeyboardInterrupt as error:
        log_error.error(
            "%s; the partial run is in %s (metrics.json status: interrupted)",
            error or "interrupted",
            run_dir,
        )
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # Ctrl-C stops the whole multirun, not just this job
        return 130
    log.info("%s", closing_line(result))
    warning = learned_nothing_warning(result)
    if warning:
        log_warning.warning("%s", warning)
    return 0


def main(argv: list[str]) -> int:
    """Check the command line (one `error:` line, exit 2), then hand it to Hydra."""
    from mlpsweep.hydra_app import preflight

    try:
        argv = preflight(argv)
    except ConfigError as error:
        return fail(str(error))
    if not any(arg in ("-h", "--help", "-c", "--cfg", "--info") for arg in argv):
        compiled_step_or_exit()
    sys.argv = [sys.argv[0], *argv]
    if any(arg in ("-m", "--multirun") for arg in argv):
        # Hydra prints a launcher's exception with its traceback and exits 1; this asks it to
        # raise instead, so that a job whose process died is one line (`launcher_died`)
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        train_app()
    except KeyboardInterrupt:
        return fail("interrupted: the multirun stopped; finished runs keep their folders", code=130)
    except Exception as error:
        from mlpsweep.hydra_app import launcher_died

        line = launcher_died(error)
        if line is None:
            raise
        return fail(line, code=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
