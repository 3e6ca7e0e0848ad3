"""The platform's inference table: predictions with their inputs as of the application, built
incrementally, outcomes filled in as they are observed."""

from __future__ import annotations

from datetime import datetime

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.monitoring.sources import MONITORED_PREDICTIONS, build_monitored_predictions
from lakehouse.platform.catalog import (
    GOLD_LABELS,
    GOLD_PREDICTIONS,
    SILVER_LOAN_APPLICATIONS,
    TableCatalog,
)
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import delta_version

PREDICTIONS = (
    "application_id string, customer_id string, score double, decision string, "
    "model_name string, model_version int, run_id string, scored_at timestamp, "
    "feature_versions string, scoring_mode string"
)
APPLICATIONS = (
    "application_id string, customer_id string, applied_at timestamp, loan_amount double, "
    "term_months int, purpose string"
)
LABELS = (
    "application_id string, customer_id string, application_timestamp timestamp, "
    "loan_amount double, term_months int, purpose string, defaulted int, observed_at timestamp"
)
SCORED = datetime(2026, 3, 1, 12)


def _prediction(app: str, customer: str, version: int, score: float) -> tuple:
    return (app, customer, score, "review", "m", version, "r", SCORED, "{}", "batch")


def income_as_of(spark: SparkSession, settings: Settings, entity_df: DataFrame) -> DataFrame:
    """A feature provider: the customer's income as of the event time (a step function)."""
    changed = F.col("event_timestamp") >= F.lit(datetime(2026, 2, 1))
    return entity_df.withColumn(
        "annual_income",
        F.when(F.col("customer_id") == "c1", F.when(changed, 60000.0).otherwise(50000.0)).otherwise(
            F.lit(40000.0)
        ),
    )


def _write(spark: SparkSession, catalog: TableCatalog, name: str, rows: list, schema: str) -> None:
    spark.createDataFrame(rows, schema).write.format("delta").mode("append").save(
        catalog.path(name)
    )


@pytest.fixture
def world(spark: SparkSession, catalog: TableCatalog) -> TableCatalog:
    _write(
        spark,
        catalog,
        SILVER_LOAN_APPLICATIONS,
        [
            ("a1", "c1", datetime(2026, 1, 10, 9), 5000.0, 36, "car"),
            ("a2", "c1", datetime(2026, 2, 10, 9), 7000.0, 48, "home"),
            ("a3", "c2", datetime(2026, 2, 11, 9), 3000.0, 12, "cash"),
        ],
        APPLICATIONS,
    )
    _write(
        spark,
        catalog,
        GOLD_PREDICTIONS,
        [_prediction("a1", "c1", 1, 0.1), _prediction("a2", "c1", 1, 0.7)],
        PREDICTIONS,
    )
    _write(
        spark,
        catalog,
        GOLD_LABELS,
        [("a1", "c1", datetime(2026, 1, 10, 9), 5000.0, 36, "car", 0, datetime(2026, 2, 20))],
        LABELS,
    )
    return catalog


def _rows(spark: SparkSession, catalog: TableCatalog) -> dict[tuple[str, int], dict]:
    return {
        (r["application_id"], r["model_version"]): r.asDict()
        for r in catalog.read(spark, MONITORED_PREDICTIONS).collect()
    }


def test_predictions_get_their_inputs_as_of_the_application(
    spark: SparkSession, settings: Settings, world: TableCatalog
) -> None:
    report = build_monitored_predictions(spark, settings, world, features_fn=income_as_of)
    assert (report.inserted, report.labelled) == (2, 0)
    rows = _rows(spark, world)
    assert set(rows) == {("a1", 1), ("a2", 1)}
    a1, a2 = rows[("a1", 1)], rows[("a2", 1)]
    assert a1["applied_at"] == datetime(2026, 1, 10, 9) and a1["scored_at"] == SCORED
    assert (a1["annual_income"], a2["annual_income"]) == (50000.0, 60000.0)
    assert (a1["loan_amount"], a1["term_months"], a1["purpose"]) == (5000.0, 36, "car")
    assert (a1["defaulted"], a2["defaulted"]) == (0, None)
    assert a2["score"] == 0.7

    version = delta_version(spark, world, MONITORED_PREDICTIONS)
    again = build_monitored_predictions(spark, settings, world, features_fn=income_as_of)
    assert not again.changed
    assert delta_version(spark, world, MONITORED_PREDICTIONS) == version


def test_new_predictions_and_late_outcomes_are_added(
    spark: SparkSession, settings: Settings, world: TableCatalog
) -> None:
    build_monitored_predictions(spark, settings, world, features_fn=income_as_of)
    _write(
        spark,
        world,
        GOLD_PREDICTIONS,
        [_prediction("a3", "c2", 1, 0.2), _prediction("a1", "c1", 2, 0.15)],
        PREDICTIONS,
    )
    _write(
        spark,
        world,
        GOLD_LABELS,
        [("a2", "c1", datetime(2026, 2, 10, 9), 7000.0, 48, "home", 1, datetime(2026, 3, 20))],
        LABELS,
    )
    seen: list[int] = []

    def counting(spark: SparkSession, settings: Settings, entity_df: DataFrame) -> DataFrame:
        seen.append(entity_df.count())
        return income_as_of(spark, settings, entity_df)

    report = build_monitored_predictions(spark, settings, world, features_fn=counting)
    assert (report.inserted, report.labelled) == (2, 1)
    assert seen == [2]  # features only for the new predictions
    rows = _rows(spark, world)
    assert len(rows) == 4
    assert rows[("a2", 1)]["defaulted"] == 1
    assert rows[("a2", 1)]["observed_at"] == datetime(2026, 3, 20)
    assert rows[("a1", 2)]["defaulted"] == 0  # observed already when inserted
    assert rows[("a3", 1)]["annual_income"] == 40000.0
