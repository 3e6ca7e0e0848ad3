"""Predictions of loan applications, and their one write path into ``gold.predictions``.

Batch (:mod:`lakehouse.scoring.batch`) and stream (:mod:`lakehouse.scoring.stream`) scoring
share everything here: the point-in-time features of each application, the model's Spark UDF,
the decision, and an idempotent MERGE, so a re-run or a replayed micro-batch writes nothing
twice. ``gold.prediction_outcomes`` puts each prediction beside its observed outcome.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow.pyfunc
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lakehouse.features.store import historical_features
from lakehouse.models.config import REQUEST_COLUMNS
from lakehouse.models.tracking import ALLOW_DESERIALIZATION_ENV
from lakehouse.platform.catalog import (
    GOLD_CUSTOMER_PROFILE,
    GOLD_CUSTOMER_TRANSACTIONS,
    GOLD_LABELS,
    GOLD_PREDICTION_OUTCOMES,
    GOLD_PREDICTIONS,
    TableCatalog,
    register_table,
)
from lakehouse.platform.crash import crash_point
from lakehouse.platform.errors import on_target
from lakehouse.platform.retry import retry_on_conflict
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import create_if_missing, delta_version, merge_metrics, overwrite
from lakehouse.scoring.decisions import DecisionThresholds
from lakehouse.scoring.resolution import ResolvedModel

log = logging.getLogger(__name__)

#: Gold feature tables whose Delta versions each prediction records.
FEATURE_TABLES: tuple[str, ...] = (GOLD_CUSTOMER_PROFILE, GOLD_CUSTOMER_TRANSACTIONS)
#: MERGE key of ``gold.predictions``.
PREDICTION_KEYS: tuple[str, ...] = ("application_id", "model_version")
#: Columns of ``silver.loan_applications`` handed to the feature provider besides the entity.
ENTITY_REQUEST_COLUMNS: tuple[str, ...] = ("application_id", *REQUEST_COLUMNS)
SCORING_MODES: tuple[str, ...] = ("batch", "stream")
#: Spark setting that caps the rows of each Arrow batch handed to the scoring UDF.
ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"
#: Rows per Arrow batch while scoring (Spark's default is 10,000): larger batches spread the
#: fixed cost of each model call over more rows.
ARROW_BATCH_SIZE = 50_000

PREDICTIONS_SCHEMA = StructType(
    [
        StructField("application_id", StringType(), False),
        StructField("customer_id", StringType(), False),
        StructField("score", DoubleType(), True),  # probability of default, 0..1
        StructField("decision", StringType(), False),  # approve | review | decline
        StructField("model_name", StringType(), False),
        StructField("model_version", IntegerType(), False),
        StructField("run_id", StringType(), False),  # MLflow run that logged the model
        StructField("scored_at", TimestampType(), False),
        # JSON object: gold feature table -> Delta version current when the features were read.
        StructField("feature_versions", StringType(), False),
        StructField("scoring_mode", StringType(), False),  # batch | stream
    ]
)

PREDICTION_OUTCOMES_SCHEMA = StructType(
    [
        StructField("application_id", StringType(), False),
        StructField("customer_id", StringType(), False),
        StructField("model_name", StringType(), False),
        StructField("model_version", IntegerType(), False),
        StructField("scoring_mode", StringType(), False),
        StructField("scored_at", TimestampType(), False),
        StructField("score", DoubleType(), True),
        StructField("decision", StringType(), False),
        StructField("defaulted", IntegerType(), True),  # null until the outcome is observed
        StructField("observed_at", TimestampType(), True),
    ]
)

#: ``features_fn(spark, settings, entity_df) -> DataFrame``: the same rows, features appended.
FeaturesFn = Callable[[SparkSession, Settings, DataFrame], DataFrame]


@dataclass(frozen=True)
class ScoringReport:
    """What one batch (or micro-batch) of scoring did."""

    model_name: str
    model_version: int
    run_id: str
    rows_scored: int
    rows_inserted: int
    feature_versions: dict[str, int] = field(default_factory=dict)
    scoring_mode: str = "batch"

    @classmethod
    def of(
        cls,
        model: ResolvedModel,
        versions: dict[str, int],
        scoring_mode: str,
        metrics: dict[str, int],
    ) -> ScoringReport:
        """The report of scoring with ``model`` whose MERGE returned ``metrics`` (none: {})."""
        return cls(
            model_name=model.name,
            model_version=model.version,
            run_id=model.run_id,
            rows_scored=metrics.get("numSourceRows", 0),
            rows_inserted=metrics.get("numTargetRowsInserted", 0),
            feature_versions=versions,
            scoring_mode=scoring_mode,
        )


class StepTimer:
    """Wall time of the named steps of one (micro-)batch, for its log line."""

    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        """Close the step ``name`` now."""
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._last
        self._last = now

    def total(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.started

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in self.laps.items())


class ModelCache:
    """Loaded scoring UDFs by model version, so a version is loaded once per process.

    Each UDF returns one ``double`` per row: the first output column of the model, which is the
    probability of class 0 of a two-class model (:func:`score_features` turns it into the
    score) or the single output of a one-column model. No thread count is set: Spark starts its
    Python workers with ``OMP_NUM_THREADS = spark.task.cpus``, so concurrent tasks do not
    oversubscribe the cores.
    """

    def __init__(self) -> None:
        self._udfs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def udf(self, spark: SparkSession, model: ResolvedModel) -> Any:
        """The ``spark_udf`` of ``model`` (built on first use)."""
        with self._lock:
            if model.uri not in self._udfs:
                log.info("loading %s for scoring", model.uri)
                self._udfs[model.uri] = mlflow.pyfunc.spark_udf(
                    spark,
                    model.uri,
                    result_type="double",
                    env_manager="local",
                    extra_env={ALLOW_DESERIALIZATION_ENV: "true"},
                )
            return self._udfs[model.uri]

    def __len__(self) -> int:
        return len(self._udfs)


def as_utc(ts: datetime) -> datetime:
    """``ts`` in UTC; a naive datetime is taken to be UTC already."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


# --- Features --------------------------------------------------------------------------------
def feature_versions(
    spark: SparkSession, catalog: TableCatalog, tables: Sequence[str] = FEATURE_TABLES
) -> dict[str, int]:
    """The current Delta version of each gold feature table that exists (read from its log)."""
    versions = {name: delta_version(spark, catalog, name) for name in tables}
    return {name: version for name, version in versions.items() if version >= 0}


def entity_frame(applications: DataFrame) -> DataFrame:
    """The entity rows of the feature provider: the entity, its event time and the request."""
    missing = [
        c
        for c in ("customer_id", "applied_at", *ENTITY_REQUEST_COLUMNS)
        if c not in applications.columns
    ]
    if missing:
        raise ValueError(f"applications lack column(s): {', '.join(missing)}")
    return applications.select(
        "customer_id",
        F.col("applied_at").alias("event_timestamp"),
        *ENTITY_REQUEST_COLUMNS,
    )


def featured_applications(
    spark: SparkSession,
    settings: Settings,
    applications: DataFrame,
    model: ResolvedModel,
    *,
    features_fn: FeaturesFn | None = None,
) -> DataFrame:
    """The rows :func:`score_features` scores: each application once, with the model's inputs.

    Lazy. The provider's output is cut to ``application_id``, ``customer_id`` and the model's
    input columns, then de-duplicated by ``application_id``: a shuffle, which also spreads a
    large input over ``spark.sql.shuffle.partitions`` tasks for the scoring UDF, whatever the
    partitioning of the features.

    Args:
        applications: rows shaped like ``silver.loan_applications``.
        model: the resolved version whose inputs are kept.
        features_fn: the point-in-time feature provider (default: Feast's
            :func:`lakehouse.features.store.historical_features`).
    """
    provider = features_fn or historical_features
    featured = provider(spark, settings, entity_frame(applications))
    _check_inputs(featured, model)
    needed = dict.fromkeys(["application_id", "customer_id", *(n for n, _ in model.input_columns)])
    return featured.select(*needed).dropDuplicates(["application_id"])


# --- Scoring ---------------------------------------------------------------------------------
@contextmanager
def arrow_batch_rows(spark: SparkSession, rows: int = ARROW_BATCH_SIZE) -> Iterator[None]:
    """Hand the scoring UDF ``rows`` rows per Arrow batch while the block runs.

    ``spark.sql.execution.arrow.maxRecordsPerBatch`` is read when a query executes, so the write
    that runs the scoring goes inside the block; the session's value is restored after it.
    """
    if rows < 1:
        raise ValueError(f"arrow_batch_size must be >= 1, got {rows}")
    previous = spark.conf.get(ARROW_BATCH_CONF)
    spark.conf.set(ARROW_BATCH_CONF, str(rows))
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(ARROW_BATCH_CONF)
        else:
            spark.conf.set(ARROW_BATCH_CONF, previous)


def _check_inputs(featured: DataFrame, model: ResolvedModel) -> None:
    missing = [name for name, _ in model.input_columns if name not in featured.columns]
    if missing:
        raise ValueError(
            f"{model.uri} needs column(s) the features do not provide: {', '.join(missing)}"
        )


def score_features(
    spark: SparkSession,
    featured: DataFrame,
    model: ResolvedModel,
    *,
    cache: ModelCache,
    versions: dict[str, int] | None = None,
    thresholds: DecisionThresholds | None = None,
    scoring_mode: str = "batch",
    scored_at: datetime | None = None,
) -> DataFrame:
    """Predictions (:data:`PREDICTIONS_SCHEMA`) of rows that carry the model inputs; lazy.

    The scoring step alone: one prediction per row of ``featured`` (no de-duplication), which
    needs ``application_id``, ``customer_id`` and every input column of the model's signature.
    Run it inside :func:`arrow_batch_rows` to size the batches handed to the model.

    Args:
        featured: the applications with their features.
        model: the resolved version to score with.
        cache: where the model's UDF is loaded once.
        versions: gold table -> Delta version recorded in ``feature_versions``.
        thresholds: decision bands; :class:`DecisionThresholds` by default.
        scoring_mode: ``batch`` or ``stream``.
        scored_at: the time stamped on every row (default: now).
    """
    if scoring_mode not in SCORING_MODES:
        raise ValueError(f"scoring_mode must be one of {', '.join(SCORING_MODES)}")
    _check_inputs(featured, model)
    thresholds = thresholds or DecisionThresholds()
    inputs = F.struct(*[F.col(name).cast(kind).alias(name) for name, kind in model.input_columns])
    output = cache.udf(spark, model)(inputs)
    # The score is P(default) = 1 - p0: the UDF returns only p0 as a double, because an
    # array<double> of both probabilities costs as much CPU (Python lists) as the model itself.
    # scikit-learn computes p0 as 1 - p1, so 1 - p0 is p1 to within one rounding.
    score = F.lit(1.0) - output if model.proba_pair else output
    stamp = as_utc(scored_at or datetime.now(UTC))
    versions_json = json.dumps(versions or {}, sort_keys=True)
    scored = featured.select("application_id", "customer_id", score.cast("double").alias("score"))
    return scored.select(
        "application_id",
        "customer_id",
        "score",
        thresholds.decide(F.col("score")).alias("decision"),
        F.lit(model.name).alias("model_name"),
        F.lit(model.version).cast("int").alias("model_version"),
        F.lit(model.run_id).alias("run_id"),
        F.lit(stamp).cast("timestamp").alias("scored_at"),
        F.lit(versions_json).alias("feature_versions"),
        F.lit(scoring_mode).alias("scoring_mode"),
    )


def score_applications(
    spark: SparkSession,
    settings: Settings,
    applications: DataFrame,
    model: ResolvedModel,
    *,
    cache: ModelCache,
    features_fn: FeaturesFn | None = None,
    versions: dict[str, int] | None = None,
    thresholds: DecisionThresholds | None = None,
    scoring_mode: str = "batch",
    scored_at: datetime | None = None,
) -> DataFrame:
    """Predictions (:data:`PREDICTIONS_SCHEMA`) of ``applications`` by ``model``; lazy.

    One prediction per application: :func:`featured_applications` (which takes
    ``applications`` and ``features_fn``), then :func:`score_features` (which takes the other
    arguments); ``scoring_mode`` is checked before any feature is read.
    """
    if scoring_mode not in SCORING_MODES:
        raise ValueError(f"scoring_mode must be one of {', '.join(SCORING_MODES)}")
    featured = featured_applications(spark, settings, applications, model, features_fn=features_fn)
    return score_features(
        spark,
        featured,
        model,
        cache=cache,
        versions=versions,
        thresholds=thresholds,
        scoring_mode=scoring_mode,
        scored_at=scored_at,
    )


# --- Writing ---------------------------------------------------------------------------------
def write_predictions(
    spark: SparkSession, catalog: TableCatalog, predictions: DataFrame
) -> dict[str, int]:
    """Insert-only MERGE into ``gold.predictions`` on (application_id, model_version).

    Rows whose key is already there are left alone, so a re-run inserts nothing; a key repeated
    in ``predictions`` is inserted once. Returns the MERGE's metrics (``numSourceRows``,
    ``numTargetRowsInserted``, ...); empty when Delta committed nothing.
    """
    return _merge_predictions(spark, catalog, predictions.dropDuplicates(list(PREDICTION_KEYS)))


def _merge_predictions(
    spark: SparkSession,
    catalog: TableCatalog,
    source: DataFrame,
    *,
    model_version: int | None = None,
    register: bool = True,
    timer: StepTimer | None = None,
) -> dict[str, int]:
    """MERGE ``source`` (unique keys) into ``gold.predictions``, inserting only new keys.

    Keyed by (application_id, model_version) and insert-only, so re-running a batch or replaying
    a micro-batch after a crash inserts nothing twice, while a new version adds its own rows.

    Args:
        model_version: the version of every source row, if known: only the target rows of
            that version are then read (and files of other versions skipped, where Delta keeps
            statistics on ``model_version``).
        register: make ``gold.predictions`` resolve in the session's SQL catalog (a table
            created here is always registered).
        timer: where the MERGE's and the metrics' wall times are recorded.
    """
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in PREDICTION_KEYS)
    if model_version is not None:
        on += f" AND t.`model_version` = {int(model_version)}"

    def merge() -> int:
        """One attempt: the version before it, then the MERGE against the table as it is now."""
        before = delta_version(spark, catalog, GOLD_PREDICTIONS)
        if before < 0:
            create_if_missing(
                spark,
                catalog,
                GOLD_PREDICTIONS,
                spark.createDataFrame([], PREDICTIONS_SCHEMA),
                comment="Model predictions of loan applications, one row per application and "
                "version",
            )
            before = delta_version(spark, catalog, GOLD_PREDICTIONS)
        elif register:
            register_table(spark, catalog, GOLD_PREDICTIONS)
        target = DeltaTable.forPath(spark, catalog.path(GOLD_PREDICTIONS))
        target.alias("t").merge(source.alias("s"), on).whenNotMatchedInsertAll().execute()
        return before

    # Batch scoring and the scoring stream MERGE into the same table, and a MERGE that read the
    # files another one added at the same time fails with ConcurrentAppendException. Retrying is
    # safe: the MERGE is insert-only on (application_id, model_version), so the retry matches
    # the rows the other writer inserted and adds only the rest.
    with on_target(GOLD_PREDICTIONS):
        before = retry_on_conflict(GOLD_PREDICTIONS, merge)
    crash_point(f"merge:{GOLD_PREDICTIONS}")
    if timer is not None:
        timer.lap("score and merge")
    # Versions and metrics come from the Delta log files themselves: no Spark job.
    after = delta_version(spark, catalog, GOLD_PREDICTIONS, since=before)
    metrics = merge_metrics(spark, catalog, GOLD_PREDICTIONS, before, after)
    if timer is not None:
        timer.lap("metrics")
    return metrics


def score_and_write(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    applications: DataFrame,
    model: ResolvedModel,
    *,
    cache: ModelCache,
    features_fn: FeaturesFn | None,
    thresholds: DecisionThresholds | None,
    scoring_mode: str,
    arrow_batch_size: int = ARROW_BATCH_SIZE,
    register: bool = True,
    timer: StepTimer | None = None,
) -> ScoringReport:
    """Score ``applications`` with ``model``, MERGE the predictions, report what was written.

    The write path shared by batch scoring and each micro-batch of the stream.
    """
    versions = feature_versions(spark, catalog)
    if timer is not None:
        timer.lap("feature versions")
    predictions = score_applications(
        spark,
        settings,
        applications,
        model,
        cache=cache,
        features_fn=features_fn,
        versions=versions,
        thresholds=thresholds,
        scoring_mode=scoring_mode,
    )
    with arrow_batch_rows(spark, arrow_batch_size):
        metrics = _merge_predictions(
            spark,
            catalog,
            predictions,
            model_version=model.version,
            register=register,
            timer=timer,
        )
    return ScoringReport.of(model, versions, scoring_mode, metrics)


# --- Outcomes --------------------------------------------------------------------------------
def prediction_outcomes(spark: SparkSession, catalog: TableCatalog) -> DataFrame:
    """Build ``gold.prediction_outcomes``: every prediction beside its observed outcome.

    One row per prediction (application and model version); ``defaulted`` and ``observed_at``
    come from ``gold.labels`` and are null while the outcome is not observed yet. The table is
    rewritten (one new Delta version) and registered; the rebuilt table is returned.
    """
    for name in (GOLD_PREDICTIONS, GOLD_LABELS):
        if not catalog.exists(spark, name):
            raise FileNotFoundError(f"no table {name} at {catalog.path(name)}")
    predictions = catalog.read(spark, GOLD_PREDICTIONS).alias("p")
    labels = catalog.read(spark, GOLD_LABELS).select("application_id", "defaulted", "observed_at")
    joined = predictions.join(labels.alias("l"), "application_id", "left").select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in PREDICTION_OUTCOMES_SCHEMA.fields]
    )
    overwrite(
        spark,
        catalog,
        GOLD_PREDICTION_OUTCOMES,
        joined,
        comment="Predictions beside the observed outcome of each application",
    )
    return catalog.read(spark, GOLD_PREDICTION_OUTCOMES)
