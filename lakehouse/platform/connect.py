"""A Spark Connect server over the platform's catalog and Delta tables, as Databricks Connect.

``lakehouse connect start`` launches ``spark-submit --class`` :data:`SERVER_CLASS` (the Spark of
the running interpreter's pyspark) with the configuration of
:func:`~lakehouse.platform.spark.get_spark`: Delta, the persistent catalog and their jars. Any
client then works on the same tables as every other application::

    spark = SparkSession.builder.remote("sc://localhost:15002").getOrCreate()

The server runs in the background. Two files under the state folder describe it:

* ``locks/connect.lock``, an ``fcntl`` lock the server process inherits from the command that
  started it: the kernel releases it when the server ends in any way, so "the lock is held" is
  "a server of this state folder is running", with no stale pid to misread;
* ``run/connect.pid``, its pid, address, start time and log file (JSON), for ``status``,
  ``stop`` and the message of a second ``start``.

The server's output and the JVM's log (WARN and above) go to ``logs/connect-<time>.log``. The
lock, record, log and stop are :mod:`lakehouse.platform.daemon`'s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lakehouse.platform import daemon
from lakehouse.platform.jars import catalog_jar, resolve_jars, spark_jars_dir
from lakehouse.platform.locks import EXIT_BUSY
from lakehouse.platform.logs import LogSetup
from lakehouse.platform.settings import Settings
from lakehouse.platform.spark import catalog_conf, spark_conf

#: The server's main class, in ``spark-connect_<scala>-<spark>.jar`` of pyspark's jars.
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
DEFAULT_PORT = 15002
DEFAULT_HOST = "127.0.0.1"
LOCK_NAME = "connect"


class ConnectError(daemon.DaemonError):
    """The server could not be started or stopped; the message says why in one line."""

    exit_code = 1


class ConnectBusy(ConnectError):
    """A server of this state folder runs already. ``exit_code`` is :data:`EXIT_BUSY`."""

    exit_code = EXIT_BUSY


@dataclass(frozen=True)
class ServerInfo:
    """What ``run/connect.pid`` records of a running server."""

    pid: int
    host: str
    port: int
    started: float  # seconds since the epoch
    log: str

    @property
    def url(self) -> str:
        """The Spark Connect URL a client on this machine uses."""
        host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "::", "::1") else self.host
        return f"sc://{host}:{self.port}"

    def uptime(self, now: float | None = None) -> float:
        """Seconds since the server was started."""
        return max(0.0, (now if now is not None else time.time()) - self.started)


def pid_path(settings: Settings) -> Path:
    """``<home>/run/connect.pid``."""
    return settings.home / "run" / "connect.pid"


def server_conf(settings: Settings, host: str, port: int) -> dict[str, str]:
    """The server's Spark configuration: :func:`get_spark`'s, plus where to listen.

    The same conf as a session this process would launch (``spark_conf`` with the local file
    system's jar, ``catalog_conf`` when the catalog jar is built, Delta's and the catalog's jars),
    so the server's sessions resolve and write the same tables. ``port.maxRetries`` 0: a port in
    use fails the start instead of moving the server to another port no client knows. A query
    whose client went away (killed, network lost) is interrupted after half a minute instead of
    Spark's five, so a dead notebook does not hold a small machine's cores for long.
    """
    conf = spark_conf(settings, launches_jvm=True)
    jars = resolve_jars()
    catalog = catalog_jar()
    if catalog is None:
        raise ConnectError(
            "the persistent catalog's jar could not be built (javac and Delta's jars are needed; "
            "run `make setup`): a Connect server without it would not see the platform's tables"
        )
    jars.append(catalog)
    conf.update(catalog_conf(settings))
    conf["spark.jars"] = ",".join(str(p) for p in jars)
    conf["spark.app.name"] = "lakehouse-connect"
    conf["spark.log.structuredLogging.enabled"] = "false"
    conf["spark.connect.grpc.binding.address"] = host
    conf["spark.connect.grpc.binding.port"] = str(port)
    conf["spark.connect.grpc.port.maxRetries"] = "0"
    conf["spark.connect.execute.manager.detachedTimeout"] = "30s"
    conf["spark.connect.execute.manager.maintenanceInterval"] = "5s"
    return conf


def server_command(settings: Settings, conf: dict[str, str]) -> list[str]:
    """``spark-submit --class SparkConnectServer`` of pyspark's own Spark, with ``conf``."""
    submit = spark_jars_dir().parent / "bin" / "spark-submit"
    command = [str(submit), "--master", settings.spark_master, "--class", SERVER_CLASS]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    return [*command, "spark-internal"]


def read_info(settings: Settings) -> ServerInfo | None:
    """The recorded server, or None (no file, or one that cannot be read)."""
    return daemon.read_record(pid_path(settings), ServerInfo)


def running(settings: Settings) -> ServerInfo | None:
    """The running server of this state folder, or None; a stale pid file is removed."""
    if daemon.lock_free(settings.home, LOCK_NAME):
        pid_path(settings).unlink(missing_ok=True)  # the server ended without stop
        return None
    return read_info(settings) or ServerInfo(0, "?", 0, time.time(), "?")


def start(
    settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, wait: float = 180.0
) -> ServerInfo:
    """Launch the server in the background; with ``wait`` > 0, return once its port answers.

    Raises:
        ConnectBusy: a server of this state folder runs already.
        ConnectError: the port is taken, or the server exited (or did not answer within
            ``wait`` seconds) before answering; the message names the log file.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    fd = daemon.acquire(settings.home, LOCK_NAME)
    if fd is None:
        info = read_info(settings)
        who = f"pid {info.pid} at {info.url}" if info else "a server still starting"
        raise ConnectBusy(
            f"a Spark Connect server of {settings.home} runs already: {who} "
            "(`lakehouse connect stop` first)"
        )
    try:
        if not daemon.port_free(host, port):
            raise ConnectError(f"port {port} on {host} is in use by another process (--port)")
        conf = server_conf(settings, host, port)
        log_file = daemon.new_log(settings.home, "connect")
        java = conf.get("spark.driver.extraJavaOptions", "")
        conf["spark.driver.extraJavaOptions"] = (
            f"{java} {LogSetup(log_file, verbose=False).java_options()}".strip()
        )
        env = {**os.environ, "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
        env.pop("PYSPARK_GATEWAY_PORT", None)
        if settings.spark_master.startswith("local"):
            env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # The server inherits the locked descriptor: the lock lives exactly as long as it.
        process = daemon.spawn(
            server_command(settings, conf), log_file, env, cwd=settings.home, pass_fds=(fd,)
        )
        info = ServerInfo(process.pid, host, port, time.time(), str(log_file))
        daemon.write_record(pid_path(settings), info)
    finally:
        os.close(fd)
    if wait > 0:
        _wait_ready(process, info, wait)
    return info


def _wait_ready(process: subprocess.Popen[bytes], info: ServerInfo, wait: float) -> None:
    try:
        ready = daemon.wait_ready(
            process, lambda: daemon.port_answers(info.host, info.port), wait, poll=0.25
        )
    except daemon.ProcessExited as exc:
        raise ConnectError(
            f"the Spark Connect server exited with code {exc.code} before answering; see {info.log}"
        ) from None
    if not ready:
        raise ConnectError(
            f"the Spark Connect server (pid {info.pid}) did not answer on port {info.port} "
            f"within {wait:.0f} s; it may still be starting, see {info.log}"
        )


def stop(settings: Settings, timeout: float = 60.0) -> ServerInfo | None:
    """SIGTERM the running server and wait for it to end (SIGKILL after ``timeout``).

    Returns the server that was stopped, or None when none was running.
    """
    info = running(settings)
    if info is None:
        return None
    if info.pid <= 0:
        raise ConnectError(f"the server's pid is not recorded in {pid_path(settings)}")
    if not daemon.stop_process(
        info.pid, timeout, ended=lambda: running(settings) is None, kill_wait=30.0
    ):
        raise ConnectError(f"the Spark Connect server (pid {info.pid}) did not end")
    return info
