"""Rounds of new initialisations for the grid: members where they decide the answer.

Every cell starts with one trial of `model.ensemble` members (the grid's round 0). Once
every cell of round 0 is asked and a depth (and facet value) has no trial running or
queued, its evidence is pooled (`summary.probability`) and each cell that can still move
an answer gets a round more: its Wilson interval holds 0.5 or 0.9 and it lies inside that
crossing's 95% interval (`deciding_cells`). A round doubles the cell's members (4 -> 8 ->
16 -> 32), capped at `sweep.max_members`, as new trials of the same architecture with seeds
no trial of the cell used, queued with Optuna's own `enqueue_trial` (fixed params, the
round and seed as user attributes). A new seed is a new training config, so a round's
trial is never taken for a repeat of its cell's earlier trials.

Planning runs under the worker's ask lock, so several workers and machines share the
rounds through the storage as they share trials; re-running the sweep resumes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from mlpsweep import fit_rule
from mlpsweep.sweep.settings import GRID_SAMPLER, SweepSettings
from mlpsweep.sweep.trial_states import budget_used, retried_numbers

ROUND_ATTR = "round"
SEED_ATTR = "seed"
ENSEMBLE_ATTR = "ensemble"
MEMBER_VALUES_ATTR = "member_values"
ARCHITECTURE = ("model.hidden", "model.layers")

Group = tuple[tuple[tuple[str, Any], ...], int]  # (facet, layers)


def rounds_enabled(settings: SweepSettings) -> bool:
    return settings.sampler["name"] == GRID_SAMPLER and settings.max_members > settings.ensemble


def round_overrides(trial: optuna.Trial | FrozenTrial) -> dict[str, Any]:
    """The training keys a round's trial sets beyond its params: its seed (and a smaller
    ensemble when the cap leaves fewer members than `model.ensemble`)."""
    attrs = trial.user_attrs
    extra: dict[str, Any] = {}
    if attrs.get(SEED_ATTR) is not None:
        extra["seed"] = int(attrs[SEED_ATTR])
    if attrs.get(ENSEMBLE_ATTR) is not None:
        extra["model.ensemble"] = int(attrs[ENSEMBLE_ATTR])
    return extra


def trial_fits(trial: FrozenTrial, threshold: float) -> tuple[int, int] | None:
    """(members, fits) of a complete, non-repeat trial from its kept member values."""
    if trial.state != TrialState.COMPLETE or "duplicate_of" in trial.user_attrs:
        return None
    kept = trial.user_attrs.get(MEMBER_VALUES_ATTR) or {}
    train, val = kept.get("train/acc"), kept.get("val/acc")
    if not train or not val or len(train) != len(val):
        return None
    return len(val), fit_rule.fitting_members(train, val, threshold)


def plan_round(study: optuna.Study, settings: SweepSettings) -> int:
    """Queue the next round of every settled depth that has deciding cells; returns how
    many trials were queued (0: nothing to add now). Call under the ask lock."""
    from mlpsweep.summary.probability import answers_by_depth, deciding_cells, pool_cells

    if not rounds_enabled(settings):
        return 0
    trials = study.get_trials(deepcopy=False)
    first_round = [trial for trial in trials if ROUND_ATTR not in trial.user_attrs]
    if budget_used(first_round) < settings.n_trials:
        return 0  # round 0 is still being asked
    facet_keys = sorted(spec.path for spec in settings.space if spec.path not in ARCHITECTURE)
    unfinished = [trial for trial in trials if not trial.state.is_finished()]
    if any("model.layers" not in _params(trial) for trial in unfinished):
        return 0  # a trial just asked has no architecture yet: its depth may be any
    unsettled = {_group(trial, facet_keys) for trial in unfinished}
    counted, by_cell = [], {}
    for trial in trials:
        if "model.hidden" not in trial.params or _group(trial, facet_keys) in unsettled:
            continue
        by_cell.setdefault(_cell(trial, facet_keys), []).append(trial)
        found = trial_fits(trial, settings.fit_val_acc)
        if found is not None:
            facet, layers = _group(trial, facet_keys)
            counted.append(
                (trial.number, int(trial.params["model.hidden"]), layers, *found, facet)
            )
    queued = []
    for answer in answers_by_depth(pool_cells(counted).values()):
        for cell in deciding_cells(answer):
            key = (cell.facet, cell.layers, cell.hidden)
            queued += _new_trials(cell, by_cell.get(key, []), settings)
    # seed-major order, so that a worker's batch holds trials alike but for the architecture
    for params, attrs in sorted(queued, key=lambda item: (item[1][SEED_ATTR],
                                                          -item[0]["model.layers"],
                                                          item[0]["model.hidden"])):
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    return len(queued)


def _params(trial: FrozenTrial) -> dict[str, Any]:
    """Its params, or a queued trial's fixed params (`enqueue_trial` keeps them there)."""
    return trial.params or dict(trial.system_attrs.get("fixed_params", {}))


def _group(trial: FrozenTrial, facet_keys: Sequence[str]) -> Group:
    params = _params(trial)
    facet = tuple((key, params.get(key)) for key in facet_keys)
    return facet, int(params.get("model.layers", 0))


def _cell(trial: FrozenTrial, facet_keys: Sequence[str]) -> tuple:
    facet, layers = _group(trial, facet_keys)
    return facet, layers, int(trial.params["model.hidden"])


def _new_trials(
    cell: Any, trials: Sequence[FrozenTrial], settings: SweepSettings
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Trials that double the cell's members (capped), each with a seed the cell never used."""
    retried = retried_numbers(trials)
    attempted = sum(
        int(trial.user_attrs.get(ENSEMBLE_ATTR, settings.ensemble))
        for trial in trials if trial.number not in retried
    )  # failed trials count too, so a cell whose rounds fail is not planned forever
    add = min(cell.members, settings.max_members - attempted)
    if add <= 0:
        return []
    used = {int(trial.user_attrs.get(SEED_ATTR, settings.seed)) for trial in trials}
    next_round = 1 + max((int(trial.user_attrs.get(ROUND_ATTR, 0)) for trial in trials),
                         default=0)
    params: dict[str, Any] = {"model.hidden": cell.hidden, "model.layers": cell.layers}
    params |= dict(cell.facet)
    planned = []
    seed = settings.seed
    for index in range(math.ceil(add / settings.ensemble)):
        while seed in used:
            seed += 1
        used.add(seed)
        size = min(settings.ensemble, add - index * settings.ensemble)
        attrs: dict[str, Any] = {ROUND_ATTR: next_round, SEED_ATTR: seed}
        if size != settings.ensemble:
            attrs[ENSEMBLE_ATTR] = size
        planned.append((dict(params), attrs))
    return planned
