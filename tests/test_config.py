"""Config composition (Hydra), types and ranges, checked before anything is built."""

from __future__ import annotations

import inspect

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from mlpsweep.config import (
    ConfigError,
    compose,
    hyperparameter_keys,
    schema_keys,
    searched_keys,
)
from mlpsweep.data import PiecewiseDataModule
from mlpsweep.model import MLP
from mlpsweep.training import build, hparams_of


def test_defaults_are_the_tutorials_run():
    cfg = compose([])
    model = (cfg.model.hidden, cfg.model.layers, cfg.model.lr, cfg.model.ensemble)
    assert model == (20, 1, 0.01, 1)
    assert (cfg.data.batch_size, cfg.data.shuffle, cfg.data.normalize) == (32, False, False)
    assert cfg.trainer.max_epochs == 7000
    assert cfg.trainer.val_every < cfg.trainer.max_epochs, "validation well below once per epoch"
    assert cfg.seed == 0 and cfg.quiet is False


def test_overrides_and_the_two_layer_experiment_give_the_same_model():
    by_keys = compose(["model.hidden=10", "model.layers=2"])
    by_experiment = compose(["experiment=two_layer"])
    assert OmegaConf.to_container(by_keys.model) == OmegaConf.to_container(by_experiment.model)
    assert by_keys.model.hidden == 10 and by_keys.model.layers == 2
    assert OmegaConf.to_container(by_keys) == OmegaConf.to_container(by_experiment)


def test_fits_experiment_and_command_line_overrides_win_over_it():
    fits = compose(["experiment=fits"])
    assert fits.data.normalize is True
    assert (fits.model.hidden, fits.model.layers, fits.trainer.max_epochs) == (20, 1, 3000)
    shorter = compose(["experiment=fits", "trainer.max_epochs=5", "model.ensemble=4"])
    assert shorter.trainer.max_epochs == 5 and shorter.model.ensemble == 4
    assert shorter.data.normalize is True


def test_values_are_typed_by_the_schema():
    cfg = compose(["model.lr=1", "model.hidden=7", "data.shuffle=true"])
    assert isinstance(cfg.model.lr, float) and cfg.model.lr == 1.0
    assert isinstance(cfg.model.hidden, int)
    assert cfg.data.shuffle is True


def test_seed_zero_is_kept_and_honoured():
    cfg = compose(["seed=0"])
    assert cfg.seed == 0 and hparams_of(cfg)["seed"] == 0
    _, model = build(cfg)
    torch.manual_seed(0)  # what seed 0 means: the tutorial's first draws after manual_seed(0)
    first = nn.Linear(1, 20)
    assert torch.equal(model.real_layers()[0][0][0], first.weight.detach().T)
    _, model_again = build(compose(["seed=0"]))
    _, other = build(compose(["seed=1"]))
    assert torch.equal(model_again.weights[0], model.weights[0]), "the same seed, the same network"
    assert not torch.equal(other.weights[0], model.weights[0]), "another seed, another network"


def test_build_passes_every_model_and_data_key_through():
    cfg = compose(
        [
            "model.hidden=6",
            "model.layers=3",
            "model.lr=0.05",
            "model.ensemble=2",
            "model.fused_adam=false",
            "data.batch_size=10",
            "data.normalize=true",
            "data.val_points=123",
            "data.shuffle=true",
        ]
    )
    datamodule, model = build(cfg)
    hp = model.hparams
    assert (hp.hidden, hp.layers, hp.lr, hp.ensemble, hp.fused_adam) == (6, 3, 0.05, 2, False)
    assert (hp.x_shift, hp.x_scale) == (
        datamodule.standardizer.shift,
        datamodule.standardizer.scale,
    )
    assert hp.x_scale != 1.0
    assert (datamodule.batch_size, datamodule.shuffle, datamodule.val_points) == (10, True, 123)
    assert datamodule.val_x.shape == (123, 1)


@pytest.mark.parametrize(
    "override,fragments",
    [
        ("model.hidden=0", ["model.hidden", "0", ">= 1"]),
        ("model.layers=-1", ["model.layers", "-1", ">= 1"]),
        ("model.ensemble=0", ["model.ensemble", "0", ">= 1"]),
        ("trainer.max_epochs=0", ["trainer.max_epochs", "0", ">= 1"]),
        ("trainer.max_epochs=-1", ["trainer.max_epochs", "-1", ">= 1"]),
        ("model.lr=-1", ["model.lr", "-1", "positive"]),
        ("model.lr=0", ["model.lr", "0", "positive"]),
        ("model.lr=inf", ["model.lr", "inf", "finite"]),
        ("data.batch_size=0", ["data.batch_size", "0", ">= 1"]),
        ("seed=-1", ["seed", "-1", ">= 0"]),
        ("model.hiden=3", ["model.hiden", "3", "model.hidden"]),
        ("model.hidden=abc", ["model.hidden", "abc", "integer"]),
        ("model.lr=abc", ["model.lr", "abc", "number"]),
        ("model.hidden=1.5", ["model.hidden", "1.5", "integer"]),
        ("data.normalize=maybe", ["data.normalize", "maybe", "true or false"]),
        ("+model.extra=1", ["model.extra", "1", "unknown"]),
        ("~model.hidden", ["model.hidden", "no value"]),
        ("experiment=nope_not_there", ["experiment/nope_not_there", "fits", "two_layer"]),
        ("sweep=nope_not_there", ["sweep/nope_not_there", "default", "pareto"]),
    ],
)
def test_bad_values_are_one_line_config_errors(override, fragments):
    with pytest.raises(ConfigError) as caught:
        compose([override])
    message = str(caught.value)
    assert "\n" not in message.strip()
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


@pytest.mark.parametrize(
    "override,reason",
    [
        ("trainer.accelerator=gpu", "CPU"),
        ("+trainer.accelerator=gpu", "CPU"),
        ("trainer.devices=2", "CPU"),
        ("trainer.precision=16", "float32"),
    ],
)
def test_accelerator_devices_and_precision_are_refused_with_the_reason(override, reason):
    """The model's hot loop is written for one CPU in float32 (see mlpsweep.model.MLP): a key
    that asked for anything else would be silently ignored, so it must not exist."""
    with pytest.raises(ConfigError) as caught:
        compose([override])
    message = str(caught.value)
    assert "\n" not in message.strip()
    key, value = override.lstrip("+").split("=")
    assert f"unknown key '{key}'" in message and value in message and reason in message


def test_train_script_refuses_a_gpu_with_one_line(run_train, tmp_path):
    output_dir = tmp_path / "runs"
    process = run_train("trainer.accelerator=gpu", f"output_dir={output_dir}", timeout=120)
    assert process.returncode == 2 and process.stdout == ""
    lines = process.stderr.splitlines()
    assert len(lines) == 1 and "trainer.accelerator" in lines[0] and "gpu" in lines[0], lines
    assert not output_dir.exists()


def test_hparams_are_the_keys_that_shape_a_run_plus_the_searched_ones():
    shown = hparams_of(compose(["model.fused_adam=false"]))
    assert {"model.hidden", "model.lr", "data.shuffle", "trainer.val_every", "seed"} <= set(shown)
    assert not {"trainer.threads", "trainer.checkpoint", "model.fused_adam"} & set(shown)
    assert not [key for key in shown if key.startswith(("logger.", "sweep"))]
    assert shown["data.shuffle"] == "false", "booleans as words: TensorBoard shows a bool as 0.0"
    assert shown["trainer.stop_at_val_acc"] is None, "unset: torch's hparams leaves it out"

    space = "+sweep.space.model.fused_adam={type:categorical,choices:[true,false]}"
    trial = compose(["sweep=default", space, "model.fused_adam=false"])
    assert searched_keys(trial) == ("model.hidden", "model.layers", "model.fused_adam")
    searched = hparams_of(trial, searched_keys(trial))
    assert searched["model.fused_adam"] == "false", "a searched key is shown even if run-only"
    # the sweep stops a trial once all its members fit, by the fit definition's own bar
    assert searched["trainer.stop_at_val_acc"] == searched["trainer.fit_val_acc"] == 0.99


def test_hparams_keys_follow_the_schema():
    """A key added to the schema is shown unless marked `hyperparameter=False`."""
    derived = set(hyperparameter_keys())
    leaves = {key.path for key in schema_keys()}
    assert derived < leaves
    assert leaves - derived == {
        "model.fused_adam",
        "trainer.threads",
        "trainer.checkpoint",
        "logger.image_every",
        "logger.flush_every",
        "logger.pictures",
        "quiet",
        "output_dir",
        "ckpt_path",
        "sweep",
    }


@pytest.mark.parametrize("section,cls", [("model", MLP), ("data", PiecewiseDataModule)])
def test_every_yaml_key_is_a_required_keyword_of_the_class_it_builds(section, cls):
    """The defaults live in the yaml only: a default in the signature would be a second copy."""
    parameters = inspect.signature(cls.__init__).parameters
    for key in compose([])[section]:
        assert key in parameters, f"{section}.{key} is not an argument of {cls.__name__}"
        assert parameters[key].kind is inspect.Parameter.KEYWORD_ONLY, key
        assert parameters[key].default is inspect.Parameter.empty, f"{key} has a default"
