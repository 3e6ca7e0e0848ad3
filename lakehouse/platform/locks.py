"""Exclusive runs: a lock file under the state folder that dies with the process holding it.

The lock is an ``fcntl`` lock on ``<home>/locks/<name>.lock``: the kernel releases it when the
process ends in any way, SIGKILL included, so a killed run never leaves a lock that blocks the
next one. The holder writes its pid, host, command and start time into the file, to name itself
in the message of a run that finds the lock taken, and clears them when it ends cleanly; a run
that acquires the lock and finds them still there knows its predecessor was killed and says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

#: Exit status of a run that found the lock taken: ``EX_TEMPFAIL`` of sysexits.h, "try again".
EXIT_BUSY = 75

_held: set[str] = set()  # lock files this process holds (a nested acquire is a no-op)
_held_guard = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lock."""

    pid: int
    host: str
    command: str
    started: str  # ISO-8601, UTC

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started} ({self.command})"

    @classmethod
    def me(cls) -> Holder:
        """This process."""
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            command=command[:200],
            started=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )


class LockBusy(RuntimeError):
    """Another process holds the lock. ``exit_code`` is :data:`EXIT_BUSY`."""

    exit_code = EXIT_BUSY

    def __init__(self, name: str, path: Path, holder: Holder | None, waited: float) -> None:
        who = str(holder) if holder else "a process that has not recorded itself yet"
        waited_text = f" after waiting {waited:.0f}s" if waited >= 1 else ""
        super().__init__(f"another {name} run holds {path}{waited_text}: {who}")
        self.name = name
        self.path = path
        self.holder = holder


def lock_path(home: Path, name: str) -> Path:
    """The lock file of ``name`` under ``home``."""
    return home / "locks" / f"{name}.lock"


def _read_holder(fd: int) -> Holder | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace").strip()
        return Holder(**json.loads(text)) if text else None
    except (OSError, ValueError, TypeError):
        return None


def _write_holder(fd: int, holder: Holder | None) -> None:
    os.ftruncate(fd, 0)
    if holder is not None:
        os.pwrite(fd, json.dumps(asdict(holder)).encode(), 0)
    os.fsync(fd)


def read_holder(home: Path, name: str) -> Holder | None:
    """The holder recorded in the lock file of ``name`` (None: none recorded, or no file)."""
    path = lock_path(home, name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _read_holder(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(home: Path, name: str, wait: float = 0.0, poll: float = 0.5) -> Iterator[Holder]:
    """Hold the lock ``name`` under ``home`` while the block runs; yield this process's record.

    Args:
        wait: seconds to wait for a running holder to finish; 0 gives up at once.
        poll: seconds between attempts while waiting.

    Raises:
        LockBusy: another process still holds the lock after ``wait`` seconds.
    """
    path = lock_path(home, name)
    key = str(path.resolve())
    with _held_guard:
        nested = key in _held
    if nested:  # this process holds it already (a run inside a run, e.g. the demo's pipeline)
        yield Holder.me()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= wait:
                    raise LockBusy(name, path, _read_holder(fd), waited) from None
                time.sleep(min(poll, max(0.01, wait - waited)))
        previous = _read_holder(fd)
        if previous is not None:
            log.warning(
                "%s: the last run (%s) did not finish; taking its lock over", name, previous
            )
        me = Holder.me()
        _write_holder(fd, me)
        with _held_guard:
            _held.add(key)
        try:
            yield me
        finally:
            with _held_guard:
                _held.discard(key)
            _write_holder(fd, None)  # a clean end: the next run finds no record
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
