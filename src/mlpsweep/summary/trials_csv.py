"""trials.csv: one row per trial, every state, for pandas or a spreadsheet.

Fail reasons can embed a storage URL (a driver's error), so every text cell is scrubbed
of passwords before it is written. `folder` is relative to the project (the directory the
summary runs in, e.g. `outputs/sweeps/mlp_arch/trials/12`), absolute only for a study kept
outside it; a repeat's folder is its twin's.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlpsweep.storage import scrub
from mlpsweep.summary.answer import ANSWER_METRIC, TRAIN_METRIC
from mlpsweep.summary.trial_rows import TrialRow
from mlpsweep.sweep.settings import PARAMETER_COUNT

SHOWN_METRICS = ("val/acc", "train/acc", "val/loss", "train/loss")
STATS = ("mean", "min", "max", "std")


def csv_columns(rows: Sequence[TrialRow]) -> list[str]:
    params = sorted({name for row in rows for name in row.params})
    metric_columns = [f"{metric}_{stat}" for metric in SHOWN_METRICS for stat in STATS]
    return [
        "number", "state", "repeat_of", *params, *metric_columns, f"{ANSWER_METRIC}_members",
        f"{TRAIN_METRIC}_members", "epochs", "duration_s", PARAMETER_COUNT, "host", "started",
        "completed", "fail_reason", "reproduce", "folder",
    ]


def csv_record(row: TrialRow, columns: Sequence[str]) -> dict[str, Any]:
    def listed(metric: str) -> str:
        return ";".join(f"{value:.6g}" for value in row.members.get(metric, []))

    record: dict[str, Any] = {
        "number": row.number,
        "state": row.state,
        "repeat_of": row.duplicate_of,
        "epochs": row.epochs,
        "duration_s": row.duration_s,
        PARAMETER_COUNT: row.parameter_count,
        "host": row.host,
        "fail_reason": row.fail_reason,
        "reproduce": row.reproduce,
        "folder": str(row.folder or ""),
        "started": row.started.isoformat(timespec="seconds") if row.started else "",
        "completed": row.completed.isoformat(timespec="seconds") if row.completed else "",
        f"{ANSWER_METRIC}_members": listed(ANSWER_METRIC),
        f"{TRAIN_METRIC}_members": listed(TRAIN_METRIC),
    }
    record.update(row.params)
    for metric in SHOWN_METRICS:
        for stat in STATS:
            record[f"{metric}_{stat}"] = row.metric(metric, stat)
    return {
        column: ("" if record.get(column) is None else record.get(column)) for column in columns
    }


def write_trials_csv(rows: Sequence[TrialRow], path: Path) -> None:
    """One row per trial, every state, for pandas or a spreadsheet (written atomically)."""
    columns = csv_columns(rows)
    partial = path.with_suffix(".csv.tmp")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            record = csv_record(row, columns)
            writer.writerow(
                {
                    key: scrub(value) if isinstance(value, str) else value
                    for key, value in record.items()
                }
            )
    os.replace(partial, path)
