"""Run folders: never shared, even by runs started in the same second in parallel."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

from mlpsweep.folders import claim_folder, free_folder_name


def test_parallel_claims_in_one_second_never_share_a_folder(tmp_path) -> None:
    prefix = tmp_path / "runs" / "2026-01-01_00-00-00"  # its parent does not exist yet
    made: list[Path] = []
    lock = threading.Lock()

    def start_runs() -> None:
        for _ in range(40):
            folder = claim_folder(prefix)
            with lock:
                made.append(folder)

    threads = [threading.Thread(target=start_runs) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == len(made) == 320
    assert all(folder.is_dir() and folder.parent == prefix.parent for folder in made)
    assert len(list(prefix.parent.iterdir())) == 320, "each claim made exactly one folder"


def test_a_taken_name_is_drawn_again(tmp_path, monkeypatch) -> None:
    draws = iter(["aaaa", "aaaa", "bbbb", "aaaa", "cccc"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(draws))
    assert claim_folder(tmp_path / "run").name == "run_aaaa"
    assert claim_folder(tmp_path / "run").name == "run_bbbb"
    assert free_folder_name(tmp_path / "run").name == "run_cccc", "aaaa is taken"


def test_a_free_name_is_only_named_not_made(tmp_path) -> None:
    folder = free_folder_name(tmp_path / "run")
    assert folder.parent == tmp_path and folder.name.startswith("run_")
    assert not folder.exists()
