"""The SQL endpoint: Spark's Thrift server (HiveServer2's protocol) over the platform's tables.

As a Databricks SQL warehouse answers JDBC, ODBC and DB-API clients, ``lakehouse sql-server``
runs ``org.apache.spark.sql.hive.thriftserver.HiveThriftServer2`` (shipped in the pyspark wheel)
under ``spark-submit`` with Delta and the persistent catalog, so ``gold.predictions`` resolves
there as in every other application, time travel included::

    spark-submit --class org.apache.spark.sql.hive.thriftserver.HiveThriftServer2 \\
      --master local[*] --jars <delta jars>,<catalog jar> --conf ... \\
      --hiveconf hive.server2.thrift.bind.host=127.0.0.1 --hiveconf hive.server2.thrift.port=10000

The server turns Hive support on, so Spark's session catalog is a Hive metastore in embedded
Derby; its files (``metastore_db``, ``derby.log``) are kept in :func:`state_dir`, beside the
server's pid file and log, not in the folder the command was started from. The persistent
catalog reconciles that metastore with the folder layout under ``settings.tables_root`` on each
name it is asked about, so the metastore holds nothing of its own.

A running server is recorded in a pid file (JSON: pid, host, port, start time, log); a record
whose process is gone, or is no longer the server, is stale and ignored. The record, the log,
the port checks and the stop are :mod:`lakehouse.platform.daemon`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from lakehouse.platform import daemon
from lakehouse.platform.jars import catalog_jar, resolve_jars, spark_jars_dir
from lakehouse.platform.settings import Settings
from lakehouse.platform.spark import catalog_conf, spark_conf

#: The Thrift server's main class, in ``spark-hive-thriftserver`` of the pyspark wheel.
SERVER_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"
DEFAULT_PORT = 10000
DEFAULT_HOST = "127.0.0.1"


def state_dir(settings: Settings) -> Path:
    """The server's folder: pid file, log, and the Derby metastore Hive support needs."""
    return settings.home / "sql-server"


def pid_path(settings: Settings) -> Path:
    """The record of the running server."""
    return state_dir(settings) / "server.pid"


def log_path(settings: Settings) -> Path:
    """The server's output (Spark's log and the Thrift server's)."""
    return state_dir(settings) / "server.log"


def connect_host(host: str) -> str:
    """The address a client on this machine uses for a server bound to ``host``."""
    return daemon.client_host(host)


def jdbc_url(host: str, port: int) -> str:
    """The JDBC URL of a server bound to ``host``:``port`` (``beeline -u URL``)."""
    return f"jdbc:hive2://{connect_host(host)}:{port}/default"


@dataclass(frozen=True)
class ServerRecord:
    """What the pid file says about a server."""

    pid: int
    host: str
    port: int
    started: str  # ISO-8601, UTC
    log: str

    @property
    def url(self) -> str:
        return jdbc_url(self.host, self.port)

    def uptime(self) -> float:
        """Seconds since the server was started."""
        since = datetime.fromisoformat(self.started.replace("Z", "+00:00"))
        return max(0.0, (datetime.now(UTC) - since).total_seconds())


def read_record(settings: Settings) -> ServerRecord | None:
    """The recorded server if its process is still the server; None otherwise."""
    record = daemon.read_record(pid_path(settings), ServerRecord)
    if record is None:
        return None
    if record.pid == os.getpid():  # a container restarted: its new main process has the pid
        return None
    return record if is_server_process(record.pid) else None


def write_record(settings: Settings, record: ServerRecord) -> None:
    """Record ``record`` in the pid file (written beside it, then renamed into place)."""
    daemon.write_record(pid_path(settings), record)


def clear_record(settings: Settings, pid: int | None = None) -> None:
    """Remove the pid file (only if it still names ``pid``, when given)."""
    daemon.clear_record(pid_path(settings), pid)


def is_server_process(pid: int) -> bool:
    """Whether ``pid`` is alive and (where ``/proc`` tells) runs the Thrift server.

    The command line is checked so that a pid reused by another process after the server died
    without removing its record is not taken for the server.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    cmdline = Path("/proc") / str(pid) / "cmdline"
    if not cmdline.parent.parent.is_dir():
        return True
    try:
        text = cmdline.read_bytes()
    except OSError:
        return False
    if not text:  # a zombie: exited, not yet reaped
        return False
    # Before its ``exec`` a foreground server is still ``lakehouse sql-server start``.
    return SERVER_CLASS.encode() in text or b"\0sql-server\0start\0" in text


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host``:``port``."""
    return daemon.port_answers(host, port, timeout)


def spark_submit() -> str:
    """``spark-submit`` of the Spark this Python runs (``$SPARK_HOME``, else pyspark's)."""
    return str(spark_jars_dir().parent / "bin" / "spark-submit")


def server_jars() -> list[Path]:
    """Delta's jars and, when it can be built, the persistent catalog's."""
    jars = resolve_jars()
    catalog = catalog_jar()
    if catalog is not None:
        jars.append(catalog)
    return jars


def server_conf(settings: Settings, host: str, port: int) -> dict[str, str]:
    """The Spark configuration of the server: the platform's, Hive's metastore kept in place.

    The platform's :func:`~lakehouse.platform.spark.spark_conf` and, when its jar can be built,
    the persistent catalog's :func:`~lakehouse.platform.spark.catalog_conf`; then Hive support
    (the server turns it on whatever is asked) with Derby's database and log under
    :func:`state_dir`. The bind address and port are given to Hive as ``--hiveconf`` by
    :func:`server_command` too; here they also reach the Hadoop configuration the server reads.
    """
    folder = state_dir(settings)
    conf = spark_conf(settings, launches_jvm=True)
    jars = server_jars()
    if catalog_jar() is not None:
        conf.update(catalog_conf(settings))
    # The Thrift server opens each client's session on its own threads, whose class loader
    # does not see ``--jars``: the driver gets the jars on its class path (``--jars`` still
    # ships them to the executors of a cluster).
    driver_path = (
        [conf["spark.driver.extraClassPath"]] if "spark.driver.extraClassPath" in conf else []
    )
    conf["spark.driver.extraClassPath"] = os.pathsep.join([*driver_path, *(str(p) for p in jars)])
    conf.update(
        {
            "spark.app.name": "lakehouse-sql-server",
            "spark.sql.catalogImplementation": "hive",
            "spark.hadoop.javax.jdo.option.ConnectionURL": (
                f"jdbc:derby:;databaseName={folder / 'metastore_db'};create=true"
            ),
            # The persistent catalog keeps schema ``default`` at ``<root>/default``; a Hive
            # metastore cannot move a schema, so it creates ``default`` there in the first place.
            "spark.sql.warehouse.dir": settings.tables_root.rstrip("/") + "/default",
            "spark.hadoop.hive.server2.thrift.bind.host": host,
            "spark.hadoop.hive.server2.thrift.port": str(port),
            "spark.driver.extraJavaOptions": (
                f"-Dderby.system.home={folder} -Dderby.stream.error.file={folder / 'derby.log'}"
            ),
        }
    )
    return conf


def server_command(settings: Settings, host: str, port: int) -> list[str]:
    """The ``spark-submit`` line that runs the server in the foreground."""
    jars = server_jars()
    command = [
        spark_submit(),
        "--class",
        SERVER_CLASS,
        "--name",
        "lakehouse-sql-server",
        "--master",
        settings.spark_master,
        "--jars",
        ",".join(str(p) for p in jars),
    ]
    for key, value in server_conf(settings, host, port).items():
        command += ["--conf", f"{key}={value}"]
    hive = {
        "hive.server2.thrift.bind.host": host,
        "hive.server2.thrift.port": str(port),
        "hive.server2.transport.mode": "binary",
    }
    for key, value in hive.items():
        command += ["--hiveconf", f"{key}={value}"]
    return command


def server_env(settings: Settings) -> dict[str, str]:
    """The environment of the server: this one, with a local address for a local master."""
    env = dict(os.environ)
    if settings.spark_master.startswith("local"):
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return env


class StartFailed(RuntimeError):
    """The server did not come up; the message is one line naming the log."""


def start_background(settings: Settings, host: str, port: int, timeout: float) -> ServerRecord:
    """Start the server detached from this process and wait until its port answers.

    The caller has checked that no server is recorded. Raises :class:`StartFailed` when the
    port is taken by another process, the server exits, or it does not answer within
    ``timeout`` seconds (it is then stopped).
    """
    if port_answers(host, port):
        raise StartFailed(f"port {port} on {connect_host(host)} is already in use")
    folder = state_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    log = log_path(settings)
    process = daemon.spawn(
        server_command(settings, host, port),
        log,
        server_env(settings),
        cwd=folder,  # anything the JVM writes relative to its cwd stays here
        banner=f"\n==> {datetime.now(UTC).isoformat(timespec='seconds')} start\n",
    )
    record = ServerRecord(
        pid=process.pid,
        host=host,
        port=port,
        started=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        log=str(log),
    )
    write_record(settings, record)
    try:
        if daemon.wait_ready(process, lambda: port_answers(host, port), timeout, poll=0.5):
            return record
    except daemon.ProcessExited as exc:
        clear_record(settings, process.pid)
        raise StartFailed(
            f"the server exited with code {exc.code} before answering on port {port}; see {log}"
        ) from None
    stop_pid(process.pid, timeout=30.0)
    process.poll()
    clear_record(settings, process.pid)
    raise StartFailed(f"the server did not answer on port {port} within {timeout:.0f} s; see {log}")


def run_foreground(settings: Settings, host: str, port: int) -> NoReturn:
    """Become the server (``exec``): for containers, where the server is the main process.

    The pid file names this process, which keeps its pid through ``exec``.
    """
    folder = state_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    command = server_command(settings, host, port)
    write_record(
        settings,
        ServerRecord(
            pid=os.getpid(),
            host=host,
            port=port,
            started=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            log="-",
        ),
    )
    os.chdir(folder)
    os.execve(command[0], command, server_env(settings))


def stop_pid(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid`` and wait for it to end (SIGKILL after ``timeout``); False if it was gone."""
    if not daemon.alive(pid):
        return False
    daemon.stop_process(pid, timeout)
    return True
