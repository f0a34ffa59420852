"""What a finished sweep prints and writes: the best trial (`best.yaml`, its reproduce line,
a Pareto front) and, for a finished map, the study's summary with its per-depth answer.
The launcher calls these once the workers are done (`mlpsweep.sweep.launcher`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from mlpsweep.sweep.settings import SweepSettings
from mlpsweep.sweep.trial_states import state_counts


def report_best(study: optuna.Study, settings: SweepSettings) -> int:
    """Write best.yaml, print the Pareto front (if any) and the reproduce line;
    exit 1 if nothing completed."""
    trials = study.get_trials(deepcopy=False)
    counts = state_counts(trials)
    print(
        f"study {settings.study_name} ({settings.storage_display}): {counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['failed']} failed of "
        f"sweep.n_trials={settings.n_trials}"
    )
    if not counts["complete"]:
        print(
            "error: no trial completed; see the trials' fail_reason (make summary)",
            file=sys.stderr,
        )
        return 1
    front = study.best_trials if settings.multi_objective else [study.best_trial]
    sign = 1 if settings.objectives[0].direction == "maximize" else -1
    best = max(front, key=lambda trial: sign * trial.values[0])  # on a front: best first objective
    write_best_yaml(best, settings)
    if settings.multi_objective:
        print("Pareto front:")
        for trial in sorted(front, key=lambda trial: trial.values[1:]):
            print(f"  trial {trial.number}: {_values_text(trial, settings)}  {_params_text(trial)}")
    print(f"best trial {best.number}: {_values_text(best, settings)}  {_params_text(best)}")
    print(f"reproduce: {best.user_attrs.get('reproduce', '?')}")
    print(f"best config: {settings.study_dir / 'best.yaml'}")
    print(
        "the full summary (which network fits, how sure): "
        f"make summary STUDY={settings.study_dir}"
    )
    return 0


def report_answer(settings: SweepSettings) -> None:
    """A finished map's answer: write the study's summary (`make summary`'s summary.md,
    summary.json, plots/ with curves.png and map.png, TensorBoard) and print its per-depth
    answer, so that `make map` ends with the answer and not with a pointer to it. A summary
    that cannot be written says so in one line; the map stands."""
    from mlpsweep.summary.probability_markdown import probability_md
    from mlpsweep.summary.study_source import SummaryError
    from mlpsweep.summary.summarize import summarize_study

    try:
        summary, _ = summarize_study(
            str(settings.study_dir), threshold=settings.fit_val_acc, storage=settings.storage_url
        )
    except (SummaryError, OSError) as error:
        print(f"warning: the map's summary was not written: {error}", file=sys.stderr)
        return
    plots = settings.study_dir / "plots"
    print()
    print(probability_md(summary))
    print()
    print(f"curves: {plots / 'curves.png'}  map: {plots / 'map.png'}  "
          f"all of it: {settings.study_dir / 'summary.md'}")


def _values_text(trial: FrozenTrial, settings: SweepSettings) -> str:
    pairs = zip(settings.objectives, trial.values, strict=True)
    return ", ".join(f"{objective.metric} {value:.4g}" for objective, value in pairs)


def _params_text(trial: FrozenTrial) -> str:
    return " ".join(f"{key}={value}" for key, value in trial.params.items())


def write_best_yaml(trial: FrozenTrial, settings: SweepSettings) -> None:
    """The best trial's full resolved config (its run's config.yaml), written atomically."""
    source = Path(trial.user_attrs.get("run_dir", "")) / "config.yaml"
    target = settings.study_dir / "best.yaml"
    header = (
        f"# best trial {trial.number} of study {settings.study_name}\n"
        f"# reproduce: {trial.user_attrs.get('reproduce', '?')}\n"
    )
    body = source.read_text() if source.exists() else "# (trial folder not on this machine)\n"
    partial = target.with_suffix(".yaml.tmp")
    partial.write_text(header + body)
    os.replace(partial, target)
