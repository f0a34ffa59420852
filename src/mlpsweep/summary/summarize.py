"""The whole of `make summary`: find the study, open it, compute, write every output.

The outputs are written atomically (a `.tmp` file renamed into place), so a summary
interrupted half-way never leaves a half-written summary.md or trials.csv.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import optuna

from mlpsweep.storage import scrub
from mlpsweep.summary import plots
from mlpsweep.summary.answer import DEFAULT_THRESHOLD
from mlpsweep.summary.markdown import summary_markdown
from mlpsweep.summary.study_source import (
    DEFAULT_SWEEPS_DIR,
    SummaryError,
    find_study_folder,
    load_study,
    resolve_source,
)
from mlpsweep.summary.study_summary import StudySummary, build_summary
from mlpsweep.summary.summary_json import write_summary_json
from mlpsweep.summary.trials_csv import write_trials_csv


def write_outputs(summary: StudySummary, study: optuna.Study, tensorboard: bool = True) -> str:
    """trials.csv, pictures, summary.md, summary.json and the TensorBoard entry; returns the
    summary text."""
    folder = summary.source.folder
    write_trials_csv(summary.rows, folder / "trials.csv")
    summary.pictures, summary.skipped_pictures = plots.draw_all(summary, study, folder / "plots")
    text = scrub(summary_markdown(summary))
    partial = folder / "summary.md.tmp"
    partial.write_text(text)
    os.replace(partial, folder / "summary.md")
    write_summary_json(summary, folder / "summary.json")
    if tensorboard:
        plots.log_to_tensorboard(summary, text, folder / "summary")
    return text


def summarize_study(
    target: str | None,
    threshold: float = DEFAULT_THRESHOLD,
    storage: str | None = None,
    sweeps_dir: Path = DEFAULT_SWEEPS_DIR,
    opener: Callable[[str], optuna.storages.BaseStorage] | None = None,
) -> tuple[StudySummary, str]:
    """Find, open, compute, write. Raises SummaryError on bad input.

    `opener` (default `open_readonly_storage`) is how tests serve a PostgreSQL URL from an
    SQLite file.
    """
    if not 0.0 < threshold <= 1.0:
        raise SummaryError(
            f"--threshold {threshold}: must be in (0, 1], an accuracy on the validation grid"
        )
    source = resolve_source(find_study_folder(target, sweeps_dir), storage)
    study = load_study(source, opener)
    summary = build_summary(study, source, threshold)
    return summary, write_outputs(summary, study)
