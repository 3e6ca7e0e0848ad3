"""Real shared services for tests: PostgreSQL, an MLflow tracking server on it, and Redis.

Each service runs from its own binaries in a temporary folder, on a free port, and is gone
after the fixture that started it:

* :class:`Postgres`: ``initdb`` into a temporary folder, ``pg_ctl start`` on a free TCP port
  (loopback only, trust authentication) with its Unix socket in the same folder, one database
  per :meth:`Postgres.create_database`. ``initdb`` is found on the PATH or under
  ``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package); the tests that need it
  are skipped, naming the binary, only when it is absent. PostgreSQL refuses to run as root,
  so under root the server runs as the ``postgres`` (else ``nobody``) user.
* :class:`MlflowServer`: ``mlflow server`` with its backend store on PostgreSQL and artifacts
  served by the server itself (``--serve-artifacts``) from ``--artifacts-destination``: a local
  folder here, any URI MLflow's artifact repositories take (``s3://...``) elsewhere. It can be
  killed and started again on the same port and stores, as a restart does.
* :func:`running_redis`: a ``redis-server`` without persistence.

The module-scoped fixtures (:func:`postgres_fixture`, :func:`mlflow_server_fixture`,
:func:`redis_fixture`) are imported by the test modules that use them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

#: The database role the tests connect as (trust authentication on the loopback interface).
PG_USER = "lakehouse"
#: Unprivileged users PostgreSQL may run as when the tests run as root, in order of preference.
PG_RUN_AS = ("postgres", "nobody")


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _version_key(path: str) -> tuple[int, ...]:
    parts = Path(path).parent.parent.name.split(".")
    return tuple(int(p) for p in parts if p.isdigit())


def postgres_bin_dir() -> Path | None:
    """The folder of PostgreSQL's server binaries (``initdb``, ``pg_ctl``), or ``None``.

    ``initdb`` on the PATH wins (a link into Debian's folder is followed there, where
    ``pg_ctl`` and ``postgres`` live too); else the newest ``/usr/lib/postgresql/*/bin``.
    """
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    return Path(candidates[-1]).parent if candidates else None


def wait_for_port(port: int, process: subprocess.Popen[Any] | None, timeout: float) -> None:
    """Wait until something accepts connections on ``port``; fail if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process exited with code {process.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port} after {timeout} s") from None
            time.sleep(0.1)


class Postgres:
    """A PostgreSQL server of its own in a temporary folder (see the module docstring)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        # Not under pytest's temporary folders: those are private to the user running the tests,
        # and the server may run as another one.
        self.root = Path(tempfile.mkdtemp(prefix="lakehouse-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            accounts = [a for a in map(_account, PG_RUN_AS) if a is not None]
            if not accounts:
                raise RuntimeError(f"PostgreSQL cannot run as root and no user of {PG_RUN_AS}")
            account = accounts[0]
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            [str(self.bin_dir / argv[0]), *argv[1:]],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            **self._user,
        )
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()}\n{log}")

    def start(self) -> None:
        """``initdb`` (first time only), then start the server and wait until it accepts."""
        if not self.data.exists():
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                PG_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``) and delete its folder."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> None:
        """Create database ``name``, owned by :data:`PG_USER`."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, name)

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` through psycopg2.

        The driver is named: SQLAlchemy 2.1 takes a bare ``postgresql://`` to mean psycopg 3.
        """
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def query(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        """The rows of one SQL statement on ``database`` (psycopg2, autocommit)."""
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=PG_USER, dbname=database
        )
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            connection.close()


def _account(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A started :class:`Postgres`, stopped and deleted after the block; skip without initdb."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("initdb is not installed (Debian package postgresql)")
    server = Postgres(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


class MlflowServer:
    """``mlflow server`` on a PostgreSQL backend store, serving artifacts from a destination.

    Runs in a process group of its own, so that :meth:`kill` takes its workers with it.
    """

    def __init__(
        self,
        backend_store_uri: str,
        artifacts_destination: str,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.backend_store_uri = backend_store_uri
        self.artifacts_destination = artifacts_destination
        self.log = log
        #: More environment for the server (``MLFLOW_S3_ENDPOINT_URL``, ``AWS_*`` for S3).
        self.env = dict(env or {})
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The tracking (and registry) URI of the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        """Start the server on its port and wait until ``/health`` answers."""
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(mlflow_bin),
                    "server",
                    "--backend-store-uri",
                    self.backend_store_uri,
                    "--artifacts-destination",
                    self.artifacts_destination,
                    "--serve-artifacts",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                # MLflow's job runner (GenAI jobs: several huey consumers) is not used here.
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env},
                start_new_session=True,
            )
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"mlflow server exited ({self.process.returncode}):\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"mlflow server not healthy at {self.uri} after {timeout} s")

    def kill(self) -> None:
        """Kill the server and its workers at once (SIGKILL to its process group)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None


@contextmanager
def running_mlflow_server(
    postgres: Postgres,
    folder: Path,
    artifacts_destination: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[MlflowServer]:
    """An MLflow server on a new database of ``postgres``; artifacts under ``folder`` unless
    ``artifacts_destination`` names another place (an object store's ``s3://bucket/path``,
    with its endpoint and keys in ``env``)."""
    postgres.create_database("mlflow")
    destination = artifacts_destination or str(folder / "artifacts")
    log = folder / "mlflow-server.log"
    server = MlflowServer(postgres.url("mlflow"), destination, log, env)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def running_redis() -> Iterator[str]:
    """A private ``redis-server`` without persistence; yields its ``host:port``."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, timeout=20)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module", name="postgres")
def postgres_fixture() -> Iterator[Postgres]:
    """A PostgreSQL server for the module."""
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module", name="mlflow_server")
def mlflow_server_fixture(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """An MLflow server for the module: PostgreSQL backend, artifacts in a temporary folder."""
    with running_mlflow_server(postgres, tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="module", name="redis_url")
def redis_fixture() -> Iterator[str]:
    """A Redis server for the module; its ``host:port``."""
    with running_redis() as url:
        yield url
