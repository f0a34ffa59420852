"""Run folders no two runs share, even when started in the same second or in parallel.

Stdlib only: `hydra_app` names folders before `--help` could load Lightning, and
`training` names them for runs started from Python.
"""

from __future__ import annotations

import secrets
from pathlib import Path


def claim_folder(prefix: str | Path) -> Path:
    """`<prefix>_<4 hex>`, created with an exclusive mkdir: a name another run took in the
    meantime raises FileExistsError and the next draw is tried, so no two runs get one."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            folder = suffixed(prefix)
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def free_folder_name(prefix: str | Path) -> Path:
    """`<prefix>_<4 hex>` that does not exist now, without creating it (what a run that is
    only being shown, not started, would be called)."""
    while True:
        folder = suffixed(Path(prefix))
        if not folder.exists():
            return folder


def suffixed(prefix: Path) -> Path:
    return prefix.with_name(f"{prefix.name}_{secrets.token_hex(2)}")
