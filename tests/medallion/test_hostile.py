"""Hostile landing files through the whole pipeline: no row stops it, every line is accounted for.

One small generated world and every class of :mod:`lakehouse.simulation.hostile` land together
and go through one pipeline run, then a second one; each class's test reads what the runs did
to its own files (by ``_source_file``). The orphans test, last, lands the missing customer and
runs once more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.medallion.contracts import AMOUNT_LIMIT
from lakehouse.medallion.pipeline import PipelineReport, run_pipeline
from lakehouse.medallion.silver import accounting, orphan_counts
from lakehouse.platform.catalog import (
    ENTITIES,
    GOLD_CUSTOMER_PROFILE,
    GOLD_CUSTOMER_TRANSACTIONS,
    GOLD_LABELS,
    SILVER_QUARANTINE,
    SILVER_TRANSACTIONS,
    TableCatalog,
)
from lakehouse.platform.settings import Settings
from lakehouse.simulation.generator import GeneratorConfig, generate
from lakehouse.simulation.hostile import (
    BASE,
    HOSTILE_CLASSES,
    HostileReport,
    write_hostile,
)

CONFIG = GeneratorConfig(seed=11, customers=25, days=6, malformed_rate=0.02, duplicate_rate=0.02)
HOSTILE_DAY = CONFIG.start_date + timedelta(days=3)


@dataclass
class World:
    settings: Settings
    catalog: TableCatalog
    hostile: HostileReport
    first: PipelineReport
    second: PipelineReport
    versions_before_second: dict[str, int]
    versions_after_second: dict[str, int]
    #: Rows per landing file name: in bronze, silver (of any entity) and the quarantine.
    bronze: dict[str, int]
    silver: dict[str, int]
    quarantined: dict[str, int]


def _versions(spark: SparkSession, catalog: TableCatalog) -> dict[str, int]:
    return {name: catalog.version(spark, name) for name in catalog.list_tables(spark)}


def _per_file(df: DataFrame) -> dict[str, int]:
    name = F.element_at(F.split("_source_file", "/"), -1).alias("file")
    return {r["file"]: int(r["count"]) for r in df.groupBy(name).count().collect()}


@pytest.fixture(scope="module")
def world(
    spark: SparkSession, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> World:
    settings = base_settings.with_home(tmp_path_factory.mktemp("hostile-home"))
    catalog = TableCatalog(settings.tables_root)
    generate(settings.landing_dir, CONFIG)
    hostile = write_hostile(settings.landing_dir, seed=5, day=HOSTILE_DAY)
    first = run_pipeline(spark, settings, catalog)
    before = _versions(spark, catalog)
    second = run_pipeline(spark, settings, catalog)
    after = _versions(spark, catalog)

    def union(prefix: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entity in ENTITIES:
            for name, n in _per_file(catalog.read(spark, f"{prefix}.{entity}")).items():
                counts[name] = counts.get(name, 0) + n
        return counts

    bronze = {}
    for entity in ENTITIES:
        bronze.update(_per_file(catalog.read(spark, f"bronze.{entity}_raw")))
    return World(
        settings,
        catalog,
        hostile,
        first,
        second,
        before,
        after,
        bronze,
        union("silver"),
        _per_file(catalog.read(spark, SILVER_QUARANTINE)),
    )


def test_the_run_completes_and_builds_gold(world: World) -> None:
    assert set(world.first.gold) == {GOLD_CUSTOMER_PROFILE, GOLD_CUSTOMER_TRANSACTIONS, GOLD_LABELS}
    assert all(rows > 0 for rows in world.first.gold.values()), world.first.gold


@pytest.mark.parametrize("hostile_class", [BASE, *HOSTILE_CLASSES])
def test_every_line_of_each_class_lands_where_the_contract_says(
    world: World, hostile_class: str
) -> None:
    """Per file: bronze holds every line, silver the accepted ones, the quarantine the rest
    (no hostile record repeats a key, so none is a duplicate)."""
    files = world.hostile.of_class(hostile_class)
    assert files
    for f in files:
        name = f.path.name
        got = (
            world.bronze.get(name, 0),
            world.silver.get(name, 0),
            world.quarantined.get(name, 0),
        )
        assert got == (f.lines, f.accepted, f.rejected), name


@pytest.mark.parametrize("entity", ENTITIES)
def test_every_bronze_row_is_accounted_for(spark: SparkSession, world: World, entity: str) -> None:
    acc = accounting(spark, world.catalog, entity)
    assert acc.balanced, acc
    assert acc.quarantined_rows > 0


def test_a_second_run_changes_nothing(world: World) -> None:
    assert world.second.rows_ingested == 0
    assert world.versions_after_second == world.versions_before_second


def _quarantined(spark: SparkSession, world: World, entity: str, field: str) -> dict[str, str]:
    """Quarantined rows of ``entity``: the raw ``field`` -> the rule that rejected it."""
    rows = (
        world.catalog.read(spark, SILVER_QUARANTINE)
        .where(F.col("entity") == entity)
        .select(F.get_json_object("raw_record", f"$.{field}").alias("v"), "rule", "reason")
        .collect()
    )
    return {r["v"]: r["rule"] for r in rows if r["v"] is not None}


def test_values_a_later_stage_cannot_process_are_quarantined_with_their_rule(
    spark: SparkSession, world: World
) -> None:
    amounts = _quarantined(spark, world, "transactions", "amount")
    assert amounts["1e308"] == "valid_amount"
    assert amounts["NaN"] == "valid_amount"
    assert amounts["Infinity"] == "valid_amount"
    assert amounts[f"{AMOUNT_LIMIT:.0f}"] == "valid_amount"
    times = _quarantined(spark, world, "transactions", "transaction_ts")
    assert times["9999-12-31T23:59:59Z"] == "valid_transaction_ts"
    assert times["0001-01-01T00:00:00Z"] == "valid_transaction_ts"
    ids = _quarantined(spark, world, "customers", "customer_id")
    assert ids["C" + "9" * 199_999] == "valid_customer_id"
    # A customer line with its key, a nested name and a time only: rejected, not half-loaded.
    names = _quarantined(spark, world, "customers", "name")
    assert names['{"first":"Ann","last":"Lee"}'] == "valid_name"
    silver = world.catalog.read(spark, SILVER_TRANSACTIONS)
    extremes = silver.agg(F.max("amount").alias("max"), F.count_if(F.isnan("amount")).alias("nan"))
    row = extremes.first()
    assert row is not None and row["max"] < AMOUNT_LIMIT and row["nan"] == 0


def test_a_quarantined_row_keeps_its_rule_reason_and_raw_record(
    spark: SparkSession, world: World
) -> None:
    row = (
        world.catalog.read(spark, SILVER_QUARANTINE)
        .where(F.get_json_object("raw_record", "$.amount") == "1e308")
        .first()
    )
    assert row is not None
    assert row["reason"] == "amount must be a finite number, 0 < amount < 1e+18"
    raw = json.loads(row["raw_record"])
    assert raw["amount"] == "1e308" and raw["_source_file"].endswith("out_of_range.csv")


def test_orphans_are_counted_held_out_of_gold_and_released_when_the_customer_arrives(
    spark: SparkSession, world: World
) -> None:
    orphans = world.hostile.of_class("orphans")
    assert orphan_counts(spark, world.catalog) == {
        "transactions": 2,
        "loan_applications": 1,
        "repayments": 1,
    }
    customer = "CH18999999"
    application = "AH18999999"

    def in_gold() -> tuple[int, int]:
        features = world.catalog.read(spark, GOLD_CUSTOMER_TRANSACTIONS)
        labels = world.catalog.read(spark, GOLD_LABELS)
        return (
            features.where(F.col("customer_id") == customer).count(),
            labels.where(F.col("application_id") == application).count(),
        )

    assert in_gold() == (0, 0)
    # The customer and the application the repayment is about arrive late.
    landing = world.settings.landing_dir
    moment = f"{HOSTILE_DAY}T00:00:05Z"
    (landing / "customers" / "customers_hostile-late.json").write_text(
        json.dumps(
            {
                "customer_id": customer,
                "name": "Late",
                "birth_date": "1980-01-01",
                "annual_income": 40000,
                "employment_years": 2,
                "home_ownership": "OWN",
                "region": "EAST",
                "credit_score": 640,
                "updated_at": moment,
            }
        )
        + "\n"
    )
    (landing / "loan_applications" / "loan_applications_hostile-late.json").write_text(
        json.dumps(
            {
                "application_id": application,
                "customer_id": customer,
                "applied_at": moment,
                "loan_amount": 1000,
                "term_months": 12,
                "purpose": "CAR",
            }
        )
        + "\n"
    )

    run_pipeline(spark, world.settings, world.catalog)

    assert orphan_counts(spark, world.catalog) == {
        "transactions": 0,
        "loan_applications": 0,
        "repayments": 0,
    }
    features, labels = in_gold()
    assert features > 0 and labels == 1
    assert all(f.accepted == f.lines for f in orphans)
    for entity in ENTITIES:
        assert accounting(spark, world.catalog, entity).balanced, entity


def test_hostile_files_are_named_by_class(world: World) -> None:
    names = {f.path.name for f in world.hostile.files}
    assert "customers_hostile-bom.json" in names and "transactions_hostile-bom.csv" in names
    assert all(Path(f.path).exists() for f in world.hostile.files)
