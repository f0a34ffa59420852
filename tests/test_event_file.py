"""The loss curve's own events file: TensorBoard reads it as the run's, chunk after chunk."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlpsweep.event_file import ScalarSeriesFile


def test_chunks_written_before_and_after_a_close_read_back_as_one_series(tmp_path) -> None:
    series = ScalarSeriesFile(tmp_path, "train_loss")
    series.write("train/loss", [0.5, 0.25], first_step=1)
    series.write("train/loss", [], first_step=3)  # an empty chunk writes nothing
    series.close()
    series.write("train/loss", [0.125], first_step=3)  # appended to the same file
    series.close()
    files = list(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 1 and files[0].name.endswith(".train_loss")
    points = EventAccumulator(str(tmp_path)).Reload().Scalars("train/loss")
    assert [(point.step, point.value) for point in points] == [
        (1, 0.5), (2, 0.25), (3, 0.125)
    ]


def test_nothing_is_created_until_the_first_point(tmp_path) -> None:
    series = ScalarSeriesFile(tmp_path, "train_loss")
    series.write("train/loss", [], first_step=1)
    series.close()
    assert list(tmp_path.iterdir()) == []


def test_each_chunk_is_on_disk_when_write_returns(tmp_path) -> None:
    series = ScalarSeriesFile(tmp_path, "train_loss")
    series.write("train/loss", [0.5], first_step=1)
    # still open: a run killed now keeps the chunk
    points = EventAccumulator(str(tmp_path)).Reload().Scalars("train/loss")
    assert [point.value for point in points] == pytest.approx([0.5])
    series.close()
