"""The same code on a Spark standalone cluster: a real master and worker, started here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.settings import Settings
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.service]

SPARK_CLASS = Path(sys.executable).with_name("spark-class")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on port {port} after {seconds}s")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A standalone master and one worker (1 core, 1 GB) on loopback."""
    if not SPARK_CLASS.exists():
        pytest.skip("spark-class is not installed")
    logs = tmp_path_factory.mktemp("standalone")
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_WORKER_DIR": str(logs)}
    master = subprocess.Popen(
        [str(SPARK_CLASS), "org.apache.spark.deploy.master.Master",
         "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    procs = [master]
    try:
        _wait_for_port(port, master)
        url = f"spark://127.0.0.1:{port}"
        worker = subprocess.Popen(
            [str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker",
             "--cores", "1", "--memory", "1g", "--webui-port", str(worker_ui), url],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(worker)
        _wait_for_port(worker_ui, worker)
        yield url, logs
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_sql_runs_on_the_standalone_cluster(
    spark: SparkSession, standalone: tuple[str, Path], settings: Settings, catalog: TableCatalog
) -> None:
    """`lakehouse sql` as a cluster application: its executors read Delta on the worker."""
    master_url, work_dir = standalone
    spark.range(1000).selectExpr("id", "id % 7 AS bucket").write.format("delta").save(
        catalog.path("silver.on_cluster")
    )
    env = {
        **os.environ,
        "LAKEHOUSE_HOME": str(settings.home),
        "LAKEHOUSE_SPARK_MASTER": master_url,
        "LAKEHOUSE_SHUFFLE_PARTITIONS": "2",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    query = "SELECT bucket, count(*) AS n FROM silver.on_cluster GROUP BY bucket ORDER BY bucket"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lakehouse")), "sql", query, "--limit", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    counts = [r[:2] for r in rows if len(r) == 2 and r[0].isdigit()]
    assert counts == [[str(b), str(143 if b < 6 else 142)] for b in range(7)]
    # The worker ran the application's executors: it keeps a work folder per application.
    assert any(work_dir.glob("app-*")), "the worker never ran an executor"
