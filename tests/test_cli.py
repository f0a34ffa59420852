"""`python src/train.py` as a user runs it: bad input, --cfg, the closing line, a NaN loss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TRAIN_SCRIPT, run_dirs
from mlpsweep.config import compose

# Issue 2, item 9: each must end with one line naming the key and the value, a non-zero exit,
# no traceback and no run folder. (override, text the line must contain besides the key)
BAD_INPUTS = [
    ("model.hidden=0", "0"),
    ("model.layers=-1", "-1"),
    ("model.ensemble=0", "0"),
    ("trainer.max_epochs=0", "0"),
    ("trainer.max_epochs=-1", "-1"),
    ("model.lr=-1", "-1"),
    ("data.batch_size=0", "0"),
    ("model.hiden=3", "3"),
    ("model.hidden=abc", "abc"),
]


def assert_no_traceback(process) -> None:
    assert "Traceback" not in process.stdout and "Traceback" not in process.stderr


@pytest.mark.parametrize("override,value", BAD_INPUTS, ids=[o for o, _ in BAD_INPUTS])
def test_bad_input_is_one_line_no_traceback_no_folder(run_train, tmp_path, override, value):
    output_dir = tmp_path / "runs"
    process = run_train(override, f"output_dir={output_dir}", timeout=120)
    assert process.returncode != 0
    assert process.returncode == 2, "a user's mistake exits 2 (README)"
    assert_no_traceback(process)
    assert process.stdout == ""
    lines = process.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one line, got {process.stderr!r}"
    key = override.split("=", 1)[0]
    assert key in lines[0] and value in lines[0], lines[0]
    assert not output_dir.exists() and run_dirs(output_dir) == []


def test_cfg_prints_the_config_and_exits_without_a_run(run_train, tmp_path):
    output_dir = tmp_path / "runs"
    process = run_train("--cfg", "model.hidden=7", f"output_dir={output_dir}", timeout=120)
    assert process.returncode == 0, process.stderr
    assert_no_traceback(process)
    printed = yaml.safe_load(process.stdout)
    assert printed["model"]["hidden"] == 7
    expected = compose(["model.hidden=7", f"output_dir={output_dir}"])
    assert printed["model"] == dict(expected.model) and printed["trainer"] == dict(expected.trainer)
    assert not output_dir.exists()


def run_train_on_a_terminal(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python src/train.py args...` with stderr on a pseudo-terminal, where the progress bar
    is drawn (in a pipe or a log file it is off); stderr is read as text mode would read it."""
    import fcntl
    import os
    import pty
    import struct
    import termios
    import threading

    terminal, stderr_end = pty.openpty()
    # 24 rows x 100 columns: a new pseudo-terminal has 0 columns, where tqdm draws nothing
    fcntl.ioctl(stderr_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(terminal, 4096)
            except OSError:  # the child's end closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        done = subprocess.run(
            [sys.executable, str(TRAIN_SCRIPT), *args],
            cwd=TRAIN_SCRIPT.parents[1],
            stdout=subprocess.PIPE,
            stderr=stderr_end,
            timeout=timeout,
        )
    finally:
        os.close(stderr_end)
    reader.join(timeout=10)
    os.close(terminal)
    stderr = b"".join(chunks).decode().replace("\r\n", "\n")  # the terminal's own newlines
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), stderr)


def test_quiet_run_prints_exactly_one_closing_line(tmp_path):
    output_dir = tmp_path / "runs"
    # on a terminal, where a run that is not quiet draws its bar
    process = run_train_on_a_terminal(
        "trainer.max_epochs=3", "quiet=true", f"output_dir={output_dir}"
    )
    assert process.returncode == 0, process.stderr
    assert_no_traceback(process)
    lines = process.stdout.splitlines()
    assert len(lines) == 1, process.stdout
    line = lines[0]
    assert line.startswith("completed:")
    (run_dir,) = run_dirs(output_dir)
    assert line.endswith(str(run_dir)), "the closing line names the run folder"
    for key in ("val/acc", "train/acc", "val/loss", "train/loss"):
        assert key in line
    assert "3 epochs" in line
    assert "epoch/s" not in process.stderr, "quiet: no progress bar"
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3


def test_default_run_shows_one_progress_bar_not_one_per_epoch(tmp_path):
    output_dir = tmp_path / "runs"
    process = run_train_on_a_terminal("trainer.max_epochs=300", f"output_dir={output_dir}")
    assert process.returncode == 0, process.stderr
    assert_no_traceback(process)
    assert "epoch/s" in process.stderr, "a progress bar on stderr"
    # text mode turns tqdm's in-place redraws (\r) into lines: count bars, not lines
    assert process.stderr.count("| 0/300 ") == 1, "one bar for the whole run"
    assert "Epoch " not in process.stderr, "no Lightning bar per epoch"
    assert len(process.stderr.splitlines()) < 30, "redrawn now and then, not once per epoch"
    assert len(process.stdout.splitlines()) == 1 and process.stdout.startswith("completed:")


def test_nan_loss_stops_with_one_clear_line(run_train, tmp_path):
    # lr=1e38 passes the config check (a finite float32) and Adam's first step drives the
    # weights to +-1e38: the next forward pass sums +inf and -inf into NaN probabilities.
    output_dir = tmp_path / "runs"
    process = run_train(
        "model.lr=1e38", "trainer.max_epochs=100", "quiet=true", f"output_dir={output_dir}"
    )
    assert process.returncode != 0 and process.returncode != 2, "a failed run, not a config error"
    assert_no_traceback(process)
    assert process.stdout == "", "no 'completed:' line"
    lines = process.stderr.splitlines()
    assert len(lines) == 1, process.stderr
    assert "non-finite" in lines[0] and "model.lr" in lines[0]
    (run_dir,) = run_dirs(output_dir)  # kept for inspection, and marked as failed
    assert str(run_dir) in lines[0]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and record["epochs"] < 100


@pytest.mark.parametrize(
    "args", [["--frobnicate"], ["model.hidden"]], ids=["unknown-flag", "no-equals"]
)
def test_malformed_command_lines_are_one_line_errors(run_train, tmp_path, args):
    output_dir = tmp_path / "runs"
    process = run_train(*args, f"output_dir={output_dir}", timeout=120)
    assert process.returncode == 2
    assert_no_traceback(process)
    assert len(process.stderr.splitlines()) == 1 and args[0] in process.stderr
    assert not output_dir.exists()


def test_train_script_runs_from_another_working_directory(tmp_path):
    """`python /path/to/src/train.py` from elsewhere: conf/ is found next to the package."""
    process = subprocess.run([sys.executable, str(TRAIN_SCRIPT), "--cfg"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    assert yaml.safe_load(process.stdout)["model"]["hidden"] == 20
    assert list(Path(tmp_path).iterdir()) == []
