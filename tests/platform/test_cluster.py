"""The same code on a Spark standalone cluster: a real master and worker, started here."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakehouse.platform import cluster
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.serving.process import free_port
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.service]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A standalone master and one worker (1 core, 1 GB) on loopback, as ``lakehouse cluster
    start`` runs them; the master URL and the worker's folder."""
    if not cluster.spark_class().is_file():
        pytest.skip(f"spark-class is not installed: {cluster.spark_class()}")
    home = tmp_path_factory.mktemp("standalone")
    settings = load_settings("local", env={"LAKEHOUSE_HOME": str(home)})
    info = cluster.start(settings, workers=1, port=free_port(), webui_port=free_port())
    try:
        yield info.url, Path(info.workers[0].folder)
    finally:
        cluster.stop(settings)


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
