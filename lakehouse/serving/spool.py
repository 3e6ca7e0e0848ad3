"""The inference log spool: one JSON line per answered request, written before the answer.

The serving process has no JVM, so it cannot append to Delta itself. It appends each record to
a local file instead, and the platform's incremental ingest takes sealed files into
``gold.inference_log``:

* a record is one line, written by one ``os.write`` on a file opened with ``O_APPEND``, so once
  the call returns the line is in the operating system's page cache: a server killed with
  SIGKILL afterwards loses nothing, and a line is never interleaved with another;
* lines go to ``<landing>/inference_log/_open/<pid>-<seq>.jsonl`` while the file is written;
  Spark skips folders whose name starts with ``_``, so an open file is never read half-written;
* a file is sealed by an atomic rename to ``<landing>/inference_log/<endpoint>-<pid>-<seq>-
  <epoch_ms>.jsonl`` after :data:`ROLL_SECONDS_ENV` seconds (default 5) or
  :data:`MAX_LINES` lines, and at shutdown; :func:`seal_orphans` seals the open files of
  writers that died (``any`` in place of the endpoint, which only the writer knew).

Fields of a record (:data:`RECORD_FIELDS`): ``databricks_request_id``, ``client_request_id``,
``date``, ``timestamp_ms``, ``status_code``, ``execution_duration_ms``, ``request``,
``response``, ``endpoint_name``, ``served_entity_name``, ``model_name``, ``model_version``,
``route``, ``sampling_fraction``, ``logging_error_codes``.

``LAKEHOUSE_SERVING_INFERENCE_LOG=off`` (:func:`inference_log_enabled`) turns the spool off: the
server then answers without writing any record (to measure what logging costs, or where no
inference table is wanted).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: The landing sub-folder of the inference log (``landing/inference_log``).
SPOOL_ENTITY = "inference_log"
#: Sub-folder of the files still being written (skipped by Spark's file sources).
OPEN_DIR = "_open"
#: Seconds after which an open file is sealed; read from the environment when unset.
ROLL_SECONDS_ENV = "LAKEHOUSE_SERVING_SPOOL_ROLL_SECONDS"
DEFAULT_ROLL_SECONDS = 5.0
#: ``on`` (the default) or ``off``: whether the server spools a record of each request.
INFERENCE_LOG_ENV = "LAKEHOUSE_SERVING_INFERENCE_LOG"
#: Lines after which an open file is sealed.
MAX_LINES = 10_000
#: The endpoint part of the name of a file sealed by :func:`seal_orphans`.
ANY_ENDPOINT = "any"

RECORD_FIELDS: tuple[str, ...] = (
    "databricks_request_id",
    "client_request_id",
    "date",
    "timestamp_ms",
    "status_code",
    "execution_duration_ms",
    "request",
    "response",
    "endpoint_name",
    "served_entity_name",
    "model_name",
    "model_version",
    "route",
    "sampling_fraction",
    "logging_error_codes",
)

_sequence = itertools.count(1)
_sequence_lock = threading.Lock()


def spool_dir(landing_dir: Path) -> Path:
    """``<landing>/inference_log``: the sealed files."""
    return Path(landing_dir) / SPOOL_ENTITY


def roll_seconds(env: Mapping[str, str] | None = None) -> float:
    """Seconds an open file stays open (:data:`ROLL_SECONDS_ENV`, default 5)."""
    env = os.environ if env is None else env
    raw = env.get(ROLL_SECONDS_ENV)
    if not raw:
        return DEFAULT_ROLL_SECONDS
    value = float(raw)
    if not value > 0:
        raise ValueError(f"{ROLL_SECONDS_ENV} must be > 0, got {raw!r}")
    return value


def inference_log_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether requests are spooled: :data:`INFERENCE_LOG_ENV` is ``on`` (default) or ``off``.

    Raises:
        ValueError: any other value.
    """
    env = os.environ if env is None else env
    raw = env.get(INFERENCE_LOG_ENV, "")
    value = raw.strip().lower()
    if value in ("", "on", "true", "1"):
        return True
    if value in ("off", "false", "0"):
        return False
    raise ValueError(f"{INFERENCE_LOG_ENV} must be on or off, got {raw!r}")


def record(
    *,
    request_id: str,
    client_request_id: str | None,
    timestamp_ms: int,
    status_code: int,
    execution_duration_ms: float,
    request: str,
    response: str,
    endpoint_name: str,
    served_entity_name: str | None,
    model_name: str | None,
    model_version: int | None,
    route: str = "primary",
    logging_error_codes: list[str] | None = None,
) -> dict[str, Any]:
    """One spool record (the fields of :data:`RECORD_FIELDS`, in that order)."""
    date = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    return {
        "databricks_request_id": request_id,
        "client_request_id": client_request_id,
        "date": date,
        "timestamp_ms": int(timestamp_ms),
        "status_code": int(status_code),
        "execution_duration_ms": float(execution_duration_ms),
        "request": request,
        "response": response,
        "endpoint_name": endpoint_name,
        "served_entity_name": served_entity_name,
        "model_name": model_name,
        "model_version": model_version,
        "route": route,
        "sampling_fraction": 1.0,
        "logging_error_codes": list(logging_error_codes or []),
    }


def _sealed_name(endpoint: str, open_name: str) -> str:
    return f"{endpoint}-{Path(open_name).stem}-{int(time.time() * 1000)}.jsonl"


class SpoolWriter:
    """Appends the records of one endpoint to its open file and seals it in turn.

    Not thread-safe: the server calls it from its event loop only.
    """

    def __init__(self, landing_dir: Path, endpoint: str, roll_after: float | None = None) -> None:
        """Spool ``endpoint``'s records under ``landing_dir``; seal every ``roll_after`` s."""
        self.endpoint = endpoint
        self.sealed_dir = spool_dir(landing_dir)
        self.open_dir = self.sealed_dir / OPEN_DIR
        self.roll_after = roll_seconds() if roll_after is None else roll_after
        self._fd: int | None = None
        self._path: Path | None = None
        self._lines = 0
        self._opened_at = 0.0

    def _open(self) -> int:
        self.open_dir.mkdir(parents=True, exist_ok=True)
        with _sequence_lock:
            seq = next(_sequence)
        self._path = self.open_dir / f"{os.getpid()}-{seq}.jsonl"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lines = 0
        self._opened_at = time.monotonic()
        return self._fd

    def write(self, rec: Mapping[str, Any]) -> None:
        """Append one record as one line (one ``os.write``); seal the file when it is full."""
        line = (json.dumps(rec, separators=(",", ":"), allow_nan=False) + "\n").encode()
        fd = self._fd if self._fd is not None else self._open()
        written = os.write(fd, line)
        while written < len(line):  # a regular file takes it whole; a full disk raises
            written += os.write(fd, line[written:])
        self._lines += 1
        if self._lines >= MAX_LINES:
            self.seal()

    def due(self) -> bool:
        """Whether the open file has been open for ``roll_after`` seconds."""
        return self._fd is not None and time.monotonic() - self._opened_at >= self.roll_after

    def seal(self) -> Path | None:
        """Close the open file and rename it into the sealed folder; the new path, if any."""
        if self._fd is None or self._path is None:
            return None
        os.close(self._fd)
        self._fd = None
        target = self.sealed_dir / _sealed_name(self.endpoint, self._path.name)
        os.replace(self._path, target)
        self._path = None
        return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def seal_orphans(landing_dir: Path) -> list[Path]:
    """Seal the open files whose writer process is gone; the sealed paths.

    Files of live writers (this process included) are left open. A file whose name does not
    start with a pid is left alone.
    """
    open_dir = spool_dir(landing_dir) / OPEN_DIR
    sealed: list[Path] = []
    if not open_dir.is_dir():
        return sealed
    for path in sorted(open_dir.glob("*.jsonl")):
        pid_text = path.name.split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if path.stat().st_size == 0:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        target = path.parent.parent / _sealed_name(ANY_ENDPOINT, path.name)
        try:
            os.replace(path, target)
        except FileNotFoundError:  # sealed by another process meanwhile
            continue
        sealed.append(target)
    return sealed
