"""Shared fixtures: configs composed the way the entry point composes them, `src/train.py` as a
subprocess, and one finished run that several tests read (training is the slow part)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

from mlpsweep.config import compose

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO_ROOT / "src" / "train.py"


def restore_ctrl_c_for_the_programs_under_test() -> None:
    """Let the interrupt tests' SIGINT reach the programs they start, however pytest was started.

    A shell starts a background job (`make test &`, `nohup ... &`, some CI runners) with SIGINT
    ignored, an ignored signal stays ignored across exec, and Python installs no
    KeyboardInterrupt handler when it starts with SIGINT ignored. Every program under test would
    then ignore the tests' Ctrl-C (seen: 5 interrupt tests failing only under `nohup`). A Python
    handler here is reset to the default on exec, so each child starts as from a terminal.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


restore_ctrl_c_for_the_programs_under_test()


def compose_run(output_dir: Path, *overrides: str) -> DictConfig:
    """The training config for `overrides`, quiet and writing under `output_dir`."""
    return compose(["quiet=true", f"output_dir={output_dir}", *overrides])


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """`make_cfg("model.hidden=5", ...)`: a checked config whose runs go to tmp_path/runs."""
    return lambda *overrides: compose_run(tmp_path / "runs", *overrides)


def run_train_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python src/train.py args...` from the repository root, as a user types it."""
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT.relative_to(REPO_ROOT)), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_error_line(
    process: subprocess.CompletedProcess[str], *fragments: str, code: int = 2
) -> str:
    """Exit `code`, no traceback, one `error:` line on stderr holding every fragment. A user
    mistake (exit 2) prints nothing else; a run that failed (exit 1) may have said on stdout
    where its folder is."""
    assert process.returncode == code, process.stderr
    assert "Traceback" not in process.stderr + process.stdout
    if code == 2:
        assert process.stdout == "", process.stdout
    lines = process.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), process.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from {lines[0]!r}"
    return lines[0]


@pytest.fixture
def run_train() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_train_script


def run_dirs(output_dir: Path) -> list[Path]:
    """Run folders under `output_dir` (none if it was never created)."""
    return sorted(p for p in output_dir.iterdir() if p.is_dir()) if output_dir.exists() else []


@dataclass
class FinishedRun:
    """A short ensemble run trained once per test session, read by the run-folder tests."""

    cfg: DictConfig
    run_dir: Path
    result: Any  # mlpsweep.training.RunResult
    metrics: dict[str, Any]


# Small but complete: validation and pictures fire twice during the run and once at the end.
FINISHED_RUN_OVERRIDES = (
    "trainer.max_epochs=250",
    "trainer.val_every=100",
    "logger.image_every=100",
    "logger.flush_every=100",
    "model.ensemble=3",
    "seed=7",
)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    from mlpsweep.training import new_run_dir, train

    output_dir = tmp_path_factory.mktemp("finished") / "runs"
    cfg = compose_run(output_dir, *FINISHED_RUN_OVERRIDES)
    result = train(cfg, new_run_dir(Path(cfg.output_dir)))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    return FinishedRun(cfg, result.run_dir, result, metrics)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server in MLPSWEEP_PG_URL, dropped afterwards."""
    base = os.environ.get("MLPSWEEP_PG_URL")
    if not base:
        if os.environ.get("MLPSWEEP_REQUIRE_PG"):
            pytest.fail("MLPSWEEP_REQUIRE_PG is set but MLPSWEEP_PG_URL is not")
        pytest.skip("no PostgreSQL: set MLPSWEEP_PG_URL (.ci/run starts one and sets it)")
    import psycopg

    from mlpsweep.storage import mask_url

    name = f"mlpsweep_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(base, autocommit=True)
    except psycopg.OperationalError as error:
        if os.environ.get("MLPSWEEP_REQUIRE_PG"):
            raise
        pytest.skip(f"PostgreSQL at {mask_url(base)} unreachable: {error}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test, as `trainer.threads=1` trains: tiny matrices thrash
    on more, and a kernel's rounding can follow its thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



def assert_picture_has_content(picture: Path | bytes, name: str = "") -> None:
    """A picture a person can read: many distinct colours, pixel variance, and more than a
    sliver of it not background. A blank white canvas (the bug of `plots.save_png` reusing
    a renderer that never drew) fails all three."""
    import io

    import numpy as np
    from PIL import Image

    data = picture.read_bytes() if isinstance(picture, Path) else picture
    name = name or (picture.name if isinstance(picture, Path) else "image")
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int32)
    colours = np.unique(pixels.reshape(-1, 3), axis=0).shape[0]
    drawn = (pixels.min(axis=2) < 235).mean()  # not white or near-white
    assert colours >= 16, f"{name}: only {colours} colours"
    assert pixels.std() > 10, f"{name}: pixel std {pixels.std():.1f}"
    assert drawn > 0.02, f"{name}: {drawn:.1%} of the picture drawn"
