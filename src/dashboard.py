"""`python src/dashboard.py [study folder or name] [--port 8080] [--storage URL]`.

Starts optuna-dashboard (the optional 'dashboard' extra) for a sweep's storage on
127.0.0.1 only: the study's own SQLite file, or its PostgreSQL URL given again with
--storage / MLPSWEEP_STORAGE when study.json does not keep the password.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlpsweep.cli import OneLineParser, fail

HOST = "127.0.0.1"


def main(argv: list[str]) -> int:
    from mlpsweep.summary import DEFAULT_SWEEPS_DIR

    parser = OneLineParser(
        prog="dashboard.py", description="optuna-dashboard for a sweep, on 127.0.0.1"
    )
    parser.add_argument("study", nargs="?", help="study folder or name (default: the latest sweep)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--storage", help="storage URL, for a study whose password study.json does not keep"
    )
    parser.add_argument("--sweeps-dir", type=Path, default=DEFAULT_SWEEPS_DIR)
    args = parser.parse_args(argv)
    try:
        import optuna_dashboard
    except ImportError:
        return fail(
            "optuna-dashboard is not installed: pip install -e '.[dashboard]' (or make install)"
        )
    from mlpsweep.storage import scrub
    from mlpsweep.summary import (
        SummaryError,
        find_study_folder,
        open_readonly_storage,
        resolve_source,
    )

    try:
        source = resolve_source(find_study_folder(args.study, args.sweeps_dir), args.storage)
        # writable: the dashboard's notes and trial edits are the user's own acts
        storage = open_readonly_storage(source.storage_url, writable=True)
    except SummaryError as error:
        return fail(scrub(str(error)))
    print(
        f"optuna-dashboard for {source.folder} ({source.storage_display}) "
        f"at http://{HOST}:{args.port}/  (Ctrl-C stops it)",
        flush=True,
    )
    try:
        optuna_dashboard.run_server(storage, host=HOST, port=args.port)
    except OSError as error:
        return fail(
            f"cannot serve on {HOST}:{args.port} ({error.strerror or error}): choose another --port"
        )
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
