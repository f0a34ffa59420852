"""Real (short) training runs through `mlpsweep.training.train`: learning, the known-good fit,
the run folder, the checkpoint and what TensorBoard reads back."""

from __future__ import annotations

import json
import math
import secrets
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from mlpsweep.config import validate
from mlpsweep.data import PiecewiseDataModule
from mlpsweep.model import MLP, NonFiniteLossError
from mlpsweep.training import build, new_run_dir, train

METRIC_KEYS = {"train/loss", "train/acc", "val/loss", "val/acc"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# 57 of the 100 labels are 1: the best constant predictor has this loss and accuracy.
CONSTANT_LOSS = -(0.57 * math.log(0.57) + 0.43 * math.log(0.43))
CONSTANT_ACC = 0.57


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(
        str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


def scalar_series(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


# ---- learning -------------------------------------------------------------------------


def test_short_run_learns(finished_run):
    loss = scalar_series(events(finished_run.run_dir), "train/loss")
    first, last = loss[0], loss[-1]
    assert first[0] == 1 and last[0] == finished_run.cfg.trainer.max_epochs
    assert last[1] < 0.9 * first[1], f"train/loss did not fall: {first} -> {last}"
    members = finished_run.metrics["metrics"]
    for value in members["train/loss"]["members"]:
        assert value < CONSTANT_LOSS, "every member beats the best constant predictor's loss"
    for value in members["train/acc"]["members"]:
        assert value > CONSTANT_ACC, "every member beats the best constant predictor's accuracy"


@pytest.mark.slow
def test_known_good_configuration_fits_every_point(make_cfg, tmp_path):
    cfg = make_cfg(
        "experiment=fits",
        "model.ensemble=4",
        "logger.image_every=0",
        "logger.pictures=false",
        "trainer.checkpoint=false",
    )
    chosen = (cfg.data.normalize, cfg.model.layers, cfg.model.hidden, cfg.trainer.max_epochs)
    assert chosen == (True, 1, 20, 3000)
    result = train(cfg, new_run_dir(tmp_path / "runs"))
    assert result.status == "completed" and result.epochs == 3000
    assert result.metrics["train/acc"].members == [1.0, 1.0, 1.0, 1.0]


def test_stop_at_val_acc_ends_the_run_once_every_member_reaches_it(make_cfg, tmp_path):
    """Every member must fit: val/acc at the bar *and* every training point right, so the
    run uses standardised x and a faster Adam to fit within the budget."""
    cfg = make_cfg(
        "trainer.max_epochs=2000",
        "trainer.val_every=50",
        "trainer.stop_at_val_acc=0.7",
        "model.ensemble=3",
        "data.normalize=true",
        "model.lr=0.05",
    )
    result = train(cfg, new_run_dir(tmp_path / "runs"))
    members = result.metrics["val/acc"].members
    assert result.status == "completed" and result.epochs < 2000 and result.epochs % 50 == 0
    assert min(members) >= 0.7
    assert result.metrics["train/acc"].members == [1.0, 1.0, 1.0]
    logged = events(result.run_dir)
    losses = scalar_series(logged, "train/loss")
    # no epoch past the stop
    assert [step for step, _ in losses] == list(range(1, result.epochs + 1))
    fit_rates = scalar_series(logged, "fit_rate")
    assert fit_rates[-1] == (result.epochs, 1.0) and fit_rates[0][1] < 1.0
    assert "stop_fit_rate" not in logged.Tags()["scalars"], "the stop's own copy stays internal"


def test_without_stop_at_val_acc_the_run_goes_on(make_cfg, tmp_path):
    result = train(
        make_cfg("trainer.max_epochs=300", "trainer.val_every=50"), new_run_dir(tmp_path / "runs")
    )
    assert result.epochs == 300


def test_same_seed_same_run_other_seed_other_run(make_cfg, tmp_path):
    overrides = (
        "trainer.max_epochs=40",
        "data.shuffle=true",
        "model.ensemble=2",
        "logger.pictures=false",
        "trainer.checkpoint=false",
        "logger.image_every=0",
    )
    runs = [
        train(make_cfg(*overrides, f"seed={seed}"), new_run_dir(tmp_path / "runs"))
        for seed in (0, 0, 1)
    ]
    first, again, other = ({k: v.members for k, v in r.metrics.items()} for r in runs)
    assert first == again
    assert first["train/loss"] != other["train/loss"]


def test_non_finite_loss_stops_the_run_and_marks_it_failed(make_cfg, tmp_path):
    # lr=1e38 is a valid float32 and passes the config check; Adam's first step moves each
    # weight by about lr, the next forward sums +inf and -inf into NaN probabilities.
    cfg = make_cfg("model.lr=1e38", "trainer.max_epochs=50")
    run_dir = new_run_dir(tmp_path / "runs")
    with pytest.raises(NonFiniteLossError, match="non-finite.*model.lr"):
        train(cfg, run_dir)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed"
    assert "non-finite" in record["error"]
    assert record["epochs"] < 50


# ---- the run folder ---------------------------------------------------------------------


def test_config_yaml_is_the_resolved_config_and_recomposes(finished_run):
    saved = OmegaConf.load(finished_run.run_dir / "config.yaml")
    assert OmegaConf.to_container(saved.model) == OmegaConf.to_container(finished_run.cfg.model)
    assert OmegaConf.to_container(validate(saved)) == OmegaConf.to_container(
        finished_run.cfg, resolve=True
    )
    assert saved.seed == 7 and saved.model.ensemble == 3


def test_metrics_json(finished_run):
    record = finished_run.metrics
    cfg = finished_run.cfg
    assert record["status"] == "completed" and record["error"] is None
    assert record["epochs"] == cfg.trainer.max_epochs
    assert Path(record["run_dir"]) == finished_run.run_dir
    assert record["parameter_count"] == 3 * cfg.model.hidden + 1
    assert set(record["metrics"]) == METRIC_KEYS
    for key, summary in record["metrics"].items():
        members = summary["members"]
        assert len(members) == cfg.model.ensemble, key
        assert summary["mean"] == pytest.approx(sum(members) / len(members)), key
        assert summary["min"] == min(members) and summary["max"] == max(members), key
        assert summary["std"] == pytest.approx(torch.tensor(members).std().item(), abs=1e-9), key
        assert len(set(members)) > 1, (
            f"{key}: members trained from different initialisations differ"
        )
    for key in ("train/acc", "val/acc"):
        assert all(0.0 <= v <= 1.0 for v in record["metrics"][key]["members"])


@pytest.mark.parametrize("name", ["fit.png", "loss.png"])
def test_pictures_are_valid_pngs(finished_run, name):
    path = finished_run.run_dir / name
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert 400 <= width <= 3000 and 200 <= height <= 2000
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 10, "a drawn picture, not a blank canvas"


def test_checkpoint_restores_the_trained_members(finished_run):
    path = finished_run.run_dir / "checkpoints" / "last.ckpt"
    model = MLP.load_from_checkpoint(path, map_location="cpu")
    cfg = finished_run.cfg
    hp = model.hparams
    assert (hp.hidden, hp.layers, hp.lr, hp.ensemble) == (
        cfg.model.hidden,
        cfg.model.layers,
        cfg.model.lr,
        cfg.model.ensemble,
    )
    datamodule = PiecewiseDataModule(**cfg.data, seed=cfg.seed)
    model.eval()
    with torch.no_grad():
        train_acc = model.member_accuracy(datamodule.x, datamodule.y).tolist()
        val_acc = model.member_accuracy(datamodule.val_x, datamodule.val_y).tolist()
    recorded = finished_run.metrics["metrics"]
    assert train_acc == pytest.approx(recorded["train/acc"]["members"], abs=1e-6)
    assert val_acc == pytest.approx(recorded["val/acc"]["members"], abs=1e-6)
    _, untrained = build(cfg)
    assert not torch.equal(untrained.weights[0], model.weights[0]), (
        "the checkpoint holds trained weights"
    )


def test_new_run_dir_retries_on_a_name_collision(tmp_path, monkeypatch):
    draws = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(draws))
    first, second = new_run_dir(tmp_path), new_run_dir(tmp_path)
    assert first.name.endswith("_aaaa")
    assert second.name.endswith("_bbbb"), "the second folder must not reuse the first"
    assert first.name[:19] <= second.name[:19], "names start with a sortable time stamp"


# ---- TensorBoard --------------------------------------------------------------------------


def test_tensorboard_scalars(finished_run):
    accumulator = events(finished_run.run_dir)
    epochs = finished_run.cfg.trainer.max_epochs
    tags = set(accumulator.Tags()["scalars"])
    assert METRIC_KEYS <= tags
    assert {"val/acc_min", "val/acc_max", "val/acc_std"} <= tags, "the ensemble's spread"
    assert "hp_metric" not in tags, "no Lightning placeholder metric"

    loss = scalar_series(accumulator, "train/loss")  # in the order they were written
    steps = [step for step, _ in loss]
    assert steps == sorted(steps), (
        "written in step order (TensorBoard drops data behind a later step)"
    )
    assert sorted(set(steps)) == list(range(1, epochs + 1)), (
        "one train/loss point per epoch, x = epoch"
    )
    by_step: dict[int, list[float]] = {}
    for step, value in loss:
        by_step.setdefault(step, []).append(value)
    # the HParams entry repeats the final value, nothing else may
    for step, values in by_step.items():
        assert max(values) == pytest.approx(min(values), rel=1e-6), (
            f"two different losses at epoch {step}"
        )

    val_steps = sorted({step for step, _ in scalar_series(accumulator, "val/acc")})
    assert val_steps == [100, 200, epochs], "every val_every epochs and after the last"
    recorded = finished_run.metrics["metrics"]
    for key in METRIC_KEYS:
        step, value = scalar_series(accumulator, key)[-1]
        assert step == epochs
        assert value == pytest.approx(recorded[key]["mean"], rel=1e-6), key
    assert scalar_series(accumulator, "val/acc_min")[-1][1] == pytest.approx(
        recorded["val/acc"]["min"]
    )
    assert scalar_series(accumulator, "val/acc_max")[-1][1] == pytest.approx(
        recorded["val/acc"]["max"]
    )


def test_tensorboard_fit_images(finished_run):
    accumulator = events(finished_run.run_dir)
    assert "fit" in accumulator.Tags()["images"]
    images = accumulator.Images("fit")
    assert [image.step for image in images] == [100, 200, finished_run.cfg.trainer.max_epochs]
    for image in images:
        assert image.encoded_image_string[:8] == PNG_MAGIC
        assert image.width > 100 and image.height > 100


def hparams_plugin(accumulator: EventAccumulator) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    return {
        tag: plugin_data_pb2.HParamsPluginData.FromString(content)
        for tag, content in accumulator.PluginTagToContent("hparams").items()
    }


def test_tensorboard_hparams_hold_real_hyperparameters_and_final_metrics(finished_run):
    accumulator = events(finished_run.run_dir)
    plugin = hparams_plugin(accumulator)
    session = plugin["_hparams_/session_start_info"].session_start_info
    hparams = {}
    for key, value in session.hparams.items():
        kind = value.WhichOneof("kind")
        hparams[key] = getattr(value, kind)
    cfg = finished_run.cfg
    expected = {
        "model.hidden": cfg.model.hidden,
        "model.layers": cfg.model.layers,
        "model.lr": cfg.model.lr,
        "model.ensemble": cfg.model.ensemble,
        "data.batch_size": cfg.data.batch_size,
        "data.normalize": cfg.data.normalize,
        "trainer.max_epochs": cfg.trainer.max_epochs,
        "seed": cfg.seed,
        "data.shuffle": cfg.data.shuffle,
        "data.val_points": cfg.data.val_points,
        "trainer.val_every": cfg.trainer.val_every,
    }
    for key, value in expected.items():
        assert key in hparams, f"{key} missing from HParams"
        if isinstance(value, bool):  # torch would show a bool as 0.0000; a string reads true/false
            assert hparams[key] == ("true" if value else "false"), key
        else:
            assert hparams[key] == pytest.approx(float(value)), key
    for key in ("trainer.threads", "trainer.checkpoint", "model.fused_adam", "quiet"):
        assert key not in hparams, f"{key} does not change what a run learns"

    assert hparams["parameter_count"] == 3 * cfg.model.hidden + 1, "a column, not a metric"
    assert "parameter_count" not in accumulator.Tags()["scalars"], "no series of one point"

    experiment = plugin["_hparams_/experiment"].experiment
    metric_tags = {info.name.tag for info in experiment.metric_infos}
    assert METRIC_KEYS <= metric_tags
    assert "hp_metric" not in metric_tags and "parameter_count" not in metric_tags
    columns = [info.name for info in experiment.hparam_infos]
    assert "model.hidden" in columns and "parameter_count" in columns
    assert not [name for name in columns if name.startswith("data.")], (
        "the data set's constant settings are no columns before the metrics")
    # TensorBoard shows each HParams metric as its scalar's last value: the final members' mean.
    final_val_acc = scalar_series(accumulator, "val/acc")[-1][1]
    assert final_val_acc != -1
    assert final_val_acc == pytest.approx(
        finished_run.metrics["metrics"]["val/acc"]["mean"], rel=1e-6
    )


# ---- the Lightning contract (see mlpsweep.model.MLP) --------------------------------------

OPTIMIZER_HOOKS = (
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
)


class HookCounter(pl.Callback):
    """Counts the per-optimizer-step hooks a callback could rely on, and the epochs."""

    def __init__(self) -> None:
        self.calls = dict.fromkeys([*OPTIMIZER_HOOKS, "on_train_epoch_end"], 0)
        self.global_step_at_end: int | None = None

    def on_before_backward(self, *args: Any) -> None:
        self.calls["on_before_backward"] += 1

    def on_after_backward(self, *args: Any) -> None:
        self.calls["on_after_backward"] += 1

    def on_before_optimizer_step(self, *args: Any) -> None:
        self.calls["on_before_optimizer_step"] += 1

    def on_before_zero_grad(self, *args: Any) -> None:
        self.calls["on_before_zero_grad"] += 1

    def on_train_epoch_end(self, *args: Any) -> None:
        self.calls["on_train_epoch_end"] += 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.global_step_at_end = trainer.global_step


def test_lightning_sees_no_optimizer_steps_so_step_hooks_and_lr_monitor_stay_silent(
    make_cfg, tmp_path
):
    """The model steps the raw optimizer inside one Lightning step per epoch. If this test
    fails, Lightning now sees the steps: update MLP's docstring and the cost it states."""
    counter = HookCounter()
    cfg = make_cfg(
        "trainer.max_epochs=30",
        "trainer.val_every=10",
        "logger.pictures=false",
        "logger.image_every=0",
        "trainer.checkpoint=false",
    )
    monitor = LearningRateMonitor(logging_interval="step")
    result = train(cfg, new_run_dir(tmp_path / "runs"), extra_callbacks=[counter, monitor])
    assert result.status == "completed" and result.epochs == 30
    assert counter.calls["on_train_epoch_end"] == 30, "the counter saw the run"
    assert counter.global_step_at_end == 0
    fired = {hook: counter.calls[hook] for hook in OPTIMIZER_HOOKS}
    assert fired == dict.fromkeys(OPTIMIZER_HOOKS, 0)
    tags = events(result.run_dir).Tags()["scalars"]
    assert not [tag for tag in tags if tag.startswith("lr")], "LearningRateMonitor records nothing"
