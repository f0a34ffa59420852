"""The sweep's locks: one mechanism, a file lock on one machine, an advisory lock across machines.

Several launchers (on one machine or several) share only the storage, so whatever must
happen once at a time is serialised here: creating the storage's tables and the study,
handing out worker numbers (`storage_lock`), and count-then-ask (`ask_lock`). SQLite
lives on one machine, so an `flock` on a file beside it is enough; PostgreSQL takes an
advisory lock, which every machine connected to the database sees.
"""

from __future__ import annotations

import fcntl
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna

from mlpsweep.config import ConfigError
from mlpsweep.sweep.settings import SweepSettings


@contextmanager
def exclusive(name: str, lock_file: Path, engine: Any | None) -> Iterator[None]:
    """Hold the lock `name` across machines (PostgreSQL `engine`) or `lock_file` (SQLite).

    The advisory lock's key is a hash of `name`; it is released with the connection even
    when the process dies, as the file lock is with the process.
    """
    if engine is not None and engine.dialect.name == "postgresql":
        from sqlalchemy import text

        key = zlib.crc32(name.encode())
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def ask_lock(settings: SweepSettings, storage: optuna.storages.RDBStorage) -> Iterator[None]:
    """Serialise count-then-ask among all workers of the study, so the budget is never
    overshot (the lock the worker loop takes before each `study.ask()`)."""
    engine = storage.engine if settings.is_postgres else None
    with exclusive(f"mlpsweep:{settings.study_name}", settings.study_dir / ".ask.lock", engine):
        yield


@contextmanager
def storage_lock(settings: SweepSettings) -> Iterator[None]:
    """Serialise creating the storage's tables and the study, and handing out worker numbers.

    Optuna creates its tables on first open without a lock, so two commands starting one
    new study at once collide on them. The lock is per storage (not per study), because two
    new studies in one new database collide the same way. A database server (PostgreSQL,
    or any other SQLAlchemy URL) is connected to first, with a short-lived engine of its
    own: a URL it refuses is one line, before any lock file exists to be left behind.
    PostgreSQL then takes an advisory lock, another database a file lock in the study folder.
    """
    if settings.storage_url.startswith("sqlite:///"):
        with exclusive("", storage_lock_file(settings), None):
            yield
        return
    engine = _connected_engine(settings)
    try:
        with exclusive("mlpsweep:storage", storage_lock_file(settings), engine):
            yield
    finally:
        engine.dispose()


def _connected_engine(settings: SweepSettings) -> Any:
    """A SQLAlchemy engine that has connected once, or ConfigError naming `sweep.storage`."""
    from sqlalchemy import create_engine

    from mlpsweep.storage import engine_kwargs, scrub

    engine = None
    try:
        engine = create_engine(settings.storage_url, **engine_kwargs(settings.storage_url))
        engine.connect().close()
    # the driver's errors: no driver, no server, bad password, no database
    except Exception as error:
        if engine is not None:
            engine.dispose()
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(
            f"sweep.storage={settings.storage_display!r}: cannot open ({scrub(first_line)})"
        ) from error
    return engine


def storage_lock_file(settings: SweepSettings) -> Path:
    """Beside an SQLite file (`study.db.lock`); for another database, in the study folder."""
    if settings.storage_url.startswith("sqlite:///"):
        database = sqlite_path(settings)
        return database.with_name(database.name + ".lock")
    return settings.study_dir / ".storage.lock"


def sqlite_path(settings: SweepSettings) -> Path:
    """The SQLite file of `sqlite:///path` (a relative path is relative to the working dir)."""
    return Path(settings.storage_url.removeprefix("sqlite:///"))
