"""Will it fit? A run's memory, estimated before anything is built, and a sweep's workers
against this machine's cores and memory.

Without this, `model.ensemble=100000 model.hidden=1000` or `sweep.workers=1000` was
accepted: the first allocates until the kernel kills it (or another program), the second
starts hundreds of processes that each load torch (the load average reached 183 on 2
cores and nothing trained). Each is now one `ConfigError` line with the figures.

The estimate counts the tensors that grow with the config, at the widths the engine
computes (`layout.canonical_width`: hidden layers padded to a multiple of 16 units), so it
is a floor, not a ceiling: measured on this project's runs (peak RSS, 2 epochs) it came
within 10% for 3000 members of 20 units and within 25% for 3 layers of 1000 units.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from mlpsweep.config import ConfigError
from mlpsweep.layout import OUTPUT_BIAS_SLOTS, canonical_width, tail_free_length

if TYPE_CHECKING:
    from mlpsweep.sweep.settings import SweepSettings

FLOAT_BYTES = 4  # float32 everywhere (see mlpsweep.model)
# Adam keeps, beside each parameter, its gradient and two moment estimates.
COPIES_PER_PARAMETER = 4
TRAINING_POINTS = 100  # the tutorial's x = -50..49, validated too (train/acc)
# Peak RSS of a process that imported torch, Lightning and Optuna and trained the tutorial's
# run: 0.45 GB measured (440 MiB); a sweep worker is such a process.
PROCESS_BYTES = 440 * 2**20
# More workers than cores only take turns; up to two per core still make progress (a worker
# also waits on the storage and its ask lock), beyond that each gets too little of a core to
# keep its heartbeat and its trials go stale.
WORKERS_PER_CORE = 2
GIB = 2**30
# Keys the estimate reads, and the searched ones whose largest value it takes.
SIZE_KEYS = (
    "model.hidden", "model.layers", "model.ensemble", "data.val_points", "trainer.max_epochs"
)


@dataclass(frozen=True)
class RunSize:
    """The config values a run's memory grows with."""

    hidden: int
    layers: int
    ensemble: int
    val_points: int
    max_epochs: int

    @classmethod
    def of(cls, cfg: Any) -> RunSize:
        get = (lambda key: cfg[key]) if isinstance(cfg, dict) else (
            lambda key: OmegaConf.select(cfg, key)
        )
        return cls(*(int(get(key)) for key in SIZE_KEYS))

    def terms(self) -> dict[str, tuple[int, tuple[str, ...]]]:
        """Bytes of each part of the run, with the keys it grows with."""
        width, members = canonical_width(self.hidden), self.ensemble
        per_member = (
            2 * width  # the input layer's weights and biases
            + (self.layers - 1) * (width * width + width)  # each further hidden layer
            + width + OUTPUT_BIAS_SLOTS  # the output unit
        )
        # every layer's output is kept for the validation grid and the training points
        points = tail_free_length(self.val_points + TRAINING_POINTS)
        return {
            "parameters and Adam's state": (
                COPIES_PER_PARAMETER * members * per_member * FLOAT_BYTES,
                ("model.hidden", "model.layers", "model.ensemble"),
            ),
            "validation activations": (
                members * points * width * self.layers * FLOAT_BYTES,
                ("model.hidden", "model.layers", "model.ensemble", "data.val_points"),
            ),
            "per-epoch losses": (
                members * self.max_epochs * FLOAT_BYTES, ("model.ensemble", "trainer.max_epochs")
            ),
        }

    def tensor_bytes(self) -> int:
        return sum(size for size, _ in self.terms().values())

    def largest_term(self) -> tuple[str, tuple[str, ...]]:
        name, (_, keys) = max(self.terms().items(), key=lambda item: item[1][0])
        return name, keys

    def value(self, key: str) -> int:
        return int(getattr(self, key.split(".")[1]))


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_available() -> int | None:
    """What a cgroup v2 memory limit (a container's) still allows, if there is one."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text()))
    except (OSError, ValueError):
        return None


def available_memory() -> int:
    """Bytes this machine can still give: the kernel's MemAvailable (what can be had
    without swapping), or less under a container's limit."""
    figures = [figure for figure in (_meminfo_available(), _cgroup_available()) if figure]
    if not figures:
        figures = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
    return min(figures)


def usable_cores() -> int:
    """The cores this process may run on (its affinity, e.g. under taskset or SLURM)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _gib(size: float) -> str:
    return f"{size / GIB:.1f} GiB" if size < 1024 * GIB else f"{size / 2**40:,.1f} TiB"


def check_run_fits(cfg: DictConfig, available: int | None = None) -> None:
    """ConfigError, one line, if the run's tensors and its process exceed free memory."""
    size = RunSize.of(cfg)
    needed = PROCESS_BYTES + size.tensor_bytes()
    free = available_memory() if available is None else available
    if needed <= free:
        return
    part, keys = size.largest_term()
    given = " ".join(f"{key}={size.value(key)}" for key in keys)
    raise ConfigError(
        f"{given}: the run needs about {_gib(needed)} of memory ({part}: "
        f"{_gib(size.terms()[part][0])}, hidden layers stored "
        f"{canonical_width(size.hidden)} units wide), this machine has {_gib(free)} free; "
        f"lower {' or '.join(keys)}"
    )


def largest_trial(cfg: DictConfig, settings: SweepSettings) -> RunSize:
    """The biggest trial the space can propose: every size key at its largest searched value
    (memory grows with each of them), the others as the command line fixed them."""
    values = {key: OmegaConf.select(cfg, key) for key in SIZE_KEYS}
    for spec in settings.space:
        if spec.path in values:
            candidates = spec.choices if spec.kind == "categorical" else (spec.high,)
            values[spec.path] = max(int(value) for value in candidates)
    return RunSize.of(values)


def check_workers_fit(
    cfg: DictConfig,
    settings: SweepSettings,
    available: int | None = None,
    cores: int | None = None,
) -> None:
    """ConfigError, one line with the memory and core figures, if this machine cannot hold
    `sweep.workers` processes each training `sweep.batch` of the space's largest trials."""
    cores = usable_cores() if cores is None else cores
    free = available_memory() if available is None else available
    trial = largest_trial(cfg, settings)
    per_worker = PROCESS_BYTES + settings.batch * trial.tensor_bytes()
    launcher = PROCESS_BYTES if settings.workers > 1 else 0  # it only watches, in its own process
    needed = launcher + settings.workers * per_worker
    most_by_cores = WORKERS_PER_CORE * cores
    if needed <= free and settings.workers <= most_by_cores:
        return
    most = min(most_by_cores, max(0, math.floor((free - PROCESS_BYTES) / per_worker)))
    way_out = f"at most {most} workers here" if most >= 1 else (
        "not even one fits: lower sweep.batch or the space's model.hidden/model.layers high"
    )
    raise ConfigError(
        f"sweep.workers={settings.workers}: {settings.workers} workers need about "
        f"{_gib(needed)} of memory ({_gib(per_worker)} each: torch and a batch of "
        f"{settings.batch} trials up to {trial.hidden}x{trial.layers}) and at least "
        f"{math.ceil(settings.workers / WORKERS_PER_CORE)} cores ({WORKERS_PER_CORE} workers a "
        f"core at most); this machine has {cores} cores and {_gib(free)} free: {way_out}"
    )


def check_sweep_fits(settings: SweepSettings, overrides: Sequence[str]) -> None:
    """`check_workers_fit` for the sweep's command line (the launcher's check, run once
    before anything is created; workers do not check again: the memory they take would
    count against them)."""
    from mlpsweep.config import compose

    check_workers_fit(compose(overrides), settings)
