"""The medallion pipeline end to end on generated data: exactly once, idempotent, accounted.

One small world is generated and pushed through bronze, silver and gold on the shared session;
the tests then check it from the same session, from spark-submit jobs and from concurrent Spark
applications (the exploration notebook runs on the demo's tables, in tests/test_lifecycle.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakehouse.medallion.contracts import RAW_FIELDS
from lakehouse.medallion.expectations import EXPECTATIONS, Expectation, ExpectationFailed
from lakehouse.medallion.pipeline import (
    PIPELINE_LOCK,
    PipelineReport,
    for_each_entity,
    run_pipeline,
)
from lakehouse.medallion.silver import accounting
from lakehouse.platform.catalog import (
    BRONZE_TRANSACTIONS,
    ENTITIES,
    GOLD_CUSTOMER_PROFILE,
    GOLD_CUSTOMER_TRANSACTIONS,
    GOLD_LABELS,
    SILVER_CUSTOMERS,
    SILVER_LOAN_APPLICATIONS,
    SILVER_QUARANTINE,
    SILVER_REPAYMENTS,
    SILVER_TRANSACTIONS,
    TableCatalog,
    register_all,
)
from lakehouse.platform.locks import EXIT_BUSY, read_holder
from lakehouse.platform.settings import Settings
from lakehouse.simulation.generator import GenerationReport, GeneratorConfig, generate

REPO = Path(__file__).resolve().parents[2]
CONFIG = GeneratorConfig(
    seed=7,
    customers=150,
    days=40,
    malformed_rate=0.01,
    duplicate_rate=0.01,
    key_duplicate_rate=0.01,
    late_rate=0.02,
    schema_drift_from_day=30,
)
FIRST_DAYS = range(0, 35)
LAST_DAYS = range(35, 40)
ORPHAN_CUSTOMER = "C999999"
ORPHAN_TRANSACTION = f"T9999999999,{ORPHAN_CUSTOMER},12.50,GROCERY,ONLINE,2026-02-06T10:00:00Z"


@dataclass
class World:
    settings: Settings
    catalog: TableCatalog
    first: GenerationReport
    report: PipelineReport


def _versions(spark: SparkSession, catalog: TableCatalog) -> dict[str, int]:
    return {name: catalog.version(spark, name) for name in catalog.list_tables(spark)}


@pytest.fixture(scope="module")
def world(
    spark: SparkSession, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> World:
    settings = base_settings.with_home(tmp_path_factory.mktemp("pipeline-home"))
    catalog = TableCatalog(settings.tables_root)
    first = generate(settings.landing_dir, CONFIG, days=FIRST_DAYS)
    report = run_pipeline(spark, settings, catalog)
    return World(settings, catalog, first, report)


def test_first_run_builds_every_table(spark: SparkSession, world: World) -> None:
    names = set(world.catalog.list_tables(spark))
    expected = {f"bronze.{e}_raw" for e in ENTITIES} | {
        SILVER_CUSTOMERS,
        SILVER_TRANSACTIONS,
        SILVER_LOAN_APPLICATIONS,
        SILVER_REPAYMENTS,
        SILVER_QUARANTINE,
        GOLD_CUSTOMER_PROFILE,
        GOLD_CUSTOMER_TRANSACTIONS,
        GOLD_LABELS,
    }
    assert expected <= names
    # Bronze holds every line that landed, malformed ones included.
    lines = {e: world.first.entities[e].lines for e in ENTITIES}
    for entity in ENTITIES:
        bronze = world.catalog.read(spark, f"bronze.{entity}_raw").count()
        assert bronze == lines[entity], entity


@pytest.mark.parametrize("entity", ENTITIES)
def test_every_bronze_row_is_accounted_for(spark: SparkSession, world: World, entity: str) -> None:
    acc = accounting(spark, world.catalog, entity)
    assert acc.balanced, acc
    assert acc.bronze_rows == acc.silver_rows + acc.quarantined_rows + acc.duplicate_rows


def test_malformed_lines_are_quarantined_with_their_file(spark: SparkSession, world: World) -> None:
    quarantine = world.catalog.read(spark, SILVER_QUARANTINE)
    malformed = quarantine.where("rule = 'malformed'")
    expected = sum(world.first.entities[e].malformed for e in ENTITIES)
    assert malformed.count() == expected
    assert malformed.where("_source_file IS NULL OR raw_record IS NULL").count() == 0


def test_rerun_ingests_nothing_and_changes_nothing(spark: SparkSession, world: World) -> None:
    before = _versions(spark, world.catalog)
    again = run_pipeline(spark, world.settings, world.catalog)
    assert again.rows_ingested == 0
    assert _versions(spark, world.catalog) == before


def test_new_drop_is_picked_up_once(spark: SparkSession, world: World) -> None:
    before = world.catalog.read(spark, BRONZE_TRANSACTIONS).count()
    later = generate(world.settings.landing_dir, CONFIG, days=LAST_DAYS)
    # A transaction of a customer no file holds: kept in silver, reported, held out of gold.
    orphan = world.settings.landing_dir / "transactions" / "transactions_orphan.csv"
    orphan.write_text(f"{','.join(RAW_FIELDS['transactions'])}\n{ORPHAN_TRANSACTION}\n")
    report = run_pipeline(spark, world.settings, world.catalog)
    after = world.catalog.read(spark, BRONZE_TRANSACTIONS).count()
    assert after - before == later.entities["transactions"].lines + 1
    assert report.rows_ingested == later.total_lines + 1
    assert world.report.orphans == {"transactions": 0, "loan_applications": 0, "repayments": 0}
    assert report.orphans["transactions"] == 1
    assert report.held == "held (reference unknown): transactions 1"
    features = world.catalog.read(spark, GOLD_CUSTOMER_TRANSACTIONS)
    assert features.where(f"customer_id = '{ORPHAN_CUSTOMER}'").count() == 0
    for entity in ENTITIES:
        assert accounting(spark, world.catalog, entity).balanced, entity
    # Schema drift from day 30 is kept in _rescued_data, not lost.
    drifted = world.catalog.read(spark, BRONZE_TRANSACTIONS).where(
        "_rescued_data LIKE '%device_type%'"
    )
    assert drifted.count() > 0


def test_sql_names_and_time_travel(spark: SparkSession, world: World) -> None:
    register_all(spark, world.catalog)
    now = spark.sql(f"SELECT count(*) AS n FROM {BRONZE_TRANSACTIONS}").first()["n"]
    # Version 0 is the empty table; version 1 the first drop ingested.
    old = spark.sql(f"SELECT count(*) AS n FROM {BRONZE_TRANSACTIONS} VERSION AS OF 1")
    assert 0 < old.first()["n"] < now
    outcomes = spark.sql(f"SELECT DISTINCT defaulted FROM {GOLD_LABELS}").collect()
    assert outcomes and {r["defaulted"] for r in outcomes} <= {0, 1}


def test_a_failed_entity_stops_only_the_gold_tables_that_read_it(
    spark: SparkSession, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gold tables are built as their own inputs are; a failed silver build stops its readers."""
    catalog = TableCatalog(settings.tables_root)
    generate(settings.landing_dir, GeneratorConfig(seed=3, customers=40, days=60))
    strict = Expectation("no_default", "NOT defaulted", "fail")  # a rule set that stops the run
    monkeypatch.setitem(EXPECTATIONS, "repayments", (*EXPECTATIONS["repayments"], strict))

    with pytest.raises(ExpectationFailed, match="no_default"):
        run_pipeline(spark, settings, catalog)

    assert catalog.read(spark, SILVER_REPAYMENTS).count() == 0
    assert not catalog.exists(spark, GOLD_LABELS)
    for name in (GOLD_CUSTOMER_PROFILE, GOLD_CUSTOMER_TRANSACTIONS):
        assert catalog.read(spark, name).count() > 0, name
    for entity in ("customers", "transactions", "loan_applications"):
        assert accounting(spark, catalog, entity).balanced, entity


@pytest.mark.parametrize("parallel", [True, False])
def test_entities_all_run_and_the_first_error_is_raised(parallel: bool) -> None:
    done: list[str] = []

    def work(entity: str) -> str:
        done.append(entity)
        if entity in ("b", "d"):
            raise ValueError(f"bad {entity}")
        return entity.upper()

    assert for_each_entity(str.upper, ["a", "b", "c"], parallel) == ["A", "B", "C"]
    with pytest.raises(ValueError, match="bad b"):
        for_each_entity(work, ["a", "b", "c", "d"], parallel)
    # In parallel every entity is carried to its end; in order, the first error stops the rest.
    assert sorted(done) == (["a", "b", "c", "d"] if parallel else ["a", "b"])


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LAKEHOUSE_HOME=str(settings.home),
        LAKEHOUSE_SHUFFLE_PARTITIONS="2",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
    )
    return env


def _jars() -> str:
    from lakehouse.platform.jars import resolve_jars

    return ",".join(str(p) for p in resolve_jars())


@pytest.mark.slow
def test_jobs_run_under_spark_submit(spark: SparkSession, world: World) -> None:
    """Each job, run by spark-submit in its own JVM, sees and updates the same tables."""
    spark_submit = Path(sys.executable).with_name("spark-submit")
    generate(
        world.settings.landing_dir,
        CONFIG.__class__(**{**CONFIG.__dict__, "days": 42}),
        days=range(40, 42),
    )
    outputs = {}
    for job in ("ingest_bronze", "build_silver", "build_gold"):
        done = subprocess.run(
            [
                str(spark_submit),
                "--master",
                "local[1]",
                "--jars",
                _jars(),
                str(REPO / "jobs" / f"{job}.py"),
            ],
            env=_env(world.settings),
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[job] = done.stdout
    assert "bronze.transactions_raw:" in outputs["ingest_bronze"]
    assert f"{GOLD_LABELS}:" in outputs["build_gold"]
    for entity in ENTITIES:
        assert accounting(spark, world.catalog, entity).balanced, entity


@pytest.mark.slow
def test_two_applications_read_the_same_tables_at_once(spark: SparkSession, world: World) -> None:
    """Two more Spark applications query by name while this one does: no metastore lock."""
    exe = Path(sys.executable).with_name("lakehouse")
    query = f"SELECT count(*) AS n FROM {SILVER_TRANSACTIONS}"
    procs = [
        subprocess.Popen(
            [str(exe), "sql", query],
            env={**_env(world.settings), "LAKEHOUSE_SPARK_MASTER": "local[1]"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    register_all(spark, world.catalog)
    expected = spark.sql(query).first()["n"]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert str(expected) in out.split()


@pytest.mark.slow
def test_a_second_run_at_once_exits_75_naming_the_first(spark: SparkSession, world: World) -> None:
    """Two ``lakehouse pipeline run`` at once: the second says who runs and exits 75 at once."""
    exe = str(Path(sys.executable).with_name("lakehouse"))
    env = {**_env(world.settings), "LAKEHOUSE_SPARK_MASTER": "local[1]"}
    first = subprocess.Popen(
        [exe, "pipeline", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 300
        while read_holder(world.settings.home, PIPELINE_LOCK) is None:
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = subprocess.run(
            [exe, "pipeline", "run"], env=env, capture_output=True, text=True, timeout=300
        )
        first_out, first_err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.returncode == EXIT_BUSY == 75
    assert second.stdout == ""
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith(f"error: another pipeline run holds {world.settings.home}/locks/")
    assert f"pid {first.pid} on " in line and "(lakehouse pipeline run)" in line
    assert first.returncode == 0, first_err[-3000:]
    assert first_out.startswith("pipeline ")
    assert "held (reference unknown): transactions 1" in first_out  # the orphan of the new drop
    assert "Traceback" not in first_err + second.stderr
    assert read_holder(world.settings.home, PIPELINE_LOCK) is None
