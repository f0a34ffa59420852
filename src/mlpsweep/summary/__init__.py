"""The summary of a study: which network to pick, how sure to be, how to reproduce it.

Everything here reads only the study's storage and its trial folders (`trials/<n>/`),
never a sweep's memory, so `make summary` can be rebuilt at any time: while workers still
run, after a sweep was killed, or against a PostgreSQL study shared by several machines.
It never imports the sweep's launcher or worker (only the sweep's settings and trial-state
vocabulary). The storage password never leaves unmasked: every text written or printed
goes through `mlpsweep.storage.scrub`.

One concern per module, imported in this order (arrows one way):

- `study_source`: finding a study folder and opening its storage read-only;
- `trial_rows`: one row per trial, from the storage and the trial's folder;
- `answer`: the smallest architecture whose ensemble members all fit (`mlpsweep.fit_rule`);
- `search_space`: the space from the trials' distributions, and "N of M" coverage;
- `fit_map`: one cell per trained architecture, read per depth;
- `study_stats`: importances, the best trial, the top trials, the Pareto front;
- `study_summary`: all of the above computed once into a `StudySummary`;
- `trials_csv`, `markdown` (with `answer_markdown`, `map_markdown`), `plots` (with
  `map_figure`): the outputs, each from that one object;
- `summarize`: the whole of `make summary`.
"""

from mlpsweep.summary.answer import DEFAULT_THRESHOLD, threshold_answer
from mlpsweep.summary.study_source import (
    DEFAULT_SWEEPS_DIR,
    StudySource,
    SummaryError,
    find_study_folder,
    open_readonly_storage,
    resolve_source,
)
from mlpsweep.summary.study_stats import param_importances
from mlpsweep.summary.study_summary import StudySummary, build_summary
from mlpsweep.summary.summarize import summarize_study, write_outputs
from mlpsweep.summary.trial_rows import TrialRow

__all__ = [
    "DEFAULT_SWEEPS_DIR",
    "DEFAULT_THRESHOLD",
    "StudySource",
    "StudySummary",
    "SummaryError",
    "TrialRow",
    "build_summary",
    "find_study_folder",
    "open_readonly_storage",
    "param_importances",
    "resolve_source",
    "summarize_study",
    "threshold_answer",
    "write_outputs",
]
