"""What a run's pictures, TensorBoard, the terminal and make show agrees with the data.

The fit picture's legend names both classes; TensorBoard's HParams tab shows the searched
architecture among its default columns, booleans as true/false; a log file (stderr not a
terminal) is not flooded with progress-bar redraws and the closing line appears once;
`make dashboard PORT=...` serves on that port.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import to_hex

from mlpsweep.config import compose
from mlpsweep.plots import fit_figure
from mlpsweep.summary import summarize_study
from mlpsweep.sweep import launch

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_fit_pictures_legend_names_both_classes_in_their_own_colours() -> None:
    positions = np.array([-2.0, -1.0, 1.0, 2.0])
    labels = np.array([0.0, 1.0, 1.0, 0.0])
    grid = np.linspace(-3, 3, 7)
    figure = fit_figure(positions, labels, grid, np.full((2, 7), 0.5), "title")
    legend = figure.axes[0].get_legend()
    entries = {
        text.get_text(): to_hex(handle.get_facecolor()[0])
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)
        if text.get_text().startswith("training points")
    }
    assert set(entries) == {"training points, y = 1", "training points, y = 0"}
    assert len(set(entries.values())) == 2, "each class in its own colour"
    points = [collection for collection in figure.axes[0].collections if collection.get_label()]
    for collection in points:
        ys = collection.get_offsets()[:, 1]
        assert set(ys) == {1.0 if collection.get_label().endswith("1") else 0.0}


# ---- TensorBoard's HParams tab -------------------------------------------------------

# TensorBoard's HParams table ticks this many columns by default: its hparams with
# `differs` first, then by name (tf-hparams-query-pane in TensorBoard's web app).
COLUMNS_SHOWN_BY_DEFAULT = 5


def hparams_experiment(logdir: Path) -> tuple[dict[str, Any], list[Any]]:
    """Each run's hyperparameters and the HParams columns TensorBoard's server builds."""
    from tensorboard import context
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context
    from tensorboard.plugins.hparams import metadata as hparams_metadata

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = MultiplexerDataProvider(multiplexer, str(logdir))
    server = backend_context.Context(
        base_plugin.TBContext(logdir=str(logdir), data_provider=provider, multiplexer=multiplexer)
    )
    request = context.RequestContext()
    metadata = server.hparams_metadata(request, "")
    from_provider = server.hparams_from_data_provider(request, "", None)
    experiment = server.experiment_from_metadata(request, "", False, metadata, from_provider)
    sessions = {
        run: hparams_metadata.parse_session_start_info_plugin_data(
            tags[hparams_metadata.SESSION_START_INFO_TAG]
        ).hparams
        for run, tags in metadata.items()
        if hparams_metadata.SESSION_START_INFO_TAG in tags
    }
    assert set(sessions) <= set(multiplexer.Runs())
    return {run: sessions.get(run) for run in sorted(multiplexer.Runs())}, list(
        experiment.hparam_infos
    )


def test_a_sweeps_hparams_tab_shows_the_architecture_by_default_and_booleans_as_words(
    tmp_path: Path,
) -> None:
    overrides = [
        "sweep=default", "trainer.max_epochs=60", "trainer.val_every=20", "logger.image_every=0",
        "quiet=true", "sweep.workers=1", "sweep.n_trials=2", "sweep.batch=2",
        f"sweep.output_dir={tmp_path}",
    ]
    assert launch(compose(overrides), overrides) == 0
    summarize_study(str(tmp_path / "mlp_arch"))
    runs, infos = hparams_experiment(tmp_path / "mlp_arch")
    assert list(runs) == ["summary", "trials/0", "trials/1"], "short names, no version folders"
    ordered = sorted(infos, key=lambda info: not info.differs)  # the web app's stable sort
    shown = [info.name for info in ordered[:COLUMNS_SHOWN_BY_DEFAULT]]
    assert shown[:3] == ["model.hidden", "model.layers", "parameter_count"], shown
    assert not [info.name for info in infos if info.name.startswith("data.")], (
        "the data set's constant keys are no columns: the metrics follow the architecture")
    normalize = runs["trials/0"]["data.normalize"]
    assert normalize.WhichOneof("kind") == "string_value"
    assert normalize.string_value == "false", "a boolean reads false, not 0.0000"


# ---- output to a log file ------------------------------------------------------------


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python src/<script> args` with stdout and stderr going to pipes: not a terminal,
    as when a user writes `2> log`. Read as bytes: text mode would turn a bar's carriage
    returns into newlines."""
    done = subprocess.run([sys.executable, f"src/{script}", *args], cwd=REPO_ROOT,
                          capture_output=True, timeout=300)
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def test_a_sweep_logging_to_a_file_writes_plain_lines_and_its_last_state_once(
    tmp_path: Path,
) -> None:
    done = run_script(
        "sweep.py", "trainer.max_epochs=60", "trainer.val_every=20", "logger.image_every=0",
        "sweep.workers=1", "sweep.n_trials=2", "sweep.batch=1", f"sweep.output_dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr, "no progress-bar redraws in a log file"
    lines = done.stderr.splitlines()
    assert len(lines) == len(set(lines)) <= 3, lines
    assert sum("2/2 trials finished" in line for line in lines) == 1
    assert done.stdout.count("best trial ") == 1


def test_a_run_logging_to_a_file_writes_no_bar_and_its_closing_line_once(tmp_path: Path) -> None:
    done = run_script("train.py", "trainer.max_epochs=300", "logger.image_every=0",
                      f"output_dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "epoch/s" not in done.stderr
    assert (done.stdout + done.stderr).count("completed: ") == 1


# ---- make ----------------------------------------------------------------------------


def make_command(*args: str) -> str:
    """The command `make` would run for `args` (dry run), its last line."""
    # --no-print-directory: under `make test` this make is nested and would end on its
    # "make[1]: Leaving directory" line
    done = subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_make_dashboard_and_tensorboard_take_the_port_given() -> None:
    assert make_command("dashboard", "STUDY=mlp_arch", "PORT=9123").endswith(
        "src/dashboard.py mlp_arch --port 9123"
    )
    assert "--port" not in make_command("dashboard")  # dashboard.py's own default, 8080
    assert make_command("tensorboard").endswith("--port 6006")
    # a run's loss curve is an events file of its own: the legacy loader must follow both
    assert "--reload_multifile=true" in make_command("tensorboard")
    assert make_command("tensorboard", "PORT=7007").endswith("--port 7007")
