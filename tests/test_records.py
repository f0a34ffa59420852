"""What a sweep records: each trial's config.yaml and best.yaml hold the `sweep:` block that
ran, and reproduce lines name only the keys that change what is learnt (issue 19, 8 and 22)."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from mlpsweep.config import compose
from mlpsweep.sweep import launch
from mlpsweep.sweep.trial_config import reproduce_command, training_overrides, trial_config

FAST = ("trainer.max_epochs=40", "trainer.val_every=20", "quiet=true", "sweep.workers=1")


def test_trial_configs_and_best_yaml_record_the_sweep_block_that_ran(tmp_path: Path) -> None:
    overrides = [
        "sweep=default", *FAST, f"sweep.output_dir={tmp_path}", "sweep.n_trials=2",
        "sweep.study_name=narrow", "sweep.space.model.hidden.high=3",
        "sweep.space.model.layers.high=1", "sweep/pruner=none",
    ]
    assert launch(compose(overrides), overrides) == 0
    study_dir = tmp_path / "narrow"
    study = optuna.load_study(study_name="narrow", storage=f"sqlite:///{study_dir / 'study.db'}")
    recorded = [study_dir / "trials" / str(trial.number) / "config.yaml" for trial in study.trials]
    for path in [*recorded, study_dir / "best.yaml"]:
        sweep = yaml.safe_load(path.read_text())["sweep"]
        assert sweep["n_trials"] == 2 and sweep["study_name"] == "narrow", path
        assert sweep["space"]["model"]["hidden"]["high"] == 3, path
        assert sweep["space"]["model"]["layers"]["high"] == 1, path


def test_a_trials_recorded_storage_has_its_password_masked() -> None:
    base = training_overrides(["sweep=default", "sweep.storage=postgresql://u:secret@host/db"])
    cfg = trial_config(base, {"model.hidden": 3, "model.layers": 1})
    assert cfg.sweep.storage == "postgresql://u:***@host/db"


def test_reproduce_lines_leave_out_what_only_changes_the_output() -> None:
    cfg = compose([
        "model.hidden=5", "logger.image_every=0", "logger.pictures=false",
        "logger.flush_every=7", "trainer.checkpoint=false", "trainer.max_epochs=300",
    ])
    assert reproduce_command(cfg) == "python src/train.py model.hidden=5 trainer.max_epochs=300"


def test_a_sweep_trials_reproduce_line_keeps_the_sweeps_training_keys() -> None:
    # conf/sweep/default.yaml sets model.ensemble=4, a stop bar and logger.image_every=0
    cfg = trial_config(training_overrides(["sweep=default"]), {"model.hidden": 5})
    line = reproduce_command(cfg)
    assert "model.ensemble=4" in line and "trainer.stop_at_val_acc=0.99" in line
    assert "logger." not in line
