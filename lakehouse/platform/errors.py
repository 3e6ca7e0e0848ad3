"""Errors a person can read: one line saying what failed, the full story in the log file.

:func:`one_line` renders an exception as one line: what was being done, on which table or
file, and for a Spark error its error class (condition) and SQLSTATE, without Java frames.
:func:`report` logs the traceback (to the command's log file, see :mod:`lakehouse.platform.logs`)
and prints that line with the log file's name; :func:`exit_code` picks the exit status.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from lakehouse.platform import logs

log = logging.getLogger(__name__)

#: Exit status of a failed run (other statuses: 2 usage or set-up, 3 a failed expectation or
#: gate, 75 another run holds the lock, 78 the state folder was moved, 130 interrupted).
EXIT_FAILURE = 1
#: Longest message kept in the one line (Spark's messages can run to kilobytes).
MAX_MESSAGE = 400

_TARGET_ATTR = "lakehouse_target"
_SQLSTATE_SUFFIX = re.compile(r"\s*SQLSTATE:\s*\w+\.?\s*$")
_CONDITION_PREFIX = re.compile(r"^\[[A-Z0-9_.]+\]\s*")


def annotate(exc: BaseException, target: str) -> None:
    """Record on ``exc`` the table or file it happened on (the innermost record wins)."""
    if not getattr(exc, _TARGET_ATTR, None):
        with contextlib.suppress(AttributeError):  # an exception type without a __dict__
            setattr(exc, _TARGET_ATTR, target)


@contextmanager
def on_target(target: str) -> Iterator[None]:
    """Annotate an exception raised in the block with ``target`` (see :func:`annotate`)."""
    try:
        yield
    except BaseException as exc:
        annotate(exc, target)
        raise


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _spark_fields(exc: BaseException) -> tuple[str | None, str | None]:
    """The error condition and SQLSTATE of a PySpark exception (None when it has none)."""
    condition = state = None
    for getter in ("getCondition", "getErrorClass"):
        method = getattr(exc, getter, None)
        if callable(method) and condition is None:
            try:
                value = method()
            except Exception:
                value = None
            condition = value if isinstance(value, str) and value else None
    method = getattr(exc, "getSqlState", None)
    if callable(method):
        try:
            value = method()
        except Exception:
            value = None
        state = value if isinstance(value, str) and value else None
    return condition, state


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        line = line.strip()
        if line:
            return line
    return ""


def _message(exc: BaseException) -> str:
    text = _first_line(str(exc))
    text = _CONDITION_PREFIX.sub("", text)
    text = _SQLSTATE_SUFFIX.sub("", text).rstrip(". ")
    # A Py4J error's text starts with "An error occurred while calling o123.save.": the Java
    # exception's first line is what says something.
    java = getattr(exc, "java_exception", None)
    if text.startswith("An error occurred while calling") and java is not None:
        text = _first_line(str(java.toString()))
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    return text or type(exc).__name__


def one_line(exc: BaseException, what: str | None = None) -> str:
    """``exc`` in one line: ``<what> failed: <target>: <message> [<condition>, SQLSTATE <s>]``.

    The message is the most specific one along the chain of causes: the innermost Spark error
    with a condition, else the exception itself. ``what`` names the command or step.
    """
    chain = list(_chain(exc))
    spark_errors = [e for e in chain if _spark_fields(e)[0] is not None]
    chosen = spark_errors[-1] if spark_errors else exc
    condition, state = _spark_fields(chosen)
    target = next((getattr(e, _TARGET_ATTR) for e in chain if getattr(e, _TARGET_ATTR, None)), None)
    parts = []
    if what:
        parts.append(f"{what} failed")
    if target:
        parts.append(str(target))
    message = _message(chosen)
    module = type(chosen).__module__
    if not spark_errors and module != "builtins" and not module.startswith("lakehouse"):
        message = f"{type(chosen).__name__}: {message}"  # a library's error: say whose
    parts.append(message)
    line = ": ".join(parts)
    tags = [t for t in (condition, f"SQLSTATE {state}" if state else None) if t]
    return f"{line} [{', '.join(tags)}]" if tags else line


def exit_code(exc: BaseException) -> int:
    """The exit status for ``exc``: its ``exit_code`` attribute if it has one, else 1."""
    code = getattr(exc, "exit_code", None)
    return code if isinstance(code, int) and not isinstance(code, bool) else EXIT_FAILURE


def report(exc: BaseException, what: str) -> int:
    """Log ``exc`` with its traceback, print its one line (and the log file); return the status.

    The traceback goes to the log file, and to the terminal only with ``--verbose``; the line
    printed names the log file that holds it.
    """
    line = one_line(exc, what)
    setup = logs.current()
    # The terminal gets the line printed below; the record (with its traceback) goes there too
    # only when verbose.
    log.error("%s", line, exc_info=exc, extra={logs.TERMINAL_ATTR: setup.verbose})
    suffix = f" (details: {setup.file})" if setup.file is not None and setup.file.exists() else ""
    sys.stderr.write(f"error: {line}{suffix}\n")
    sys.stderr.flush()
    return exit_code(exc)


def guarded(what: str, body: Callable[[], int]) -> int:
    """``body()``'s exit status; an error it raises is :func:`report`-ed (Ctrl-C: 130).

    The shape of every job's ``main``: one line per error on the terminal, never a traceback
    unless ``--verbose``.
    """
    try:
        return body()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:
        return report(exc, what)
