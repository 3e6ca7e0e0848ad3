"""A real Delta write conflict, made on purpose, survived by the platform's write helpers.

A MERGE is held inside its Spark job (its source waits, in a Python UDF, for a file the test
creates) while another writer commits to the same table; released, the MERGE finds the other
commit at its own commit and Delta raises ``ConcurrentAppendException``. The helpers of
:mod:`lakehouse.platform.tables` retry it; the table then holds every key once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from delta.exceptions import ConcurrentAppendException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType

from lakehouse.platform import retry
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.tables import create_if_missing, merge_upsert

TABLE = "silver.conflicts"
TIMEOUT = 300


def held_source(spark: SparkSession, gate: Path, rows: list[tuple[str, int]]) -> DataFrame:
    """``rows`` as (key, value), whose evaluation says ``gate/started`` and then waits for
    ``gate/release`` (in the Python worker, so inside the MERGE's Spark job)."""
    started, release = str(gate / "started"), str(gate / "release")

    def wait(key: str) -> bool:
        import os
        import time

        open(started, "a").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.05)
        return True

    gate_udf = F.udf(wait, BooleanType())
    # One partition: one task waits on the gate, the other core is free for the other writer.
    frame = spark.createDataFrame(rows, "key string, value long").coalesce(1)
    return frame.where(gate_udf(F.col("key")))


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.05)


def run_held(
    write: Callable[[], Any], gate: Path, meanwhile: Callable[[], None]
) -> tuple[Any, BaseException | None]:
    """``write()`` on a thread; once its source started, ``meanwhile()``, then release it."""
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(write())
        except BaseException as exc:  # reported to the test
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    wait_for_file(gate / "started")
    meanwhile()
    (gate / "release").touch()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    return (result[0] if result else None), (error[0] if error else None)


@pytest.fixture
def table(spark: SparkSession, catalog: TableCatalog) -> TableCatalog:
    frame = spark.createDataFrame([("a", 1), ("b", 2)], "key string, value long")
    create_if_missing(spark, catalog, TABLE, frame)
    frame.write.format("delta").mode("append").save(catalog.path(TABLE))
    return catalog


def other_writer(spark: SparkSession, catalog: TableCatalog) -> Callable[[], None]:
    """A writer that commits row ``c`` while the MERGE is held."""
    return lambda: (
        spark.createDataFrame([("c", 30)], "key string, value long")
        .write.format("delta")
        .mode("append")
        .save(catalog.path(TABLE))
    )


def contents(spark: SparkSession, catalog: TableCatalog) -> list[tuple[str, int]]:
    return sorted((r["key"], r["value"]) for r in catalog.read(spark, TABLE).collect())


def test_a_held_merge_conflicts_without_the_retry(
    spark: SparkSession, table: TableCatalog, tmp_path: Path
) -> None:
    """The race is real: Delta refuses the plain MERGE's commit."""
    from delta.tables import DeltaTable

    source = held_source(spark, tmp_path, [("b", 20), ("c", 3)])

    def plain_merge() -> None:
        target = DeltaTable.forPath(spark, table.path(TABLE)).alias("t")
        merge = target.merge(source.alias("s"), "t.key = s.key")
        merge.whenMatchedUpdateAll().whenNotMatchedInsertAll().execute()

    _, error = run_held(plain_merge, tmp_path, other_writer(spark, table))
    assert isinstance(error, ConcurrentAppendException)
    assert contents(spark, table) == [("a", 1), ("b", 2), ("c", 30)]


def test_merge_upsert_retries_the_conflict_and_writes_each_key_once(
    spark: SparkSession, table: TableCatalog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = held_source(spark, tmp_path, [("b", 20), ("c", 3)])
    with caplog.at_level(logging.INFO, logger=retry.__name__):
        _, error = run_held(
            lambda: merge_upsert(spark, table, TABLE, source, ["key"], read_history=False),
            tmp_path,
            other_writer(spark, table),
        )
    assert error is None
    # The retry matched the row the other writer committed: updated, not inserted twice.
    assert contents(spark, table) == [("a", 1), ("b", 20), ("c", 3)]
    retries = [r.getMessage() for r in caplog.records if r.name == retry.__name__]
    assert len(retries) == 1
    assert retries[0].startswith(f"{TABLE}: attempt 1 of 8 hit ConcurrentAppendException")
