"""Monitored sources: the platform's predictions with the inputs the model scored them on.

``gold.monitored_predictions`` is the inference table of batch and streaming scoring: one row
per prediction (application and model version) with the application's time (``applied_at``),
the model's inputs as scored (the loan request and the point-in-time features of the feature
service as of ``applied_at``, which is what scoring asked the feature store for), the score and
decision, and the observed outcome ``defaulted`` once it is known. An inference monitor on it
windows by ``applied_at``, so input drift and model quality are seen per day of applications,
whenever the applications were scored.

The table is built incrementally: each build reads point-in-time features only for predictions
it does not hold yet, and fills in the outcomes observed since the last build. A build with
nothing new commits nothing, so the monitor's refresh that follows finds no window changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.features.store import EVENT_TIMESTAMP, historical_features
from lakehouse.models.config import REQUEST_COLUMNS
from lakehouse.monitoring.definition import MonitorInferenceLog, MonitorInfo
from lakehouse.platform.catalog import (
    GOLD_LABELS,
    GOLD_PREDICTIONS,
    SILVER_LOAN_APPLICATIONS,
    TableCatalog,
    register_table,
)
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import create_if_missing

log = logging.getLogger(__name__)

#: ``features_fn(spark, settings, entity_df) -> DataFrame``: the same rows, features appended
#: (the shape of scoring's feature provider).
FeaturesFn = Callable[[SparkSession, Settings, DataFrame], DataFrame]

MONITORED_PREDICTIONS = "gold.monitored_predictions"
#: One row per prediction, as in ``gold.predictions``.
KEYS: tuple[str, ...] = ("application_id", "model_version")
TIMESTAMP_COL = "applied_at"
MODEL_ID_COL = "model_version"
PREDICTION_COL = "score"
LABEL_COL = "defaulted"
#: Columns of the prediction itself, first in the table.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "application_id",
    "customer_id",
    "model_version",
    "applied_at",
    "scored_at",
    "score",
    "decision",
)
#: The outcome, last in the table.
OUTCOME_COLUMNS: tuple[str, ...] = ("defaulted", "observed_at")
DEFAULT_GRANULARITIES: tuple[str, ...] = ("1 day", "1 week")


@dataclass(frozen=True)
class SourceReport:
    """What one build of the monitored table wrote."""

    table_name: str
    inserted: int
    labelled: int

    @property
    def changed(self) -> bool:
        """Whether the build committed anything."""
        return bool(self.inserted or self.labelled)

    def summary(self) -> str:
        """One line for the console."""
        return (
            f"{self.table_name}: {self.inserted} new predictions with their inputs, "
            f"{self.labelled} outcomes filled in"
        )


def inference_monitor(
    table_name: str = MONITORED_PREDICTIONS,
    *,
    baseline_table_name: str | None = None,
    granularities: tuple[str, ...] = DEFAULT_GRANULARITIES,
    slicing_exprs: tuple[str, ...] = (),
) -> MonitorInfo:
    """The inference monitor of the platform's predictions (see the module docstring)."""
    schema = table_name.split(".", 1)[0]
    return MonitorInfo(
        table_name=table_name,
        output_schema_name=schema,
        inference_log=MonitorInferenceLog(
            timestamp_col=TIMESTAMP_COL,
            granularities=list(granularities),
            model_id_col=MODEL_ID_COL,
            prediction_col=PREDICTION_COL,
            label_col=LABEL_COL,
        ),
        baseline_table_name=baseline_table_name,
        slicing_exprs=list(slicing_exprs),
    )


def _outcomes(spark: SparkSession, catalog: TableCatalog) -> DataFrame:
    return catalog.read(spark, GOLD_LABELS).select(
        "application_id",
        F.col("defaulted").cast("int").alias("defaulted"),
        "observed_at",
    )


def new_predictions(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    existing: DataFrame | None,
    *,
    features_fn: FeaturesFn | None = None,
) -> DataFrame:
    """The predictions ``existing`` lacks, each with its application's time, the model's
    inputs as of that time and the outcome if observed (lazy)."""
    predictions = catalog.read(spark, GOLD_PREDICTIONS).select(
        "application_id", "customer_id", "model_version", "scored_at", "score", "decision"
    )
    if existing is not None:
        predictions = predictions.join(existing.select(*KEYS), list(KEYS), "left_anti")
    applications = catalog.read(spark, SILVER_LOAN_APPLICATIONS).select(
        "application_id", "applied_at", *REQUEST_COLUMNS
    )
    rows = predictions.join(applications, "application_id")
    entity = rows.select(
        "customer_id",
        F.col("applied_at").alias(EVENT_TIMESTAMP),
        "application_id",
        "model_version",
        "scored_at",
        "score",
        "decision",
        *REQUEST_COLUMNS,
    )
    provider = features_fn or historical_features
    featured = provider(spark, settings, entity).withColumnRenamed(EVENT_TIMESTAMP, TIMESTAMP_COL)
    inputs = [c for c in featured.columns if c not in PREDICTION_COLUMNS]
    with_outcomes = featured.join(_outcomes(spark, catalog), "application_id", "left")
    return with_outcomes.select(*PREDICTION_COLUMNS, *inputs, *OUTCOME_COLUMNS)


def build_monitored_predictions(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    *,
    table_name: str = MONITORED_PREDICTIONS,
    features_fn: FeaturesFn | None = None,
) -> SourceReport:
    """Bring ``table_name`` up to date with ``gold.predictions`` and ``gold.labels``.

    New predictions are inserted with their inputs (an insert-only MERGE on the prediction's
    key, so a build that stops half-way and runs again inserts nothing twice); outcomes
    observed since are then filled into the rows still waiting for one.
    """
    for name in (GOLD_PREDICTIONS, SILVER_LOAN_APPLICATIONS, GOLD_LABELS):
        if not catalog.exists(spark, name):
            raise FileNotFoundError(f"no table {name} at {catalog.path(name)}")
    existing = catalog.read(spark, table_name) if catalog.exists(spark, table_name) else None
    fresh = new_predictions(spark, settings, catalog, existing, features_fn=features_fn).persist()
    try:
        inserted = fresh.count()
        if existing is None:
            create_if_missing(
                spark,
                catalog,
                table_name,
                fresh.limit(0),
                comment="Each prediction with the model's inputs as scored, the application's "
                "time and the outcome once observed",
            )
        if inserted:
            on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in KEYS)
            (
                DeltaTable.forPath(spark, catalog.path(table_name))
                .alias("t")
                .merge(fresh.alias("s"), on)
                .whenNotMatchedInsertAll()
                .execute()
            )
    finally:
        fresh.unpersist()
    labelled = 0
    if existing is not None:
        waiting = catalog.read(spark, table_name).where(F.col(LABEL_COL).isNull())
        observed = waiting.select(*KEYS).join(_outcomes(spark, catalog), "application_id").persist()
        try:
            labelled = observed.count()
            if labelled:
                on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in KEYS)
                (
                    DeltaTable.forPath(spark, catalog.path(table_name))
                    .alias("t")
                    .merge(observed.alias("s"), on)
                    .whenMatchedUpdate(
                        condition="t.defaulted IS NULL",
                        set={"defaulted": "s.defaulted", "observed_at": "s.observed_at"},
                    )
                    .execute()
                )
        finally:
            observed.unpersist()
    register_table(spark, catalog, table_name)
    report = SourceReport(table_name, inserted, labelled)
    log.info(report.summary())
    return report
