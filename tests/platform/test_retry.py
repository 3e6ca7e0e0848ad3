"""Retrying Delta write conflicts: which errors are conflicts, the bounded backoff, the log line.

The conflict a real Delta commit raises is made in tests/platform/test_conflicts.py; here the
exception classes of ``delta.exceptions`` are raised by hand, without a JVM.
"""

from __future__ import annotations

import logging
import random

import pytest
from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    MetadataChangedException,
    ProtocolChangedException,
)
from pyspark.errors import AnalysisException, PySparkException

from lakehouse.platform import retry
from lakehouse.platform.retry import backoff, conflict_class, retry_on_conflict

CONFLICTS = [
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    MetadataChangedException,
    ProtocolChangedException,
]


class Flaky:
    """A write that fails with ``errors`` in turn, then returns how many calls it took."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.calls


@pytest.mark.parametrize("cls", CONFLICTS)
def test_every_delta_conflict_class_is_a_conflict(cls: type[PySparkException]) -> None:
    assert conflict_class(cls("lost the race")) == cls.__name__


class WrappedSparkError(PySparkException):
    """A Spark error that carries a Delta conflict only in its condition (as JVM errors do)."""

    def getCondition(self) -> str:
        return "DELTA_CONCURRENT_APPEND.WITH_PARTITION_HINT"


def test_a_conflict_is_found_by_its_condition_or_as_a_cause() -> None:
    assert conflict_class(WrappedSparkError("files were added")) == "DELTA_CONCURRENT_APPEND"
    try:
        try:
            raise ConcurrentAppendException("files were added")
        except ConcurrentAppendException as inner:
            raise RuntimeError("micro-batch failed") from inner
    except RuntimeError as outer:
        assert conflict_class(outer) == "ConcurrentAppendException"


@pytest.mark.parametrize(
    "exc",
    [ValueError("bad"), AnalysisException("no such table"), RuntimeError("disk full")],
)
def test_other_errors_are_not_conflicts(exc: Exception) -> None:
    assert conflict_class(exc) is None


def test_a_conflict_is_retried_with_growing_pauses_and_one_log_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    write = Flaky(ConcurrentAppendException("a"), MetadataChangedException("b"))
    pauses: list[float] = []
    with caplog.at_level(logging.INFO, logger=retry.__name__):
        calls = retry_on_conflict(
            "gold.predictions", write, sleep=pauses.append, rng=random.Random(1)
        )
    assert calls == 3
    lines = [r.getMessage() for r in caplog.records if r.name == retry.__name__]
    assert len(lines) == 2 and len(pauses) == 2
    assert lines[0].startswith("gold.predictions: attempt 1 of 8 hit ConcurrentAppendException")
    assert lines[1].startswith("gold.predictions: attempt 2 of 8 hit MetadataChangedException")
    assert retry.BASE_DELAY / 2 <= pauses[0] <= retry.BASE_DELAY
    assert retry.BASE_DELAY <= pauses[1] <= 2 * retry.BASE_DELAY


def test_the_last_conflict_is_raised_after_the_bounded_attempts() -> None:
    write = Flaky(*[ConcurrentWriteException(str(i)) for i in range(5)])
    pauses: list[float] = []
    with pytest.raises(ConcurrentWriteException, match="2"):
        retry_on_conflict("silver.customers", write, attempts=3, sleep=pauses.append)
    assert write.calls == 3 and len(pauses) == 2


def test_any_other_error_is_raised_at_once() -> None:
    write = Flaky(ValueError("not a conflict"))
    with pytest.raises(ValueError, match="not a conflict"):
        retry_on_conflict("silver.customers", write, sleep=lambda s: None)
    assert write.calls == 1


def test_a_nested_write_runs_once_and_the_outer_one_retries() -> None:
    inner = Flaky(ConcurrentAppendException("inner"))
    outer_calls = []

    def outer() -> int:
        outer_calls.append(1)
        return retry_on_conflict("inner", inner, sleep=lambda s: None)

    assert retry_on_conflict("outer", outer, sleep=lambda s: None) == 2
    assert len(outer_calls) == 2 and inner.calls == 2


def test_backoff_is_capped() -> None:
    rng = random.Random(7)
    assert all(backoff(n, rng) <= retry.MAX_DELAY for n in range(1, 40))
    assert backoff(30, rng) >= retry.MAX_DELAY / 2


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        retry_on_conflict("t", lambda: 1, attempts=0)
