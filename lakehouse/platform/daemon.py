"""Background servers of a state folder: their lock, pid record, log, ports, start and stop.

``lakehouse connect``, ``lakehouse sql-server`` and ``lakehouse cluster`` each run JVMs that
outlive the command that started them. They share the parts here:

* :func:`acquire` / :func:`lock_free`: an ``fcntl`` lock on ``<home>/locks/<name>.lock`` that
  the command takes and hands to the server processes it starts (:func:`spawn` with
  ``pass_fds``). The kernel releases it when the last of them ends in any way, SIGKILL
  included, so "the lock is held" is "a server of this state folder is running", with no stale
  pid to misread, and a second start knows at once that it must give way (exit
  :data:`~lakehouse.platform.locks.EXIT_BUSY`). The SQL endpoint, which also runs in the
  foreground as a container's main process, tells a live server by its recorded pid instead;
* :func:`read_record` / :func:`write_record` / :func:`clear_record`: the pid file, a JSON object
  of a frozen dataclass (pid, address, start time, log), for ``status``, ``stop`` and the
  message of a second ``start``;
* :func:`new_log`: the processes' output under ``<home>/logs/``;
* :func:`port_free` / :func:`port_answers` / :func:`wait_ready`: a port checked before the
  start, then waited for;
* :func:`stop_process`: SIGTERM, a wait, SIGKILL.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from lakehouse.platform.locks import lock_path

#: Exit status of ``status`` when no server runs (the LSB init-script convention).
EXIT_NOT_RUNNING = 3

#: Addresses a server binds to that a client on this machine reaches through loopback.
_ANY = ("0.0.0.0", "::", "")

R = TypeVar("R")


class DaemonError(RuntimeError):
    """A server could not be started or stopped; the message says why in one line."""

    exit_code = 1


class ProcessExited(DaemonError):
    """A server process ended while it was waited for; ``code`` is its exit status."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exited with code {code}")
        self.code = code


# Addresses and ports ---------------------------------------------------------------------
def client_host(host: str) -> str:
    """The address a client on this machine uses for a server bound to ``host``."""
    return "127.0.0.1" if host in _ANY else host


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host``:``port``."""
    try:
        with socket.create_connection((client_host(host), port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    """Whether a server could bind ``host``:``port`` now (nothing listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# The lock the servers inherit ------------------------------------------------------------
def acquire(home: Path, name: str) -> int | None:
    """An open descriptor holding the lock ``name`` of ``home``, or None: another process holds it.

    The caller passes the descriptor to the server processes it starts (``pass_fds``) and then
    closes its own copy: the lock lives exactly as long as the last of them.
    """
    path = lock_path(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_free(home: Path, name: str) -> bool:
    """Whether no process holds the lock ``name`` of ``home`` (no server of it runs)."""
    path = lock_path(home, name)
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


# The pid record --------------------------------------------------------------------------
def read_record(path: Path, kind: Callable[..., R]) -> R | None:
    """The record in ``path`` as ``kind`` (a dataclass), or None: no file, or one unreadable."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            return None
        return kind(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_record(path: Path, record: Any) -> None:
    """Write ``record`` (a dataclass) to ``path`` as JSON: beside it first, then renamed into
    place, so a reader never sees half a record."""
    if not is_dataclass(record) or isinstance(record, type):
        raise TypeError(f"not a dataclass instance: {record!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)) + "\n")
    os.replace(tmp, path)


def clear_record(path: Path, pid: int | None = None) -> None:
    """Remove the record (only if it still names ``pid``, when given)."""
    if pid is not None:
        try:
            if json.loads(path.read_text()).get("pid") != pid:
                return
        except (OSError, ValueError, AttributeError):
            pass
    path.unlink(missing_ok=True)


# Logs and processes ----------------------------------------------------------------------
def new_log(home: Path, name: str, stamp: str | None = None) -> Path:
    """``<home>/logs/<name>-<stamp>.log`` (``stamp``: now, to the second), its folder made."""
    folder = home / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-{stamp or time.strftime('%Y%m%d-%H%M%S')}.log"


def spawn(
    command: Sequence[str],
    log: Path,
    env: Mapping[str, str],
    cwd: Path,
    pass_fds: Sequence[int] = (),
    banner: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` detached from this process, its output appended to ``log``.

    A session of its own (``start_new_session``): the server outlives the command, and Ctrl-C
    in the shell that ran it does not reach the server. ``pass_fds`` keeps the descriptors of
    :func:`acquire` open in it; ``banner``, when given, is written to the log first.
    """
    with open(log, "ab") as out:
        if banner is not None:
            out.write(banner.encode())
            out.flush()
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )


def wait_ready(
    process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float, poll: float
) -> bool:
    """Wait until ``ready()``; False when ``timeout`` seconds passed first.

    Raises:
        ProcessExited: ``process`` ended before it was ready.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ProcessExited(code)
        if ready():
            return True
        time.sleep(poll)
    return False


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a child of this process is reaped once it has exited)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not this process's child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path("/proc") / str(pid) / "stat"
    try:
        return stat.read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def stop_process(
    pid: int,
    timeout: float,
    ended: Callable[[], bool] | None = None,
    kill_wait: float = 30.0,
) -> bool:
    """SIGTERM ``pid`` and wait until ``ended()`` (default: the process is gone); SIGKILL it
    after ``timeout`` seconds. False when it had not ended ``kill_wait`` seconds after SIGKILL.
    """
    done = ended or (lambda: not alive(pid))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_until(done, timeout):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return wait_until(done, kill_wait)


def wait_until(done: Callable[[], bool], timeout: float, poll: float = 0.2) -> bool:
    """Wait until ``done()``; False when ``timeout`` seconds passed first."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True
