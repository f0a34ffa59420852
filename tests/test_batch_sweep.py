"""A sweep trained in batches gives every trial what it gets trained one at a time.

The worker always trains batches; `sweep.batch=1` is a batch of one trial, which is what a
trial alone is. So the equivalence that matters is batch=1 against batch=8 on the same
study: same proposals (a seeded random sampler ignores results), same initial weights,
the same final metrics of every member, bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch

from mlpsweep import batch_model
from mlpsweep.config import compose
from mlpsweep.sweep import launch, parse_settings

EQUIVALENCE_RUN = (
    "sweep=default", "sweep/sampler=random", "sweep/pruner=none", "sweep.n_trials=8",
    "sweep.workers=1", "trainer.max_epochs=200", "trainer.val_every=50", "logger.image_every=0",
    "logger.pictures=false", "trainer.checkpoint=false", "quiet=true",
    "sweep.space.model.hidden.high=12", "sweep.space.model.layers.high=3",
)


def sweep_with_batch(out: Path, batch: int, monkeypatch) -> tuple[optuna.Study, dict]:
    """Run the study with `sweep.batch=batch`; returns it and each trial's initial weights
    as the batched network held them, by (hidden, layers)."""
    initial: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    original_init = batch_model.BatchedMLP.__init__

    def recording_init(self, trials, *args, **kwargs) -> None:
        original_init(self, trials, *args, **kwargs)
        for index, spec in enumerate(trials):
            initial[(spec.hidden, spec.layers)] = {
                key: value.clone() for key, value in self.trial_state_dict(index).items()
            }

    monkeypatch.setattr(batch_model.BatchedMLP, "__init__", recording_init)
    overrides = [*EQUIVALENCE_RUN, f"sweep.batch={batch}", f"sweep.output_dir={out}"]
    cfg = compose(overrides)
    assert launch(cfg, overrides) == 0
    settings = parse_settings(cfg)
    study = optuna.load_study(study_name=settings.study_name, storage=settings.storage_url)
    return study, initial


@pytest.mark.slow
def test_batch_of_eight_gives_every_trial_what_one_at_a_time_gives(tmp_path, monkeypatch) -> None:
    alone, alone_init = sweep_with_batch(tmp_path / "one", 1, monkeypatch)
    batched, batched_init = sweep_with_batch(tmp_path / "eight", 8, monkeypatch)
    assert len(alone.trials) == len(batched.trials) == 8
    distinct = set()
    for one, eight in zip(alone.trials, batched.trials, strict=True):
        assert one.params == eight.params, "the seeded sampler proposes the same trials"
        assert one.state == eight.state == optuna.trial.TrialState.COMPLETE
        if "duplicate_of" in one.user_attrs:
            continue
        distinct.add((one.params["model.hidden"], one.params["model.layers"]))
        for key in ("val/acc", "train/loss", "val/loss", "train/acc"):
            # bit for bit: every trial is computed in the canonical layout (mlpsweep.layout)
            assert eight.user_attrs["metrics"][key] == one.user_attrs["metrics"][key], (
                f"trial {one.number} {key}"
            )
        members = [
            json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())["metrics"]
            for t in (one, eight)
        ]
        assert {k: v["members"] for k, v in members[0].items()} == {
            k: v["members"] for k, v in members[1].items()
        }, f"trial {one.number}: its members' metrics"
    assert len({depth for _, depth in distinct}) > 1, "the batch mixed depths"
    assert alone_init.keys() == batched_init.keys()
    for architecture, weights in alone_init.items():
        for key, tensor in weights.items():
            assert torch.equal(tensor, batched_init[architecture][key]), f"{architecture} {key}"


def test_a_worker_asks_only_its_share_so_the_last_batches_keep_every_worker_busy() -> None:
    from mlpsweep.sweep.worker import fair_share

    def share(n_trials: int, workers: int) -> int:
        cfg = compose(["sweep=grid", f"sweep.n_trials={n_trials}", f"sweep.workers={workers}"])
        return min(parse_settings(cfg).batch, fair_share(parse_settings(cfg), []))

    assert share(256, 2) == 16, "a long grid: full batches"
    assert share(16, 2) == 8, "16 cells, 2 workers: 8 each, not 16 for one and none for the other"
    assert share(3, 2) == 2 and share(1, 2) == 1
