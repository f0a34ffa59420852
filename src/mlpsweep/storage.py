"""Opening an Optuna RDB storage, and keeping its password out of everything shown.

The sweep (which writes, with a heartbeat) and the summary (which only reads) open
storages differently but must agree on the driver settings and on masking.
"""

from __future__ import annotations

import re
from typing import Any

_URL = re.compile(r"\b[a-zA-Z][\w+.-]*://\S+")


class StorageError(Exception):
    """The storage could not be opened; the message is one line with the password masked."""


def mask_url(url: str) -> str:
    """`scheme://user:secret@host/db` -> `scheme://user:***@host/db`; anything else unchanged.

    The last `@` ends the credentials, so a password containing `@` is masked whole.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, at, location = rest.rpartition("@")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}{at}{location}"


def scrub(text: str) -> str:
    """Mask every URL inside free text: driver errors and fail reasons embed them in sentences."""
    return _URL.sub(lambda match: mask_url(match.group(0)), text)


def engine_kwargs(url: str, read_only_sessions: bool = False) -> dict[str, Any]:
    """Waiting rules per database: SQLite waits for a busy file; PostgreSQL fails fast when down.

    `read_only_sessions`: PostgreSQL refuses every write of the connection
    (`default_transaction_read_only`), for readers such as the summary. SQLite's read-only
    mode is in its URL instead (`mode=ro`, see `summary.study_source.read_only_url`).
    """
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql"):
        connect_args: dict[str, Any] = {"connect_timeout": 5}
        if read_only_sessions:
            connect_args["options"] = "-c default_transaction_read_only=on"
        return {"connect_args": connect_args, "pool_pre_ping": True}
    return {}


def open_rdb(url: str, read_only_sessions: bool = False, **options: Any) -> Any:
    """`optuna.storages.RDBStorage(url, **options)`, or StorageError with a one-line reason."""
    from optuna.storages import RDBStorage

    try:
        return RDBStorage(
            url, engine_kwargs=engine_kwargs(url, read_only_sessions), **options
        )
    # SQLAlchemy/driver errors: bad URL, no server, no driver, bad password.
    except Exception as error:
        lines = str(error).strip().splitlines()
        raise StorageError(scrub(lines[0] if lines else type(error).__name__)) from error
