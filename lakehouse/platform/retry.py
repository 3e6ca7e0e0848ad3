"""Retrying Delta writes that lost a race with another writer.

Delta commits optimistically: a transaction that finds, at commit time, that another writer
committed something it conflicts with (files it read, the table's metadata or protocol) raises
one of the conflict exceptions of :mod:`delta.exceptions` and writes no commit file. So a write
that failed with a conflict left nothing behind, and doing it again is safe when the write is
idempotent: a MERGE keyed on the table's business key, an overwrite, a create-if-missing, or an
append that is retried only after a conflict (which committed nothing). :func:`retry_on_conflict`
does that, with bounded exponential backoff and jitter, and logs one line per retry.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

# Importing delta.exceptions installs its translation of Delta's Java conflict exceptions into
# Python classes; without it they arrive as generic Py4J errors.
import delta.exceptions  # noqa: F401

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Class names of Delta's write-conflict exceptions (Java ``io.delta.exceptions.*`` and the
#: Python classes of :mod:`delta.exceptions` share them).
CONFLICT_CLASSES: frozenset[str] = frozenset(
    {
        "DeltaConcurrentModificationException",
        "ConcurrentWriteException",
        "ConcurrentAppendException",
        "ConcurrentDeleteReadException",
        "ConcurrentDeleteDeleteException",
        "ConcurrentTransactionException",
        "MetadataChangedException",
        "ProtocolChangedException",
    }
)

#: Error conditions (error classes) of the same conflicts; a sub-condition such as
#: ``DELTA_CONCURRENT_APPEND.WITH_PARTITION_HINT`` matches its parent.
CONFLICT_CONDITIONS: frozenset[str] = frozenset(
    {
        "DELTA_CONCURRENT_APPEND",
        "DELTA_CONCURRENT_DELETE_DELETE",
        "DELTA_CONCURRENT_DELETE_READ",
        "DELTA_CONCURRENT_TRANSACTION",
        "DELTA_CONCURRENT_WRITE",
        "DELTA_METADATA_CHANGED",
        "DELTA_PROTOCOL_CHANGED",
    }
)

#: Attempts in all (the first and the retries) before the conflict is raised.
MAX_ATTEMPTS = 8
#: Backoff before the first retry, in seconds; doubled for each later one, up to the cap.
BASE_DELAY = 0.25
MAX_DELAY = 8.0

_nesting = threading.local()


def _condition(exc: BaseException) -> str | None:
    for getter in ("getCondition", "getErrorClass"):
        method = getattr(exc, getter, None)
        if callable(method):
            try:
                value = method()
            except Exception:  # a Py4J error whose JVM side is gone
                value = None
            if isinstance(value, str) and value:
                return value
    return None


def conflict_class(exc: BaseException) -> str | None:
    """The name of the Delta conflict ``exc`` is (or was caused by); None when it is none.

    Looks at the Python class, the error condition and the Java exception's text, along the
    chain of causes, so a conflict wrapped by Spark or raised without Delta's translation (a
    raw ``Py4JJavaError``) is still recognized.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for cls in type(current).__mro__:
            if cls.__name__ in CONFLICT_CLASSES:
                return cls.__name__
        condition = _condition(current)
        if condition and condition.split(".")[0] in CONFLICT_CONDITIONS:
            return condition.split(".")[0]
        java = getattr(current, "java_exception", None)
        text = str(java) if java is not None else ""
        for name in CONFLICT_CLASSES:
            if f"io.delta.exceptions.{name}" in text:
                return name
        current = current.__cause__ or current.__context__
    return None


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): full jitter, capped."""
    ceiling = min(MAX_DELAY, BASE_DELAY * 2 ** (attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


def retry_on_conflict(
    table: str,
    write: Callable[[], T],
    *,
    attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """``write()``, again after a Delta write conflict, up to ``attempts`` times in all.

    Only for idempotent writes: each attempt must do the whole write (read the table again,
    recompute what it writes from it). Any other error is raised at once, and so is the last
    conflict. Each retry is logged in one line: the table, the attempt and the exception class.

    Calls nest: inside another :func:`retry_on_conflict` a write runs once and its conflict goes
    to the outer one, which redoes the larger unit, so the attempts stay bounded.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    if getattr(_nesting, "depth", 0):
        return write()
    _nesting.depth = 1
    try:
        for attempt in range(1, attempts + 1):
            try:
                return write()
            except Exception as exc:
                name = conflict_class(exc)
                if name is None or attempt == attempts:
                    if name is not None:
                        log.warning(
                            "%s: Delta write conflict %s persisted after %d attempts",
                            table,
                            name,
                            attempts,
                        )
                    raise
                delay = backoff(attempt, rng)
                log.info(
                    "%s: attempt %d of %d hit %s; retrying in %.2fs",
                    table,
                    attempt,
                    attempts,
                    name,
                    delay,
                )
                sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        _nesting.depth = 0
