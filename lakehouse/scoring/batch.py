"""Batch scoring: the applications of a time range, or all not yet scored, in one MERGE.

The model URI is resolved to a concrete version first and only the applications that version
has not scored are selected, so a re-run does no work at all.
"""

from __future__ import annotations

import logging
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.platform.catalog import GOLD_PREDICTIONS, SILVER_LOAN_APPLICATIONS, TableCatalog
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import delta_version
from lakehouse.scoring.decisions import DecisionThresholds
from lakehouse.scoring.predictions import (
    ARROW_BATCH_SIZE,
    FeaturesFn,
    ModelCache,
    ScoringReport,
    StepTimer,
    as_utc,
    feature_versions,
    score_and_write,
)
from lakehouse.scoring.resolution import resolve_model

log = logging.getLogger(__name__)


def _check_range(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and as_utc(start) >= as_utc(end):
        raise ValueError(f"start ({start.isoformat()}) must be before end ({end.isoformat()})")


def select_applications(
    spark: SparkSession,
    catalog: TableCatalog,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    unscored_by: int | None = None,
) -> DataFrame:
    """Applications of ``silver.loan_applications`` to score.

    Args:
        start, end: keep ``start <= applied_at < end`` (naive datetimes are UTC).
        unscored_by: keep only applications with no prediction of this model version yet.
    """
    _check_range(start, end)
    if not catalog.exists(spark, SILVER_LOAN_APPLICATIONS):
        raise FileNotFoundError(
            f"no table {SILVER_LOAN_APPLICATIONS} at {catalog.path(SILVER_LOAN_APPLICATIONS)}: "
            "run the pipeline first"
        )
    apps = catalog.read(spark, SILVER_LOAN_APPLICATIONS)
    if start is not None:
        apps = apps.where(F.col("applied_at") >= F.lit(as_utc(start)))
    if end is not None:
        apps = apps.where(F.col("applied_at") < F.lit(as_utc(end)))
    if unscored_by is not None and delta_version(spark, catalog, GOLD_PREDICTIONS) >= 0:
        scored = (
            catalog.read(spark, GOLD_PREDICTIONS)
            .where(F.col("model_version") == F.lit(unscored_by))
            .select("application_id")
        )
        apps = apps.join(scored, "application_id", "left_anti")
    return apps


def score_batch(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    *,
    model_uri: str | None = None,
    features_fn: FeaturesFn | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    thresholds: DecisionThresholds | None = None,
    cache: ModelCache | None = None,
    arrow_batch_size: int | None = None,
) -> ScoringReport:
    """Score applications of ``silver.loan_applications`` and MERGE them into ``gold.predictions``.

    The model (default ``models:/<model_name>@champion``) is resolved to a concrete version
    first. Without ``start``/``end`` every application this version has not scored yet is
    scored; with them, the applications with ``start <= applied_at < end`` not yet scored by it.
    When there is none (a re-run), nothing else runs: no features, no model, no MERGE.

    Args:
        arrow_batch_size: rows per pandas batch handed to the model
            (``spark.sql.execution.arrow.maxRecordsPerBatch`` while scoring, the session's value
            restored afterwards); :data:`ARROW_BATCH_SIZE` when ``None``.
    """
    rows = ARROW_BATCH_SIZE if arrow_batch_size is None else arrow_batch_size
    if rows < 1:
        raise ValueError(f"arrow_batch_size must be >= 1, got {rows}")
    _check_range(start, end)  # before the registry is asked for the model
    timer = StepTimer()
    model = resolve_model(settings, model_uri)
    log.info("scoring with %s (run %s)", model.uri, model.run_id)
    apps = select_applications(spark, catalog, start=start, end=end, unscored_by=model.version)
    nothing_to_score = apps.isEmpty()
    timer.lap("resolve and select")
    if nothing_to_score:
        # A re-run: no features to read, no model to load into the Python workers, no MERGE.
        log.info("batch scoring with version %d: nothing to score", model.version)
        return ScoringReport.of(model, feature_versions(spark, catalog), "batch", {})
    report = score_and_write(
        spark,
        settings,
        catalog,
        apps,
        model,
        cache=cache or ModelCache(),
        features_fn=features_fn,
        thresholds=thresholds,
        scoring_mode="batch",
        arrow_batch_size=rows,
        timer=timer,
    )
    log.info(
        "batch scoring with version %d: %d scored, %d inserted in %.2f s (%s)",
        report.model_version,
        report.rows_scored,
        report.rows_inserted,
        timer.total(),
        timer,
    )
    return report
