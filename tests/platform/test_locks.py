"""The run lock: held by one process, named in the refusal, taken over after a SIGKILL.

Other processes hold the lock here: small Python children, not pipeline runs (the pipeline's
own two-run test is in tests/medallion/test_pipeline.py).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakehouse.platform import locks
from lakehouse.platform.locks import EXIT_BUSY, LockBusy, exclusive, lock_path, read_holder

HOLD = """
import sys, time
from pathlib import Path
from lakehouse.platform.locks import exclusive
with exclusive(Path(sys.argv[1]), "pipeline"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(home: Path, seconds: float) -> subprocess.Popen[str]:
    """A child process holding the pipeline lock of ``home`` for ``seconds`` (once it says so)."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(home), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    return child


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_second_holder_is_refused_with_the_first_ones_record(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    children.append(child := hold(tmp_path, 60))
    with pytest.raises(LockBusy) as refused, exclusive(tmp_path, "pipeline"):
        pass
    assert refused.value.exit_code == EXIT_BUSY == 75
    holder = refused.value.holder
    assert holder is not None and holder.pid == child.pid
    assert str(refused.value).startswith(f"another pipeline run holds {tmp_path}/locks/")
    assert f"pid {child.pid} on " in str(refused.value)


def test_waiting_gets_the_lock_when_the_holder_ends(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    children.append(hold(tmp_path, 1.5))
    with exclusive(tmp_path, "pipeline", wait=120, poll=0.1) as me:
        assert read_holder(tmp_path, "pipeline") == me
    assert read_holder(tmp_path, "pipeline") is None  # a clean end leaves no record


def test_waiting_gives_up_after_the_timeout(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    children.append(hold(tmp_path, 60))
    with (
        pytest.raises(LockBusy, match="after waiting 1s"),
        exclusive(tmp_path, "pipeline", wait=1.0, poll=0.1),
    ):
        pass


def test_the_lock_of_a_killed_holder_is_taken_over_and_said(
    tmp_path: Path, children: list[subprocess.Popen[str]], caplog: pytest.LogCaptureFixture
) -> None:
    children.append(child := hold(tmp_path, 60))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert read_holder(tmp_path, "pipeline").pid == child.pid  # type: ignore[union-attr]
    with (
        caplog.at_level(logging.WARNING, logger=locks.__name__),
        exclusive(tmp_path, "pipeline") as me,
    ):
        assert me.pid == os.getpid()
    taken = [r.getMessage() for r in caplog.records if "taking its lock over" in r.getMessage()]
    assert len(taken) == 1 and f"pid {child.pid} on " in taken[0]


def test_a_nested_acquire_in_the_same_process_is_not_refused(tmp_path: Path) -> None:
    """The demo holds the lock and runs the pipeline, which may take it again."""
    with exclusive(tmp_path, "pipeline") as outer, exclusive(tmp_path, "pipeline") as inner:
        assert inner.pid == outer.pid
        assert read_holder(tmp_path, "pipeline") == outer
    assert lock_path(tmp_path, "pipeline").exists()
    assert read_holder(tmp_path, "pipeline") is None
