"""Finding a study (a folder, a name, or the latest sweep) and opening its storage to read.

The summary never changes the study: its storage is opened without a heartbeat (failing
stale trials is the sweep's job), and a missing SQLite file is an error rather than a new
empty study. study.json keeps the storage URL with its password masked, so a
password-protected storage needs its URL again (--storage or $MLPSWEEP_STORAGE).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
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
        raise SummaryError(f"{target}: no such study folder (looked for {folder}/)")
    if not is_study_folder(folder):
        raise SummaryError(
            f"{folder}: not a study folder (no study.json or study.db): "
            f"pass a folder under {sweeps_dir}/"
        )
    return folder


def resolve_source(folder: Path, storage: str | None = None) -> StudySource:
    """The storage URL to open: --storage, else $MLPSWEEP_STORAGE, else study.json, else
    study.db.

    study.json holds the URL with its password masked, so a password-protected storage
    needs the real URL again; an SQLite path that moved with its folder is found locally.
    """
    pointer = _read_pointer(folder)
    name = pointer.get("study_name")
    given = storage or os.environ.get(STORAGE_ENV)
    local_db = folder / "study.db"
    if given:
        url = given
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
    if path.is_file():
        return url
    if local_db.is_file():
        return f"sqlite:///{local_db.resolve()}"
    raise SummaryError(
        f"storage file {path} does not exist (was the study folder moved without study.db?)"
    )


def open_readonly_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage for reading (no heartbeat: failing stale trials is the sweep's job)."""
    try:
        return open_rdb(url)
    except StorageError as error:
        raise SummaryError(f"cannot open storage {mask_url(url)} ({error})") from error


def load_study(
    source: StudySource,
    opener: Callable[[str], optuna.storages.BaseStorage] | None = None,
) -> optuna.Study:
    """Load the study without changing it (no stale-trial failing: that is the sweep's job).

    `opener` (default `open_readonly_storage`, looked up when called) is how tests serve a
    PostgreSQL URL from an SQLite file.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = (opener or open_readonly_storage)(source.storage_url)
    names = [study.study_name for study in storage.get_all_studies()]
    name = source.study_name or (names[0] if len(names) == 1 else source.folder.name)
    if name not in names:
        found = ", ".join(names) or "none"
        raise SummaryError(
            f"study {name!r} not found in storage {source.storage_display} (studies there: {found})"
        )
    return optuna.load_study(study_name=name, storage=storage)
