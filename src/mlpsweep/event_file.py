"""A TensorBoard events file for one long scalar series, written a chunk at a time.

torch's SummaryWriter hands every event to a writer thread, and TensorBoard's file layer
(without TensorFlow installed) opens, appends to and closes the events file for each one:
67 us an event measured on these machines, 26 of them in the kernel. A loss curve has a
point per epoch, and a batch of trials writes one per trial per epoch, so in the full map
that path cost more than the training of the small cells. This file keeps one buffered
handle and writes a whole chunk at once with TensorBoard's own record framing and protos
(13 us an event). TensorBoard reads every events file in a run's folder as that run, so
the series shows beside the logger's other scalars.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from itertools import count
from pathlib import Path
from typing import BinaryIO

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.record_writer import RecordWriter

# Two files opened in one second by one process still get different names.
_file_numbers = count()


class ScalarSeriesFile:
    """`events.out.tfevents.<time>.<host>.<pid>.<n>.<label>` in `log_dir`, opened on the first
    write. Each `write` ends with a flush, so a killed run keeps every chunk written."""

    def __init__(self, log_dir: str | Path, label: str) -> None:
        self.log_dir, self.label = Path(log_dir), label
        self.path: Path | None = None
        self.handle: BinaryIO | None = None
        self.records: RecordWriter | None = None

    def write(self, tag: str, values: Sequence[float], first_step: int) -> None:
        """`values` as the scalar `tag` at steps first_step, first_step + 1, ..."""
        if not values:
            return
        records = self.records or self.open()
        wall_time = time.time()
        for step, value in enumerate(values, start=first_step):
            point = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
            records.write(Event(wall_time=wall_time, step=step, summary=point).SerializeToString())
        assert self.handle is not None
        self.handle.flush()

    def open(self) -> RecordWriter:
        """The file: new, starting with the version record TensorBoard expects first, or
        the same file again (appended to) when written after `close`."""
        new = self.path is None
        if self.path is None:
            self.path = self.log_dir / (
                f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_file_numbers)}.{self.label}"
            )
        self.handle = open(self.path, "wb" if new else "ab")  # noqa: SIM115 - see close()
        self.records = RecordWriter(self.handle)
        if new:
            version = Event(wall_time=time.time(), file_version="brain.Event:2")
            self.records.write(version.SerializeToString())
        return self.records

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.handle = self.records = None
