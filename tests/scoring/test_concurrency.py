"""Batch scoring and the scoring stream at the same time, as two real processes.

Both find the same new applications. The batch run's MERGE is held inside its Spark job (its
features wait, in a Python UDF, for a file the test creates) while the stream job scores and
commits the same applications; released, the batch's commit conflicts with the stream's
(``ConcurrentAppendException``), is retried, and inserts nothing twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType

from lakehouse.platform.catalog import GOLD_PREDICTIONS, TableCatalog
from lakehouse.platform.settings import Settings
from tests.conftest import copy_tables, written_once
from tests.scoring.test_scoring import (
    FEATURES_SPEC,
    WORLD_TABLES,
    pit_features,
    register_model,
    version_counts,
    write_world,
)

REPO = Path(__file__).resolve().parents[2]
GATE_ENV = "LAKEHOUSE_TEST_GATE"
GATED_FEATURES = "tests.scoring.test_concurrency:gated_features"
TIMEOUT = 300


def gated_features(spark: SparkSession, settings: Settings, entity_df: DataFrame) -> DataFrame:
    """:func:`pit_features` whose evaluation says ``$GATE/started``, then waits for
    ``$GATE/release``: the scoring MERGE is held inside its Spark job until the test says."""
    gate = Path(os.environ[GATE_ENV])
    started, release = str(gate / "started"), str(gate / "release")

    def wait(customer_id: str) -> bool:
        import os
        import time

        open(started, "a").close()
        deadline = time.monotonic() + 240
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.05)
        return True

    gate_udf = F.udf(wait, BooleanType())
    return pit_features(spark, settings, entity_df).where(gate_udf(F.col("customer_id")))


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(
                f"exited {proc.returncode} first:\n{proc.communicate()[1][-4000:]}"
            )
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def world_tables(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> TableCatalog:
    return written_once(tmp_path_factory, "concurrency-tables", lambda c: write_world(spark, c))


@pytest.mark.slow
@pytest.mark.mlflow
def test_batch_scoring_survives_the_stream_scoring_the_same_applications(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    world_tables: TableCatalog,
    subprocess_env: dict[str, str],
    tmp_path: Path,
) -> None:
    copy_tables(world_tables, catalog, WORLD_TABLES)
    assert register_model(settings, seed=1, c=1.0) == 1
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {**subprocess_env, "PYTHONPATH": str(REPO), GATE_ENV: str(gate)}
    lakehouse = str(Path(sys.executable).with_name("lakehouse"))
    batch = subprocess.Popen(
        [lakehouse, "score", "batch", "--features", GATED_FEATURES],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(gate / "started", batch)  # the batch's MERGE has read the table, and waits
        stream = subprocess.run(
            [
                sys.executable,
                str(REPO / "jobs" / "stream_score.py"),
                "--available-now",
                "--features",
                FEATURES_SPEC,
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert stream.returncode == 0, stream.stderr[-4000:]
        assert version_counts(spark, catalog) == {1: 6}  # the stream scored them first
        (gate / "release").touch()
        out, err = batch.communicate(timeout=TIMEOUT)
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.wait()
    assert batch.returncode == 0, err[-4000:]
    assert out.strip().splitlines()[-1].endswith("0 new predictions")
    # The retry is in the batch run's log file, not on the terminal.
    (log_file,) = (settings.home / "logs").glob("score-batch-*.log")
    retries = [line for line in log_file.read_text().splitlines() if " retrying in " in line]
    assert len(retries) >= 1
    assert f"{GOLD_PREDICTIONS}: attempt 1 of 8 hit ConcurrentAppendException" in retries[0]
    assert "ConcurrentAppendException" not in err

    predictions = catalog.read(spark, GOLD_PREDICTIONS)
    per_key = predictions.groupBy("application_id", "model_version").count()
    assert per_key.where("count > 1").count() == 0
    assert sorted(r["application_id"] for r in predictions.collect()) == [
        "A1",
        "A2",
        "A3",
        "A4",
        "A5",
        "A6",
    ]
    assert {r["scoring_mode"] for r in predictions.collect()} == {"stream"}
