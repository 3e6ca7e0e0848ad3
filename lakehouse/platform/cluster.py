"""A Spark standalone cluster on this machine: a master and workers, started natively.

``lakehouse cluster start`` runs :data:`MASTER_CLASS` and :data:`WORKER_CLASS` through
``spark-class`` of the Spark this Python runs (pyspark's own), in the background, and returns
once the master lists every worker ALIVE. Any job of the platform then runs on it as a cluster
application, its executors on the workers, with only the master URL changed::

    LAKEHOUSE_SPARK_MASTER=spark://127.0.0.1:7077 lakehouse pipeline run
    spark-submit --master spark://127.0.0.1:7077 jobs/<job>.py

Under the state folder, as for the other background servers (:mod:`lakehouse.platform.daemon`):

* ``locks/cluster.lock``, inherited by the master and every worker: held while any of them
  runs, so a second ``start`` exits 75 and a cluster whose processes all died leaves nothing
  to clean up;
* ``run/cluster.pid``: the master's pid and ports, each worker's pid, RPC port, folder and log;
* ``cluster/worker-<n>/``: each worker's ``SPARK_WORKER_DIR``, one folder per application with
  its executors' output;
* ``logs/cluster-<time>-master.log`` and ``logs/cluster-<time>-worker-<n>.log``.

What the cluster is doing (workers, their cores and memory, applications) comes from the
master's own JSON at ``http://<host>:<webui-port>/json/``, read by :func:`master_state`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakehouse.platform import daemon
from lakehouse.platform.jars import spark_jars_dir
from lakehouse.platform.locks import EXIT_BUSY
from lakehouse.platform.settings import Settings

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
LOCK_NAME = "cluster"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7077
DEFAULT_WEBUI_PORT = 8080
DEFAULT_WORKERS = 2
DEFAULT_CORES = 1
DEFAULT_MEMORY = "1g"
#: A worker's memory as Spark reads it: a whole number with a unit (a bare number is bytes).
MEMORY_PATTERN = re.compile(r"^[1-9][0-9]*[mgtMGT]$")


class ClusterError(daemon.DaemonError):
    """The cluster could not be started, stopped or read; the message says why in one line."""

    exit_code = 1


class ClusterBusy(ClusterError):
    """A cluster of this state folder runs already. ``exit_code`` is :data:`EXIT_BUSY`."""

    exit_code = EXIT_BUSY


@dataclass(frozen=True)
class WorkerProcess:
    """One worker as ``run/cluster.pid`` records it."""

    pid: int
    port: int  # its RPC port: the master lists the worker under it
    cores: int
    memory: str
    folder: str  # SPARK_WORKER_DIR
    log: str


@dataclass(frozen=True)
class ClusterInfo:
    """What ``run/cluster.pid`` records of a running cluster; ``pid`` is the master's."""

    pid: int
    host: str
    port: int
    webui_port: int
    started: float  # seconds since the epoch
    log: str
    workers: tuple[WorkerProcess, ...] = ()

    @classmethod
    def from_json(cls, **data: Any) -> ClusterInfo:
        """The record from its JSON object (workers as objects)."""
        workers = tuple(WorkerProcess(**w) for w in data.pop("workers", ()))
        return cls(**data, workers=workers)

    @property
    def url(self) -> str:
        """The master URL a driver on this machine uses."""
        return master_url(self.host, self.port)

    @property
    def webui(self) -> str:
        """The master's web UI (its JSON at ``<webui>/json/``)."""
        return f"http://{daemon.client_host(self.host)}:{self.webui_port}"

    def uptime(self, now: float | None = None) -> float:
        """Seconds since the cluster was started."""
        return max(0.0, (now if now is not None else time.time()) - self.started)

    def worker_on(self, port: int) -> WorkerProcess | None:
        """The recorded worker whose RPC port is ``port``."""
        return next((w for w in self.workers if w.port == port), None)


@dataclass(frozen=True)
class WorkerState:
    """A worker as the master sees it."""

    id: str
    host: str
    port: int
    state: str  # ALIVE, DEAD, DECOMMISSIONED, UNKNOWN
    cores: int
    cores_used: int
    memory_mb: int
    memory_used_mb: int


@dataclass(frozen=True)
class AppState:
    """An application as the master sees it."""

    id: str
    name: str
    state: str  # WAITING, RUNNING, FINISHED, KILLED, FAILED
    cores: int
    memory_per_executor_mb: int
    duration_ms: int


@dataclass(frozen=True)
class MasterState:
    """The master's view of the cluster: its ``/json/`` page."""

    url: str
    status: str
    workers: tuple[WorkerState, ...]
    active_apps: tuple[AppState, ...]
    completed_apps: tuple[AppState, ...]

    @property
    def alive_workers(self) -> tuple[WorkerState, ...]:
        """The workers the master can schedule executors on."""
        return tuple(w for w in self.workers if w.state == "ALIVE")


def master_url(host: str, port: int) -> str:
    """``spark://host:port`` for a driver on this machine."""
    return f"spark://{daemon.client_host(host)}:{port}"


def parse_master_json(data: Mapping[str, Any]) -> MasterState:
    """The master's ``/json/`` object as a :class:`MasterState`."""

    def app(a: Mapping[str, Any]) -> AppState:
        memory = a.get("memoryperexecutor", a.get("memoryperslave", 0))
        return AppState(
            id=str(a.get("id", "")),
            name=str(a.get("name", "")),
            state=str(a.get("state", "")),
            cores=int(a.get("cores", 0)),
            memory_per_executor_mb=int(memory),
            duration_ms=int(a.get("duration", 0)),
        )

    workers = tuple(
        WorkerState(
            id=str(w.get("id", "")),
            host=str(w.get("host", "")),
            port=int(w.get("port", 0)),
            state=str(w.get("state", "")),
            cores=int(w.get("cores", 0)),
            cores_used=int(w.get("coresused", 0)),
            memory_mb=int(w.get("memory", 0)),
            memory_used_mb=int(w.get("memoryused", 0)),
        )
        for w in data.get("workers", ())
    )
    return MasterState(
        url=str(data.get("url", "")),
        status=str(data.get("status", "")),
        workers=workers,
        active_apps=tuple(app(a) for a in data.get("activeapps", ())),
        completed_apps=tuple(app(a) for a in data.get("completedapps", ())),
    )


def master_state(webui: str, timeout: float = 5.0) -> MasterState | None:
    """The master's state read from ``<webui>/json/``; None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{webui}/json/", timeout=timeout) as response:
            data = json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return parse_master_json(data) if isinstance(data, dict) else None


def pid_path(settings: Settings) -> Path:
    """``<home>/run/cluster.pid``."""
    return settings.home / "run" / "cluster.pid"


def cluster_dir(settings: Settings) -> Path:
    """``<home>/cluster``: the workers' folders; the processes' working directory."""
    return settings.home / "cluster"


def spark_class() -> Path:
    """``spark-class`` of the Spark this Python runs (``$SPARK_HOME``, else pyspark's)."""
    return spark_jars_dir().parent / "bin" / "spark-class"


def read_info(settings: Settings) -> ClusterInfo | None:
    """The recorded cluster, or None (no file, or one that cannot be read)."""
    return daemon.read_record(pid_path(settings), ClusterInfo.from_json)


def running(settings: Settings) -> ClusterInfo | None:
    """The running cluster of this state folder, or None; a stale pid file is removed.

    A cluster still starting (the lock held, the record not written yet) is a record with pid 0.
    """
    if daemon.lock_free(settings.home, LOCK_NAME):
        pid_path(settings).unlink(missing_ok=True)
        return None
    return read_info(settings) or ClusterInfo(0, "?", 0, 0, time.time(), "?")


def cluster_env(host: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the master and workers: this one, bound to ``host``.

    ``SPARK_LOCAL_IP`` keeps every port of the daemons (and the executors they start) on the
    address asked for. A ``PYSPARK_GATEWAY_PORT`` inherited from a Python driver is dropped.
    """
    env = dict(os.environ if environ is None else environ)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    if host not in ("0.0.0.0", "::", ""):
        env["SPARK_LOCAL_IP"] = host
    return env


def master_command(host: str, port: int, webui_port: int) -> list[str]:
    """``spark-class Master`` bound to ``host``:``port``, its web UI on ``webui_port``."""
    return [
        str(spark_class()),
        MASTER_CLASS,
        "--host",
        host,
        "--port",
        str(port),
        "--webui-port",
        str(webui_port),
    ]


def worker_command(url: str, host: str, port: int, cores: int, memory: str) -> list[str]:
    """``spark-class Worker`` registering with ``url``; its web UI on any free port."""
    command = [str(spark_class()), WORKER_CLASS]
    if host not in ("0.0.0.0", "::", ""):
        command += ["--host", host]
    return [
        *command,
        "--port",
        str(port),
        "--webui-port",
        "0",
        "--cores",
        str(cores),
        "--memory",
        memory,
        url,
    ]


def _check_ports(host: str, port: int, webui_port: int) -> None:
    try:
        daemon.free_port(host)
    except OSError as exc:
        raise ClusterError(f"cannot listen on {host}: {exc.strerror} (--host)") from None
    if port == webui_port:
        raise ClusterError(f"--port and --webui-port are both {port}")
    for value, flag in ((port, "--port"), (webui_port, "--webui-port")):
        if not daemon.port_free(host, value):
            raise ClusterError(f"port {value} on {host} is in use by another process ({flag})")


def start(
    settings: Settings,
    workers: int = DEFAULT_WORKERS,
    cores: int = DEFAULT_CORES,
    memory: str = DEFAULT_MEMORY,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    webui_port: int = DEFAULT_WEBUI_PORT,
    wait: float = 120.0,
) -> ClusterInfo:
    """Start a master and ``workers`` workers in the background; return once all are ALIVE.

    Args:
        workers: number of workers, each with ``cores`` cores and ``memory`` (``1g``, ``512m``)
            to give executors.
        wait: seconds to wait for the master, then for every worker to register.

    Raises:
        ClusterBusy: a cluster of this state folder runs already.
        ClusterError: a bad argument, a port in use, no ``spark-class``, or a process that
            exited (or did not come up within ``wait`` seconds); what was started is stopped
            and the message names the log to read.
    """
    if workers < 1 or cores < 1:
        raise ClusterError(f"a cluster needs 1 or more workers and cores, got {workers}, {cores}")
    if not MEMORY_PATTERN.match(memory):
        raise ClusterError(f"memory per worker must be like 1g or 512m, got {memory!r}")
    settings.home.mkdir(parents=True, exist_ok=True)
    fd = daemon.acquire(settings.home, LOCK_NAME)
    if fd is None:
        info = read_info(settings)
        who = f"master pid {info.pid} at {info.url}" if info else "a cluster still starting"
        raise ClusterBusy(
            f"a Spark cluster of {settings.home} runs already: {who} "
            "(`lakehouse cluster stop` first)"
        )
    try:
        _check_ports(host, port, webui_port)
        if not spark_class().is_file():
            raise ClusterError(f"spark-class not found at {spark_class()} (is pyspark installed?)")
        info = _launch(settings, fd, workers, cores, memory, host, port, webui_port, wait)
    finally:
        os.close(fd)
    return info


def _launch(
    settings: Settings,
    fd: int,
    workers: int,
    cores: int,
    memory: str,
    host: str,
    port: int,
    webui_port: int,
    wait: float,
) -> ClusterInfo:
    folder = cluster_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    env = cluster_env(host)
    master_log = daemon.new_log(settings.home, "cluster", f"{stamp}-master")
    # Every process inherits the locked descriptor: the lock lives as long as any of them.
    master = daemon.spawn(
        master_command(host, port, webui_port), master_log, env, cwd=folder, pass_fds=(fd,)
    )
    info = ClusterInfo(master.pid, host, port, webui_port, time.time(), str(master_log))
    started = [master]
    try:
        daemon.write_record(pid_path(settings), info)
        try:
            answers = daemon.wait_ready(
                master, lambda: master_state(info.webui, 2.0) is not None, wait, poll=0.5
            )
        except daemon.ProcessExited as exc:
            raise ClusterError(
                f"the master exited with code {exc.code} before answering; see {info.log}"
            ) from None
        if not answers:
            raise ClusterError(f"the master did not answer within {wait:.0f} s; see {info.log}")
        recorded = []
        for n in range(1, workers + 1):
            worker_dir = folder / f"worker-{n}"
            worker_dir.mkdir(parents=True, exist_ok=True)
            log = daemon.new_log(settings.home, "cluster", f"{stamp}-worker-{n}")
            worker_port = daemon.free_port(daemon.client_host(host))
            process = daemon.spawn(
                worker_command(info.url, host, worker_port, cores, memory),
                log,
                {**env, "SPARK_WORKER_DIR": str(worker_dir)},
                cwd=worker_dir,
                pass_fds=(fd,),
            )
            started.append(process)
            recorded.append(
                WorkerProcess(process.pid, worker_port, cores, memory, str(worker_dir), str(log))
            )
        info = ClusterInfo(
            master.pid, host, port, webui_port, info.started, info.log, tuple(recorded)
        )
        daemon.write_record(pid_path(settings), info)
        ports = {w.port for w in info.workers}
        deadline = time.monotonic() + wait
        while True:
            for process, worker in zip(started[1:], info.workers, strict=True):
                code = process.poll()
                if code is not None:
                    raise ClusterError(
                        f"{Path(worker.folder).name} exited with code {code} before "
                        f"registering; see {worker.log}"
                    )
            if master.poll() is not None:
                code = master.returncode
                raise ClusterError(f"the master exited with code {code}; see {info.log}")
            state = master_state(info.webui, 2.0)
            alive = {w.port for w in state.alive_workers} if state else set()
            if ports <= alive:
                return info
            if time.monotonic() >= deadline:
                missing = [w for w in info.workers if w.port not in alive]
                raise ClusterError(
                    f"{len(missing)} of {workers} workers did not register with the master "
                    f"within {wait:.0f} s; see {missing[0].log} and {info.log}"
                )
            time.sleep(0.5)
    except BaseException:
        for process in reversed(started):
            daemon.stop_process(process.pid, timeout=20.0)
            process.poll()
        daemon.clear_record(pid_path(settings))
        raise


def _runs(pid: int, main_class: str) -> bool:
    """Whether ``pid`` is alive and (where ``/proc`` tells) runs ``main_class``: a pid reused by
    another process after the cluster's died is never signalled."""
    if not daemon.alive(pid):
        return False
    try:
        return main_class.encode() in (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False


def stop(settings: Settings, timeout: float = 60.0) -> ClusterInfo | None:
    """Stop the workers, then the master, waiting for each (SIGKILL after ``timeout``).

    Returns the cluster that was stopped, or None when none was running.

    Raises:
        ClusterError: the record names no process, or a process did not end.
    """
    info = running(settings)
    if info is None:
        return None
    if info.pid <= 0:
        raise ClusterError(f"the cluster's pids are not recorded in {pid_path(settings)}")
    workers = [w.pid for w in info.workers if _runs(w.pid, WORKER_CLASS)]
    for pid in workers:  # all at once: each stops its executors first
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in workers:
        if not daemon.stop_process(pid, timeout):
            raise ClusterError(f"worker pid {pid} did not end")
    if _runs(info.pid, MASTER_CLASS) and not daemon.stop_process(info.pid, timeout):
        raise ClusterError(f"the master (pid {info.pid}) did not end")
    if not daemon.wait_until(lambda: daemon.lock_free(settings.home, LOCK_NAME), timeout):
        raise ClusterError(
            f"a process of the cluster still holds {settings.home / 'locks' / 'cluster.lock'}"
        )
    daemon.clear_record(pid_path(settings))
    return info
