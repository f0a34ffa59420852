"""The PostgreSQL server going away mid-sweep: one line, then a re-run finishes the study.

The server is reached through a TCP relay the test owns, so "the server goes away" is the
relay closing every connection and refusing new ones, which is what a client sees of a
stopped server, without stopping the server other tests (and other sessions) share.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import pytest
from optuna.trial import TrialState

from conftest import assert_one_error_line
from mlpsweep.sweep.outage import Outage, StorageLost, is_outage

REPO_ROOT = Path(__file__).resolve().parents[1]


class Relay:
    """A TCP relay from a local port to the server: `stop()` is the server going away."""

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self.pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        with self.lock:
            for end in self.sockets:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}").geturl()


def sweep_command(out: Path, storage: str) -> list[str]:
    return [
        sys.executable, "src/sweep.py", "sweep=default", "sweep/pruner=none",
        f"sweep.output_dir={out}", f"sweep.storage={storage}", "sweep.n_trials=2",
        "sweep.workers=2", "sweep.batch=1", "sweep.heartbeat_interval=1", "sweep.grace_period=5",
        # every epoch trained: with the compiled step a small trial that fits is done within a
        # second, and the sweep could end before the server goes away
        "trainer.max_epochs=10000", "trainer.val_every=1000", "trainer.stop_at_val_acc=null",
        "logger.image_every=0", "quiet=true",
    ]


@pytest.mark.slow
@pytest.mark.postgres
def test_the_server_going_away_mid_sweep_is_one_line_and_a_rerun_finishes(
    tmp_path: Path, postgres_url: str
) -> None:
    parts = urlsplit(postgres_url)
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 5432))
    storage = through(postgres_url, relay.port)
    sweep = subprocess.Popen(
        sweep_command(tmp_path, storage), cwd=REPO_ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while not trials_training(postgres_url):
            assert sweep.poll() is None, sweep.communicate()
            assert time.monotonic() < deadline, "no trial started training"
            time.sleep(0.5)
        relay.stop()
        out, err = sweep.communicate(timeout=180)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    lost = subprocess.CompletedProcess(sweep.args, sweep.returncode, out, err)
    line = assert_one_error_line(lost, f"127.0.0.1:{relay.port}", "re-run", code=1)
    assert f":{parts.password}@" not in line and ":***@" in line
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 5432), port=relay.port)
    try:
        rerun = subprocess.run(
            sweep_command(tmp_path, storage), cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=300,
        )
    finally:
        relay.stop()
    assert rerun.returncode == 0, rerun.stderr
    trials = optuna.load_study(study_name="mlp_arch", storage=postgres_url).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def trials_training(url: str) -> bool:
    try:
        trials = optuna.load_study(study_name="mlp_arch", storage=url).trials
    except Exception:  # not created yet
        return False
    return any(t.state == TrialState.RUNNING and t.user_attrs.get("run_dir") for t in trials)


def test_an_outage_is_retried_until_the_window_ends_then_one_line() -> None:
    from sqlalchemy.exc import OperationalError

    calls = []

    def refused() -> None:
        calls.append(time.monotonic())
        raise optuna.exceptions.StorageInternalError("... e.g. exceeding max length") from (
            OperationalError("connect", {}, Exception("connection refused"))
        )

    outage = Outage(window_s=3, display="postgresql://me:***@db:5432/study")
    with pytest.raises(StorageLost, match=r"postgresql://me:\*\*\*@db:5432/study.*within 3 s"):
        outage.guard(refused)()
    assert len(calls) >= 2 and calls[-1] - calls[0] >= 2.5, "retried until the window ended"
    assert not is_outage(ValueError("a bug is no outage"))
