"""Finding a study (a folder, a name, or the latest sweep) and opening its storage to read.

The summary never changes the study: its storage is opened read-only (SQLite's
`mode=ro`, PostgreSQL's `default_transaction_read_only`) and without a heartbeat (failing
stale trials is the sweep's job), so a missing or empty SQLite file is an error rather
than a new empty study, and a damaged one is one line. study.json keeps the storage URL
with its password masked, so a password-protected storage needs its URL again (--storage
or $MLPSWEEP_STORAGE). A study folder that holds its own study.db is read from it, even
when study.json names another file: a copied or moved folder is summarised from its copy.
"""

from __future__ import annotations

import difflib
import json
import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from mlpsweep.storage import StorageError, mask_url, open_rdb

DEFAULT_SWEEPS_DIR = Path("outputs/sweeps")
STORAGE_ENV = "MLPSWEEP_STORAGE"


class SummaryError(Exception):
    """A problem the user can fix (no sweep, not a study, no password): one line, no traceback."""


@dataclass(frozen=True)
class StudySource:
    """Where a study lives: its folder (trial folders, outputs) and its storage."""

    folder: Path
    study_name: str | None
    storage_url: str
    pointer: dict[str, Any]

    @property
    def storage_display(self) -> str:
        return mask_url(self.storage_url)


def is_study_folder(folder: Path) -> bool:
    return (folder / "study.json").is_file() or (folder / "study.db").is_file()


def latest_study_folder(sweeps_dir: Path) -> Path:
    """The study most recently written to (study.db changes on every trial, study.json at
    launch)."""
    candidates = (
        [path for path in sweeps_dir.iterdir() if path.is_dir() and is_study_folder(path)]
        if sweeps_dir.is_dir()
        else []
    )
    if not candidates:
        raise SummaryError(
            f"no sweep found under {sweeps_dir}/: run `make sweep` first, or name a study folder"
        )

    def written(folder: Path) -> float:
        names = ("study.json", "study.db")
        return max((folder / name).stat().st_mtime for name in names if (folder / name).is_file())

    return max(candidates, key=written)


def find_study_folder(target: str | None, sweeps_dir: Path = DEFAULT_SWEEPS_DIR) -> Path:
    """A folder path, a study name under `sweeps_dir`, or (None) the latest sweep."""
    if not target:
        return latest_study_folder(sweeps_dir)
    as_path = Path(target)
    folder = as_path if as_path.is_dir() or "/" in target else sweeps_dir / target
    if not folder.is_dir():
        raise SummaryError(
            f"{target}: no such study folder (looked for {folder}/); "
            f"{_studies_hint(target, sweeps_dir)}"
        )
    if not is_study_folder(folder):
        raise SummaryError(
            f"{folder}: not a study folder (no study.json or study.db): "
            f"pass a folder under {sweeps_dir}/"
        )
    return folder


def study_names(sweeps_dir: Path) -> list[str]:
    """The study folders under `sweeps_dir`, by name."""
    if not sweeps_dir.is_dir():
        return []
    folders = (path for path in sweeps_dir.iterdir() if path.is_dir())
    return sorted(path.name for path in folders if is_study_folder(path))


def _studies_hint(target: str, sweeps_dir: Path) -> str:
    """`did you mean mlp_grid?` and the studies there, or that there are none."""
    names = study_names(sweeps_dir)
    if not names:
        return f"there are no studies under {sweeps_dir}/ (run `make sweep` first)"
    close = difflib.get_close_matches(Path(target).name, names, n=1, cutoff=0.5)
    listed = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{hint}studies under {sweeps_dir}/: {listed}"


def resolve_source(folder: Path, storage: str | None = None) -> StudySource:
    """The storage URL to open: --storage, else $MLPSWEEP_STORAGE, else the folder's own
    study.db, else study.json's storage.

    study.json holds the URL with its password masked, so a password-protected storage
    needs the real URL again. Its SQLite path is absolute, so in a copied folder it names
    the original's file: the folder's own study.db, when there, is the one summarised
    (unless study.json names a database server, whose study a leftover file is not).
    """
    pointer = _read_pointer(folder)
    name = pointer.get("study_name")
    given = storage or os.environ.get(STORAGE_ENV)
    local_db = folder / "study.db"
    pointed = str(pointer.get("storage") or "")
    if given:
        url = given
    elif local_db.is_file() and (not pointed or pointed.startswith("sqlite")):
        url = f"sqlite:///{local_db.resolve()}"
    elif pointer.get("storage_has_password"):
        raise SummaryError(
            f"study {name!r} is stored at {pointer.get('storage')} whose password is not saved: "
            f"pass --storage 'postgresql://user:PASSWORD@host/db' or set {STORAGE_ENV}"
        )
    elif pointer.get("storage"):
        url = str(pointer["storage"])
    else:
        url = f"sqlite:///{local_db.resolve()}"
    if url.startswith("sqlite:///"):
        url = _existing_sqlite(url, local_db)
    return StudySource(folder=folder, study_name=name, storage_url=url, pointer=pointer)


def _read_pointer(folder: Path) -> dict[str, Any]:
    path = folder / "study.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SummaryError(f"{path}: unreadable ({error})") from error
    if not isinstance(data, dict):
        raise SummaryError(f"{path}: expected a JSON object")
    return data


def _existing_sqlite(url: str, local_db: Path) -> str:
    """Never open a missing SQLite file: SQLAlchemy would silently create an empty study."""
    path = Path(url.removeprefix("sqlite:///"))
    if not path.is_file() and local_db.is_file():
        path, url = local_db, f"sqlite:///{local_db.resolve()}"
    if not path.is_file():
        raise SummaryError(
            f"storage file {path} does not exist (was the study folder moved without study.db?)"
        )
    if path.stat().st_size == 0:
        raise SummaryError(
            f"{path} is empty (0 bytes): no sweep has written a study into it yet "
            "(run `make sweep`, or name another study)"
        )
    return url


def open_readonly_storage(url: str, *, writable: bool = False) -> optuna.storages.BaseStorage:
    """An RDB storage for reading: read-only unless `writable` (optuna-dashboard's notes),
    no heartbeat (failing stale trials is the sweep's job), an SQLite file checked whole
    first (`PRAGMA quick_check`), so a damaged one is one line here and not a traceback
    wherever the summary first reads a damaged page."""
    if url.startswith("sqlite:///"):
        _check_sqlite_intact(Path(url.removeprefix("sqlite:///")))
    try:
        return open_rdb(url if writable else read_only_url(url), **_read_only_options(url))
    except StorageError as error:
        raise SummaryError(f"cannot open storage {mask_url(url)} ({error})") from error


def read_only_url(url: str) -> str:
    """`sqlite:///path` as SQLite's read-only URI (`mode=ro`): a write fails instead of
    happening, and a missing file is not created. Other URLs are unchanged (their read-only
    mode is a connection option, see `_read_only_options`)."""
    if not url.startswith("sqlite:///"):
        return url
    path = Path(url.removeprefix("sqlite:///")).resolve()
    return f"sqlite:///file:{path}?mode=ro&uri=true"


def _read_only_options(url: str) -> dict[str, Any]:
    """PostgreSQL sessions whose transactions are read-only; nothing for other databases."""
    if url.startswith("postgresql"):
        return {"read_only_sessions": True}
    return {}


def _check_sqlite_intact(path: Path) -> None:
    """SummaryError naming the file if SQLite finds it damaged (it only reads to check)."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as error:
        verdict = str(error)
    if verdict != "ok":
        raise SummaryError(
            f"{path} is damaged ({verdict}): the summary cannot read it; restore the file "
            f"from a copy, or salvage what is left with `sqlite3 {path} .recover`"
        )


def load_study(
    source: StudySource,
    opener: Callable[[str], optuna.storages.BaseStorage] | None = None,
) -> optuna.Study:
    """Load the study without changing it (no stale-trial failing: that is the sweep's job).

    `opener` (default `open_readonly_storage`, looked up when called) is how tests serve a
    PostgreSQL URL from an SQLite file.
    """
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = (opener or open_readonly_storage)(source.storage_url)
    try:
        names = [study.study_name for study in storage.get_all_studies()]
    except SQLAlchemyError as error:  # a server that went away, a file damaged since
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SummaryError(f"cannot read storage {source.storage_display} ({first})") from error
    name = source.study_name or (names[0] if len(names) == 1 else source.folder.name)
    if name not in names:
        found = ", ".join(names) or "none"
        raise SummaryError(
            f"study {name!r} not found in storage {source.storage_display} (studies there: {found})"
        )
    return optuna.load_study(study_name=name, storage=storage)
