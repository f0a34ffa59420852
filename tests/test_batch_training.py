"""A batch of trials trained by `train_batch`: each trial trains, stops and leaves a folder
exactly as `training.train` would have for it alone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import compose_run
from mlpsweep import batch_model
from mlpsweep.batch_config import check_batchable
from mlpsweep.batch_training import BatchTrainer, train_batch
from mlpsweep.config import validate
from mlpsweep.data import PiecewiseDataModule
from mlpsweep.model import MLP
from mlpsweep.training import RunResult, new_run_dir, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPOCHS = 200
COMMON = (
    f"trainer.max_epochs={EPOCHS}", "trainer.val_every=100", "logger.image_every=100",
    "logger.flush_every=50", "model.ensemble=2", "seed=3", "data.normalize=true",
)
ARCHITECTURES = ((6, 1), (12, 1), (3, 2))  # two widths at depth 1, one trial at depth 2


def configs(output_dir: Path, architectures=ARCHITECTURES, *overrides: str) -> list[DictConfig]:
    return [
        compose_run(
            output_dir, *COMMON, f"model.hidden={hidden}", f"model.layers={layers}", *overrides
        )
        for hidden, layers in architectures
    ]


def folders(base: Path, count: int) -> list[Path]:
    return [new_run_dir(base) for _ in range(count)]


class KeepLosses(pl.Callback):
    """The per-epoch, per-member losses of a single run, taken when it ends."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.losses = pl_module.epoch_losses.clone()


@dataclass
class Compared:
    """The batch's trainer and results, and for each trial its run alone."""

    trainer: BatchTrainer
    results: list[RunResult]
    alone: list[RunResult]
    alone_losses: list[torch.Tensor]
    exits: list[tuple[int, str]]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Compared:
    base = tmp_path_factory.mktemp("batch")
    cfgs = configs(base / "runs")
    exits: list[tuple[int, str]] = []
    trainer = BatchTrainer(cfgs, folders(base / "batch", len(cfgs)), None,
                           lambda index, result: exits.append((index, result.status)))
    results = trainer.run()
    alone, alone_losses = [], []
    for cfg in cfgs:
        keep = KeepLosses()
        alone.append(train(cfg, new_run_dir(base / "alone"), extra_callbacks=[keep]))
        alone_losses.append(keep.losses)
    return Compared(trainer, results, alone, alone_losses, exits)


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(
        str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


def metrics_json(result: RunResult) -> dict[str, Any]:
    return json.loads((result.run_dir / "metrics.json").read_text())


# ---- equal to alone ---------------------------------------------------------------------


def test_each_trials_per_epoch_losses_match_its_run_alone(compared):
    for index, expected in enumerate(compared.alone_losses):
        ours = compared.trainer.trials[index].record.epoch_losses
        assert ours.shape == expected.shape == (EPOCHS, 2)
        assert torch.equal(ours, expected), f"trial {index}: {(ours - expected).abs().max()}"


def test_each_trials_final_metrics_match_its_run_alone(compared):
    for ours, alone in zip(compared.results, compared.alone, strict=True):
        assert ours.status == alone.status == "completed" and ours.epochs == alone.epochs == EPOCHS
        assert ours.parameter_count == alone.parameter_count
        recorded, expected = metrics_json(ours)["metrics"], metrics_json(alone)["metrics"]
        assert recorded.keys() == expected.keys()
        for key in ("val/acc", "train/acc", "val/loss", "train/loss"):
            ours_members, alone_members = recorded[key]["members"], expected[key]["members"]
            assert ours_members == alone_members, key  # bit for bit (mlpsweep.layout)


def test_every_trial_is_told_when_it_ends(compared):
    assert sorted(compared.exits) == [(0, "completed"), (1, "completed"), (2, "completed")]


# ---- the folder ---------------------------------------------------------------------------


def test_each_trial_gets_a_single_runs_folder(compared):
    for ours, alone, cfg in zip(
        compared.results, compared.alone, compared.trainer.trials, strict=True
    ):
        names = {p.name for p in ours.run_dir.iterdir() if not p.name.startswith("events.")}
        assert names == {
            p.name for p in alone.run_dir.iterdir() if not p.name.startswith("events.")
        }
        assert {"config.yaml", "metrics.json", "fit.png", "loss.png", "checkpoints"} <= names
        for picture in ("fit.png", "loss.png"):
            assert (ours.run_dir / picture).read_bytes()[:8] == PNG_MAGIC
        saved = validate(OmegaConf.load(ours.run_dir / "config.yaml"))
        assert OmegaConf.to_container(saved) == OmegaConf.to_container(cfg.cfg, resolve=True)
        record = metrics_json(ours)
        assert record.keys() == metrics_json(alone).keys()
        assert Path(record["run_dir"]) == ours.run_dir and record["error"] is None


def test_each_trials_events_are_those_of_its_run_alone(compared):
    for ours, alone in zip(compared.results, compared.alone, strict=True):
        mine, theirs = events(ours.run_dir), events(alone.run_dir)
        assert set(mine.Tags()["scalars"]) == set(theirs.Tags()["scalars"])
        for tag in theirs.Tags()["scalars"]:
            got, expected = mine.Scalars(tag), theirs.Scalars(tag)
            assert [e.step for e in got] == [e.step for e in expected], tag
            expected_values = [e.value for e in expected]
            assert [e.value for e in got] == pytest.approx(expected_values, abs=1e-4), tag
        assert (
            [i.step for i in mine.Images("fit")]
            == [i.step for i in theirs.Images("fit")]
            == [100, EPOCHS]
        )
        plugin = {
            tag: plugin_data_pb2.HParamsPluginData.FromString(content)
            for tag, content in mine.PluginTagToContent("hparams").items()
        }
        session = plugin["_hparams_/session_start_info"].session_start_info
        assert (
            session.hparams["model.hidden"].number_value
            == OmegaConf.load(ours.run_dir / "config.yaml").model.hidden
        )
        assert {"val/acc", "val/loss", "train/acc", "train/loss"} <= {
            info.name.tag for info in plugin["_hparams_/experiment"].experiment.metric_infos
        }


def test_a_trials_checkpoint_loads_into_mlp_and_predicts_what_the_batch_measured(compared):
    data = PiecewiseDataModule(
        batch_size=32, shuffle=False, normalize=True, val_points=1000, seed=0
    )
    for ours in compared.results:
        model = MLP.load_from_checkpoint(
            ours.run_dir / "checkpoints" / "last.ckpt", map_location="cpu"
        )
        saved = OmegaConf.load(ours.run_dir / "config.yaml")
        assert (model.hparams.hidden, model.hparams.layers, model.ensemble) == (
            saved.model.hidden,
            saved.model.layers,
            2,
        )
        recorded = metrics_json(ours)["metrics"]
        with torch.no_grad():
            assert (
                model.member_accuracy(data.val_x, data.val_y).tolist()
                == recorded["val/acc"]["members"]
            )
            assert model.member_losses(data.val_x, data.val_y).tolist() == pytest.approx(
                recorded["val/loss"]["members"], abs=1e-6)


# ---- leaving ------------------------------------------------------------------------------


def test_a_trial_pruned_by_its_hook_leaves_at_that_validation(tmp_path):
    cfgs = configs(tmp_path / "runs")
    calls: list[tuple[str, int, int]] = []

    def on_validation(index: int, epoch: int, metrics: dict[str, list[float]]) -> str | None:
        calls.append(("validate", index, epoch))
        assert (
            set(metrics) == {"val/loss", "val/acc", "train/acc", "train/loss"}
            and len(metrics["val/acc"]) == 2
        )
        return "pruned" if (index, epoch) == (1, 100) else None

    def on_exit(index: int, result: RunResult) -> None:
        calls.append((result.status, index, result.epochs))

    results = train_batch(cfgs, folders(tmp_path / "batch", 3), on_validation, on_exit)
    assert [(r.status, r.epochs) for r in results] == [
        ("completed", EPOCHS),
        ("pruned", 100),
        ("completed", EPOCHS),
    ]
    assert calls.index(("pruned", 1, 100)) < calls.index(("validate", 0, 200)), (
        "told at once, not at the end"
    )
    assert ("validate", 1, 200) not in calls
    record = metrics_json(results[1])
    assert record["status"] == "pruned" and record["epochs"] == 100 and "pruned" in record["error"]
    assert len(record["metrics"]["val/acc"]["members"]) == 2
    assert not (results[1].run_dir / "checkpoints").exists(), (
        "a pruned run keeps no checkpoint, as alone"
    )
    assert max(e.step for e in events(results[1].run_dir).Scalars("train/loss")) == 100


def test_stop_at_val_acc_ends_each_trial_where_it_would_end_alone(tmp_path):
    # a member fits with every training point right besides val/acc >= 0.7: a faster Adam.
    max_epochs = 1400
    overrides = (
        f"trainer.max_epochs={max_epochs}",
        "trainer.val_every=20",
        "trainer.stop_at_val_acc=0.7",
        "model.lr=0.03",
        "logger.image_every=0",
        "logger.pictures=false",
        "trainer.checkpoint=false",
    )
    architectures = ((20, 1), (2, 1), (8, 2))
    cfgs = configs(tmp_path / "runs", architectures, *overrides)
    results = train_batch(cfgs, folders(tmp_path / "batch", 3))
    alone = [train(cfg, new_run_dir(tmp_path / "alone")) for cfg in cfgs]
    assert [r.epochs for r in results] == [r.epochs for r in alone]
    assert any(r.epochs < max_epochs for r in results), "some stop"
    assert any(r.epochs == max_epochs for r in results), "some do not"
    for ours in results:
        assert ours.status == "completed"
        if ours.epochs < max_epochs:
            assert min(ours.metrics["val/acc"].members) >= 0.7 and ours.epochs % 20 == 0


def test_a_diverging_trial_fails_alone_and_the_others_finish(tmp_path, monkeypatch):
    drawn = batch_model.initial_members

    def one_nan_weight(spec: batch_model.TrialSpec) -> list[tuple[torch.Tensor, torch.Tensor]]:
        layers = drawn(spec)
        if spec.hidden == 12:  # its first forward gives NaN probabilities (the others' do not)
            layers[0][0][0, 0, 0] = float("nan")
        return layers

    monkeypatch.setattr(batch_model, "initial_members", one_nan_weight)
    told: list[int] = []
    results = train_batch(configs(tmp_path / "runs"), folders(tmp_path / "batch", 3),
                          on_exit=lambda index, result: told.append(index))
    assert [r.status for r in results] == ["completed", "failed", "completed"]
    assert told[0] == 1, "the failed trial is told first, at its epoch"
    record = metrics_json(results[1])
    assert record["status"] == "failed" and record["epochs"] == 0
    assert "non-finite at epoch 0" in record["error"] and "model.lr" in record["error"]
    assert results[0].epochs == results[2].epochs == EPOCHS


def test_a_learning_rate_that_diverges_fails_every_trial_like_a_single_run(tmp_path):
    results = train_batch(
        configs(tmp_path / "runs", ((5, 1), (4, 2)), "model.lr=1e38"), folders(tmp_path / "b", 2)
    )
    for result in results:
        record = metrics_json(result)
        assert record["status"] == "failed" and record["epochs"] < EPOCHS
        assert "non-finite" in record["error"] and "model.lr" in record["error"]


def test_an_interrupt_records_the_unfinished_trials_and_propagates(tmp_path):
    def interrupt(index: int, epoch: int, metrics: dict[str, list[float]]) -> str | None:
        if index == 2:
            raise KeyboardInterrupt
        return "pruned" if index == 0 else None

    told: list[int] = []
    dirs = folders(tmp_path / "batch", 3)
    with pytest.raises(KeyboardInterrupt):
        train_batch(
            configs(tmp_path / "runs"), dirs, interrupt, lambda index, result: told.append(index)
        )
    assert told == [0]
    statuses = [json.loads((d / "metrics.json").read_text())["status"] for d in dirs]
    assert statuses == ["pruned", "interrupted", "interrupted"]


# ---- what may share a batch -----------------------------------------------------------------


def test_trials_differing_in_more_than_the_architecture_are_refused(tmp_path):
    cfgs = configs(tmp_path, ((5, 1),)) + configs(tmp_path, ((6, 2),), "model.lr=0.05")
    with pytest.raises(
        ValueError, match=r"trial 1 differs from trial 0 in model\.lr \(0\.05 vs 0\.01\)"
    ):
        check_batchable(cfgs)
    check_batchable(configs(tmp_path))  # hidden and layers may differ


def test_an_unknown_exit_reason_is_refused(tmp_path):
    with pytest.raises(ValueError, match="on_validation returned 'done'"):
        train_batch(
            configs(tmp_path / "runs", ((5, 1),)), folders(tmp_path / "b", 1), lambda *_: "done"
        )


@pytest.mark.slow
def test_members_that_fit_leave_at_once_and_a_run_alone_gives_them_the_same_numbers(tmp_path):
    """A member that fits at a validation stops training there (its weights leave the batch;
    a run alone freezes it), its fit epoch is recorded, and the others go on: in a batch and
    alone every member ends with the same metrics, fit epoch and loss curve, bit for bit."""
    overrides = (
        "trainer.max_epochs=1200", "trainer.val_every=20", "trainer.stop_at_val_acc=0.9",
        "model.lr=0.03", "model.ensemble=4", "logger.image_every=0", "logger.pictures=false",
        "trainer.checkpoint=false",
    )
    cfgs = configs(tmp_path / "runs", ((20, 1), (9, 2)), *overrides)
    trainer = BatchTrainer(cfgs, folders(tmp_path / "batch", 2), None, None)
    members_at = {}
    original_depart = trainer.depart

    def counting_depart(trial, fitted, epoch):
        original_depart(trial, fitted, epoch)
        members_at[epoch] = trainer.batch.members

    trainer.depart = counting_depart
    results = trainer.run()
    fitted = results[0].epochs_to_fit
    assert all(fitted) and len(set(fitted)) > 1, "the 20-unit members fit, at different epochs"
    assert results[0].epochs == max(fitted), "the trial ends with its last member"
    assert min(members_at.values()) < 8, "members left the batch before their trial ended"
    for index, (cfg, ours) in enumerate(zip(cfgs, results, strict=True)):
        keep = KeepLosses()
        alone = train(cfg, new_run_dir(tmp_path / "alone"), extra_callbacks=[keep])
        assert ours.epochs == alone.epochs and ours.epochs_to_fit == alone.epochs_to_fit
        recorded, expected = metrics_json(ours), metrics_json(alone)
        assert recorded["epochs_to_fit"] == ours.epochs_to_fit
        for key in ("val/acc", "train/acc", "val/loss", "train/loss"):
            assert recorded["metrics"][key]["members"] == expected["metrics"][key]["members"]
        ours_losses = trainer.trials[index].record.epoch_losses[: ours.epochs]
        assert torch.equal(ours_losses, keep.losses[: ours.epochs])
    early = fitted.index(min(fitted))
    losses = trainer.trials[0].record.epoch_losses[:, early]
    after = losses[min(fitted) : results[0].epochs]
    assert (after == after[0]).all(), "a member that left keeps its loss at exit"
