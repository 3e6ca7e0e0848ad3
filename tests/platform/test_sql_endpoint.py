"""``lakehouse sql-server``: a real Thrift server over a state folder's Delta tables.

One server for the module (each start is a JVM): a small Delta table of two versions is written
under ``<home>/tables/gold/scores`` first, then the server is started with the CLI and queried
with beeline and with PyHive (DB-API). The last test stops it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyhive import hive
from pyhive.exc import OperationalError
from pyspark.sql import SparkSession

from lakehouse.platform.jars import spark_jars_dir
from lakehouse.platform.locks import EXIT_BUSY
from lakehouse.platform.sql_endpoint import is_server_process, jdbc_url
from lakehouse.serving.process import free_port
from tests.conftest import MLFLOW_ENV

pytestmark = pytest.mark.slow

SCORES = "gold.scores"
SCORES_V0 = [(1, "a", 0.5), (2, "b", 0.25)]
SCORES_V1 = [*SCORES_V0, (3, "c", 0.75)]


@dataclass
class Endpoint:
    home: Path
    cwd: Path
    env: dict[str, str]
    port: int
    pid: int

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``lakehouse sql-server ARGS`` against this state folder."""
        return lakehouse(self.env, self.cwd, "sql-server", *args)

    def connect(self) -> hive.Connection:
        return hive.connect(host="127.0.0.1", port=self.port, username="tester")


def lakehouse(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("lakehouse")
    return subprocess.run(
        [str(script), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def home_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_ENV}
    env.update(
        {
            "LAKEHOUSE_HOME": str(home),
            "LAKEHOUSE_SPARK_MASTER": "local[1]",
            "LAKEHOUSE_SHUFFLE_PARTITIONS": "1",
        }
    )
    return env


def rows(connection: hive.Connection, sql: str) -> list[tuple[object, ...]]:
    cursor = connection.cursor()
    try:
        cursor.execute(sql)
        return [tuple(r) for r in cursor.fetchall()]
    finally:
        cursor.close()


@pytest.fixture(scope="module")
def endpoint(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    home = tmp_path_factory.mktemp("sql-endpoint-home")
    cwd = tmp_path_factory.mktemp("sql-endpoint-cwd")
    table = str(home / "tables" / "gold" / "scores")
    schema = "id INT, name STRING, score DOUBLE"
    spark.createDataFrame(SCORES_V0, schema).write.format("delta").save(table)
    spark.createDataFrame(SCORES_V1[2:], schema).write.format("delta").mode("append").save(table)
    env = home_env(home)
    port = free_port()
    started = lakehouse(env, cwd, "sql-server", "start", "--port", str(port))
    log = home / "sql-server" / "server.log"
    tail = log.read_text()[-3000:] if log.exists() else ""
    assert started.returncode == 0, (started.stderr, tail)
    assert jdbc_url("127.0.0.1", port) in started.stdout
    pid = int(started.stdout.split("(pid ")[1].split(",")[0])
    yield Endpoint(home, cwd, env, port, pid)
    lakehouse(env, cwd, "sql-server", "stop")


def test_beeline_answers_a_query(endpoint: Endpoint) -> None:
    beeline = spark_jars_dir().parent / "bin" / "beeline"
    if not beeline.is_file():
        pytest.skip(f"beeline is not in this Spark: {beeline}")
    url = jdbc_url("127.0.0.1", endpoint.port)
    query = f"SELECT id, name FROM {SCORES} ORDER BY id"
    done = subprocess.run(
        [str(beeline), "-u", url, "--silent=true", "--outputformat=csv2", "-e", query],
        env=endpoint.env,
        cwd=endpoint.cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # csv2 rows; beeline's prompt may precede the header on its line
    assert "id,name\n1,a\n2,b\n3,c\n" in done.stdout, done.stdout


def test_dbapi_client_gets_exact_rows(endpoint: Endpoint) -> None:
    with endpoint.connect() as connection:
        assert rows(connection, f"SELECT id, name, score FROM {SCORES} ORDER BY id") == SCORES_V1


def test_time_travel_by_version(endpoint: Endpoint) -> None:
    with endpoint.connect() as connection:
        old = rows(connection, f"SELECT id, name, score FROM {SCORES} VERSION AS OF 0 ORDER BY id")
        assert old == SCORES_V0
        history = rows(connection, f"DESCRIBE HISTORY {SCORES}")
        assert sorted(int(str(h[0])) for h in history) == [0, 1]


def test_bad_query_is_an_error_to_the_client_and_the_server_answers_on(
    endpoint: Endpoint,
) -> None:
    with endpoint.connect() as connection:
        with pytest.raises(OperationalError, match="UNRESOLVED_COLUMN"):
            rows(connection, f"SELECT no_such_column FROM {SCORES}")
        with pytest.raises(OperationalError, match="TABLE_OR_VIEW_NOT_FOUND"):
            rows(connection, "SELECT * FROM gold.no_such_table")
        assert rows(connection, f"SELECT count(*) FROM {SCORES}") == [(3,)]
    with endpoint.connect() as again:
        assert rows(again, "SELECT 1 + 1") == [(2,)]


def test_a_table_made_through_the_endpoint_persists_under_the_tables_root(
    endpoint: Endpoint, spark: SparkSession
) -> None:
    with endpoint.connect() as connection:
        rows(connection, f"CREATE TABLE gold.tens AS SELECT id * 10 AS x FROM {SCORES}")
    folder = endpoint.home / "tables" / "gold" / "tens"
    assert (folder / "_delta_log").is_dir()
    written = spark.read.format("delta").load(str(folder)).orderBy("x").collect()
    assert [r.x for r in written] == [10, 20, 30]


def test_metastore_files_stay_in_the_state_folder(endpoint: Endpoint) -> None:
    assert (endpoint.home / "sql-server" / "metastore_db").is_dir()
    assert (endpoint.home / "sql-server" / "derby.log").is_file()
    assert not (endpoint.cwd / "metastore_db").exists()
    assert not (endpoint.cwd / "derby.log").exists()


def test_status_names_url_and_pid(endpoint: Endpoint) -> None:
    status = endpoint.cli("status")
    assert status.returncode == 0, status.stderr
    assert f"url:    {jdbc_url('127.0.0.1', endpoint.port)}\n" in status.stdout
    assert f"pid:    {endpoint.pid}\n" in status.stdout
    assert "uptime: " in status.stdout


def test_second_start_exits_75_naming_the_pid(endpoint: Endpoint) -> None:
    again = endpoint.cli("start", "--port", str(free_port()))
    assert again.returncode == EXIT_BUSY
    assert f"already running as pid {endpoint.pid}" in again.stderr


def test_start_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = home_env(tmp_path / "home")
        done = lakehouse(env, tmp_path, "sql-server", "start", "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"lakehouse sql-server: port {port} on 127.0.0.1 is already in use"
    ]


def test_stop_ends_the_server(endpoint: Endpoint) -> None:
    """Last in the module: the other tests use the running server."""
    stopped = endpoint.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped (pid {endpoint.pid})" in stopped.stdout
    assert not is_server_process(endpoint.pid)
    assert not (endpoint.home / "sql-server" / "server.pid").exists()
    assert endpoint.cli("status").returncode == 3
    assert endpoint.cli("stop").stdout.strip() == "lakehouse sql-server: not running"
