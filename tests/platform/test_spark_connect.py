"""``lakehouse connect``: a Spark Connect server over the persistent catalog and Delta tables.

One real server for the module, started by the command in a subprocess over a temporary state
folder; every client is a separate Python process (no JVM of its own), as a notebook or a
script on a developer's laptop would be.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lakehouse.platform.locks import EXIT_BUSY
from lakehouse.serving.process import free_port
from tests.conftest import platform_env

pytestmark = pytest.mark.slow

LAKEHOUSE = str(Path(sys.executable).with_name("lakehouse"))

#: Writes a Delta table by path where the folder layout keeps ``silver.customers``, as the
#: platform's pipeline does, without going through the catalog.
PLATFORM_WRITER = """
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
rows = [(1, "Ada"), (2, "Grace"), (3, "Linus")]
spark.createDataFrame(rows, "customer_id int, name string").write.format("delta").save(sys.argv[2])
"""

#: Creates, inserts into and MERGEs a table through a Connect session, reads the platform's
#: table, and prints what it saw as one JSON object.
CLIENT = """
import json, sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
spark.sql("CREATE SCHEMA IF NOT EXISTS sales")
spark.createDataFrame([(1, "a"), (2, "b")], "id int, v string").write.saveAsTable("sales.orders")
spark.sql("INSERT INTO sales.orders VALUES (3, 'c')")
spark.sql(
    "MERGE INTO sales.orders t USING (SELECT 2 AS id, 'B' AS v UNION ALL SELECT 4, 'd') s "
    "ON t.id = s.id WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
)
orders = [[r.id, r.v] for r in spark.table("sales.orders").orderBy("id").collect()]
detail = spark.sql("DESCRIBE DETAIL sales.orders").collect()[0]
customers = [
    [r.customer_id, r.name]
    for r in spark.sql("SELECT * FROM silver.customers ORDER BY customer_id").collect()
]
history = spark.sql("DESCRIBE HISTORY sales.orders").orderBy("version").collect()
print(json.dumps({
    "session": type(spark).__module__,
    "orders": orders,
    "format": detail.format,
    "customers": customers,
    "history": [r.operation for r in history],
}))
"""

#: Through the platform's own factory: LAKEHOUSE_SPARK_REMOTE makes get_spark() a Connect client.
NOTEBOOK_CLIENT = """
import json
from lakehouse.platform.spark import get_spark

spark = get_spark()
rows = spark.sql("SELECT count(*) AS n, max(id) AS top FROM sales.orders").collect()[0]
print(json.dumps({"session": type(spark).__module__, "n": rows.n, "top": rows.top}))
"""

#: Runs a query that takes far longer than the test waits; says when it is about to.
LONG_CLIENT = """
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
# One partition a side: one task, so the server keeps a core for the next client.
side = spark.range(0, 1_000_000, 1, 1)
big = side.crossJoin(side.withColumnRenamed("id", "j"))
print("running", flush=True)
big.selectExpr("sum(id * j)").collect()
"""


@dataclass(frozen=True)
class Server:
    home: Path
    port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"sc://localhost:{self.port}"


def lakehouse(server: Server, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``lakehouse ARGS`` over the server's state folder."""
    return subprocess.run(
        [LAKEHOUSE, *args],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def client(server: Server, script: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``script`` in a separate Python process; its stdout (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env or server.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def recorded_pid(server: Server) -> int:
    return int(json.loads((server.home / "run" / "connect.pid").read_text())["pid"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("connect") / "home"
    env = platform_env(
        LAKEHOUSE_HOME=str(home),
        LAKEHOUSE_SPARK_MASTER="local[2]",
        LAKEHOUSE_SHUFFLE_PARTITIONS="2",
        PYSPARK_PYTHON=sys.executable,
    )
    env.pop("LAKEHOUSE_SPARK_REMOTE", None)
    running = Server(home, free_port(), env)
    started = lakehouse(running, "connect", "start", "--port", str(running.port))
    assert started.returncode == 0, started.stderr
    try:
        yield running
    finally:
        lakehouse(running, "connect", "stop")


def test_start_prints_the_url_and_records_the_server(server: Server) -> None:
    status = lakehouse(server, "connect", "status")

    assert status.returncode == 0, status.stderr
    fields = dict(line.split(":", 1) for line in status.stdout.splitlines())
    assert fields["url"].strip() == server.url
    assert int(fields["pid"]) == recorded_pid(server)
    assert fields["log"].strip().startswith(str(server.home / "logs" / "connect-"))
    assert set(fields) == {"url", "pid", "uptime", "log"}


def listening_addresses(port: int) -> set[str]:
    """The addresses a socket listens on at ``port`` (Linux's ``/proc/net/tcp`` and ``tcp6``;
    an IPv4 address mapped into IPv6, as Java binds, is given as IPv4)."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, _, port_hex = fields[1].partition(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = b"".join(
                bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8)
            )
            ip = ipaddress.ip_address(raw)
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            found.add(str(mapped or ip))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket table")
def test_the_server_listens_on_loopback_only(server: Server) -> None:
    assert listening_addresses(server.port) == {"127.0.0.1"}


def test_a_client_creates_inserts_merges_and_reads_the_platforms_tables(server: Server) -> None:
    client(server, PLATFORM_WRITER, server.url, str(server.home / "tables/silver/customers"))

    seen = json.loads(client(server, CLIENT, server.url))

    assert seen == {
        "session": "pyspark.sql.connect.session",
        "orders": [[1, "a"], [2, "B"], [3, "c"], [4, "d"]],
        "format": "delta",
        "customers": [[1, "Ada"], [2, "Grace"], [3, "Linus"]],
        "history": ["CREATE TABLE AS SELECT", "WRITE", "MERGE"],
    }
    # Persisted where the catalog keeps managed tables: every other application sees it.
    assert (server.home / "tables" / "sales" / "orders" / "_delta_log").is_dir()


def test_get_spark_returns_a_connect_session_when_the_variable_is_set(server: Server) -> None:
    env = {**server.env, "LAKEHOUSE_SPARK_REMOTE": server.url}

    seen = json.loads(client(server, NOTEBOOK_CLIENT, env=env))

    assert seen == {"session": "pyspark.sql.connect.session", "n": 4, "top": 4}


def test_a_client_killed_mid_query_leaves_the_server_answering(server: Server) -> None:
    pid = recorded_pid(server)
    long = subprocess.Popen(
        [sys.executable, "-c", LONG_CLIENT, server.url],
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert long.stdout is not None
        assert long.stdout.readline().strip() == "running"
        # The query is sent right after the line; give the server a moment to be inside it.
        with pytest.raises(subprocess.TimeoutExpired):
            long.wait(timeout=3)
    finally:
        long.send_signal(signal.SIGKILL)
        long.wait()

    after = client(
        server,
        "import sys; from pyspark.sql import SparkSession; "
        "s = SparkSession.builder.remote(sys.argv[1]).getOrCreate(); "
        "print(s.range(7).count(), s.table('sales.orders').count())",
        server.url,
    )

    assert after.split() == ["7", "4"]
    assert recorded_pid(server) == pid


def test_a_second_start_exits_75_naming_the_running_server(server: Server) -> None:
    again = lakehouse(server, "connect", "start", "--port", str(free_port()))

    assert again.returncode == EXIT_BUSY
    assert f"pid {recorded_pid(server)}" in again.stderr
    assert server.url in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_stop_ends_the_server_and_status_then_says_none_runs(server: Server) -> None:
    pid = recorded_pid(server)

    stopped = lakehouse(server, "connect", "stop")

    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"Spark Connect server stopped (pid {pid})"
    status = lakehouse(server, "connect", "status")
    assert status.returncode == 3
    assert status.stdout.strip() == f"no Spark Connect server running for {server.home}"
    assert not (server.home / "run" / "connect.pid").exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    assert lakehouse(server, "connect", "stop").returncode == 0  # nothing to stop: no error


def test_start_on_a_port_in_use_fails_in_one_line(tmp_path: Path) -> None:
    env = platform_env(LAKEHOUSE_HOME=str(tmp_path / "home"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [LAKEHOUSE, "connect", "start", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == f"error: port {port} on 127.0.0.1 is in use by another process (--port)"
    )
    status = subprocess.run(
        [LAKEHOUSE, "connect", "status"], env=env, capture_output=True, text=True, check=False
    )
    assert status.returncode == 3


def test_get_spark_keeps_the_platforms_commands_classic(monkeypatch: pytest.MonkeyPatch) -> None:
    from lakehouse.platform import logs
    from lakehouse.platform.spark import _remote_url

    monkeypatch.setenv("LAKEHOUSE_SPARK_REMOTE", "sc://localhost:1")
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setattr(logs, "_current", logs.LogSetup(None, False))
    assert _remote_url(None) == "sc://localhost:1"
    assert _remote_url("") is None
    assert _remote_url("sc://other:2") == "sc://other:2"
    monkeypatch.setattr(logs, "_current", logs.LogSetup(Path("command.log"), False))
    assert _remote_url(None) is None  # a lakehouse command or job: its own session
    monkeypatch.setattr(logs, "_current", logs.LogSetup(None, False))
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")
    assert _remote_url(None) is None  # under spark-submit
