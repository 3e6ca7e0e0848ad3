"""Score loan applications with the registered model and write the predictions to Delta.

Two ways in, one write path:

* :func:`score_batch` scores the applications of ``silver.loan_applications`` in a time range,
  or every application not yet scored by the model version in use.
* :func:`start_scoring_stream` reads ``silver.loan_applications`` as a Structured Streaming
  source and scores each micro-batch (``foreachBatch``) as the pipeline lands new rows.

Both resolve the model to a concrete registered version first (``models:/<name>@champion`` by
default; the stream resolves the alias again at every micro-batch, so a promotion takes effect
without a restart), join the point-in-time features of each application (entity rows are
``customer_id`` and ``event_timestamp = applied_at``; the provider is a parameter, Feast by
default) and score in Spark with :func:`mlflow.pyfunc.spark_udf`.

**The score** is the probability of class 1 (default). Models are logged with
``pyfunc_predict_fn="predict_proba"``, so the pyfunc output is an ``(n, 2)`` array: the UDF
returns ``array<double>`` and the score is element 1. A model whose signature declares a single
output column is taken to return the probability itself.

**Idempotence**: ``gold.predictions`` is written by an insert-only MERGE keyed by
``(application_id, model_version)``. Re-running a batch, or replaying a micro-batch after a
crash, inserts nothing twice; scoring with a new version adds that version's rows beside the old.

**Streaming source**: ``silver.loan_applications`` is read with ``skipChangeCommits``: commits
that only add rows (new applications) are scored; a commit that rewrites existing rows (an
in-place correction) is skipped, so corrections are re-scored only by a batch run over the range.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lakehouse.catalog import (
    GOLD_CUSTOMER_PROFILE,
    GOLD_CUSTOMER_TRANSACTIONS,
    GOLD_LABELS,
    GOLD_PREDICTION_OUTCOMES,
    GOLD_PREDICTIONS,
    SILVER_LOAN_APPLICATIONS,
    TableCatalog,
)
from lakehouse.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)

#: Registry alias scored by default.
CHAMPION = "champion"
#: MLflow refuses to deserialize scikit-learn models (skops too) unless this is "true".
ALLOW_DESERIALIZATION_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
#: Gold feature tables whose Delta versions each prediction records.
FEATURE_TABLES: tuple[str, ...] = (GOLD_CUSTOMER_PROFILE, GOLD_CUSTOMER_TRANSACTIONS)
#: MERGE key of ``gold.predictions``.
PREDICTION_KEYS: tuple[str, ...] = ("application_id", "model_version")
#: Columns of ``silver.loan_applications`` handed to the feature provider besides the entity.
REQUEST_COLUMNS: tuple[str, ...] = ("application_id", "loan_amount", "term_months", "purpose")
SCORING_MODES: tuple[str, ...] = ("batch", "stream")
#: Checkpoint sub-folder of the scoring stream under ``settings.checkpoints_dir``.
CHECKPOINT_NAME = "scoring"

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

# MLflow signature column types -> Spark SQL types.
_SPARK_TYPES: dict[str, str] = {
    "double": "double",
    "float": "float",
    "long": "bigint",
    "integer": "int",
    "string": "string",
    "boolean": "boolean",
    "datetime": "timestamp",
}


@dataclass(frozen=True)
class DecisionThresholds:
    """Score bands of the decision: approve below ``approve_below``, decline from ``decline_at``.

    Scores in between (and a missing score) are sent to manual review.
    """

    approve_below: float = 0.2
    decline_at: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.approve_below <= self.decline_at <= 1.0:
            raise ValueError(
                "thresholds must satisfy 0 <= approve_below <= decline_at <= 1, got "
                f"approve_below={self.approve_below}, decline_at={self.decline_at}"
            )

    def decide(self, score: Column) -> Column:
        """The decision column for a score column."""
        return (
            F.when(score < F.lit(self.approve_below), F.lit("approve"))
            .when(score >= F.lit(self.decline_at), F.lit("decline"))
            .otherwise(F.lit("review"))
        )


@dataclass(frozen=True)
class ResolvedModel:
    """A registered model version, resolved from a URI or alias at a point in time.

    Attributes:
        name: registered model name.
        version: the concrete version.
        run_id: the MLflow run that logged it.
        uri: ``models:/<name>/<version>``, which never moves.
        input_columns: ``(column, Spark SQL type)`` pairs of the model signature, in order.
        proba_pair: the pyfunc output is ``(n, 2)`` class probabilities (else one column).
    """

    name: str
    version: int
    run_id: str
    uri: str
    input_columns: tuple[tuple[str, str], ...]
    proba_pair: bool = True


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


# --- Model resolution ------------------------------------------------------------------------
def default_model_uri(settings: Settings, alias: str = CHAMPION) -> str:
    """``models:/<model_name>@<alias>``."""
    return f"models:/{settings.model_name}@{alias}"


def _client(settings: Settings) -> Any:
    """An MLflow client on the settings' stores; MLflow's global URIs point there too."""
    import os

    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
    os.environ.setdefault(ALLOW_DESERIALIZATION_ENV, "true")
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def parse_model_uri(uri: str) -> tuple[str, str | None, int | None]:
    """``models:/name@alias`` -> ``(name, alias, None)``; ``models:/name/3`` -> ``(name, None, 3)``.

    Predictions name a registered version, so only registry URIs are accepted.
    """
    prefix = "models:/"
    rest = uri[len(prefix) :] if uri.startswith(prefix) else ""
    if "@" in rest and "/" not in rest:
        name, alias = rest.split("@", 1)
        if name and alias:
            return name, alias, None
    elif rest.count("/") == 1:
        name, version = rest.split("/")
        if name and version.isdigit():
            return name, None, int(version)
    raise ValueError(
        f"model URI must be models:/<name>@<alias> or models:/<name>/<version>, got {uri!r}"
    )


def resolve_model(settings: Settings, model_uri: str | None = None) -> ResolvedModel:
    """Resolve ``model_uri`` (default: the champion) to a concrete registered version.

    Raises:
        LookupError: the alias is not set or the version does not exist.
        ValueError: the URI is not a registry URI, or the model has no input signature.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    uri = model_uri or default_model_uri(settings)
    name, alias, version = parse_model_uri(uri)
    client = _client(settings)
    try:
        if alias is not None:
            mv = client.get_model_version_by_alias(name, alias)
        else:
            mv = client.get_model_version(name, str(version))
    except MlflowException as exc:
        what = f"alias {alias!r}" if alias is not None else f"version {version}"
        raise LookupError(
            f"registered model {name!r} has no {what}: train and promote a model first "
            f"({str(exc).splitlines()[0]})"
        ) from exc
    concrete = f"models:/{name}/{mv.version}"
    signature = get_model_info(concrete).signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        raise ValueError(f"{concrete} has no input signature with column names: cannot score it")
    columns: list[tuple[str, str]] = []
    for spec in signature.inputs.inputs:
        type_name = getattr(spec.type, "name", str(spec.type))
        if type_name not in _SPARK_TYPES:
            raise ValueError(f"{concrete}: input {spec.name!r} has unsupported type {type_name}")
        columns.append((str(spec.name), _SPARK_TYPES[type_name]))
    return ResolvedModel(
        name=name,
        version=int(mv.version),
        run_id=str(mv.run_id),
        uri=concrete,
        input_columns=tuple(columns),
        proba_pair=_is_proba_pair(signature),
    )


def _is_proba_pair(signature: Any) -> bool:
    """Whether the signature's output is two class probabilities per row (the default)."""
    outputs = signature.outputs
    if outputs is None:
        return True
    specs = outputs.inputs
    if outputs.is_tensor_spec():
        shape = tuple(specs[0].shape)
        return len(shape) == 2 and shape[-1] == 2
    if len(specs) == 1:
        return False
    raise ValueError(f"model output {outputs} is neither (n, 2) probabilities nor one column")


class ModelCache:
    """Loaded scoring UDFs by model version, so a version is loaded once per process."""

    def __init__(self) -> None:
        self._udfs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def udf(self, spark: SparkSession, model: ResolvedModel) -> Any:
        """The ``spark_udf`` of ``model`` (built on first use)."""
        import mlflow.pyfunc

        with self._lock:
            if model.uri not in self._udfs:
                log.info("loading %s for scoring", model.uri)
                self._udfs[model.uri] = mlflow.pyfunc.spark_udf(
                    spark,
                    model.uri,
                    result_type="array<double>" if model.proba_pair else "double",
                    env_manager="local",
                    extra_env={ALLOW_DESERIALIZATION_ENV: "true"},
                )
            return self._udfs[model.uri]

    def __len__(self) -> int:
        return len(self._udfs)


# --- Selection and features ------------------------------------------------------------------
def table_exists(spark: SparkSession, catalog: TableCatalog, name: str) -> bool:
    """Whether ``name`` has a Delta log, looked up on the file system at every call.

    Unlike a cached Delta log, this sees a table that another process created after this one
    first looked, which a long-running stream needs.
    """
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    log_dir = jvm.org.apache.hadoop.fs.Path(f"{catalog.path(name)}/_delta_log")
    fs = log_dir.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return bool(fs.exists(log_dir))


def _as_utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


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
    if start is not None and end is not None and _as_utc(start) >= _as_utc(end):
        raise ValueError(f"start ({start.isoformat()}) must be before end ({end.isoformat()})")
    if not table_exists(spark, catalog, SILVER_LOAN_APPLICATIONS):
        raise FileNotFoundError(
            f"no table {SILVER_LOAN_APPLICATIONS} at {catalog.path(SILVER_LOAN_APPLICATIONS)}: "
            "run the pipeline first"
        )
    apps = catalog.read(spark, SILVER_LOAN_APPLICATIONS)
    if start is not None:
        apps = apps.where(F.col("applied_at") >= F.lit(_as_utc(start)))
    if end is not None:
        apps = apps.where(F.col("applied_at") < F.lit(_as_utc(end)))
    if unscored_by is not None and table_exists(spark, catalog, GOLD_PREDICTIONS):
        scored = (
            catalog.read(spark, GOLD_PREDICTIONS)
            .where(F.col("model_version") == F.lit(unscored_by))
            .select("application_id")
        )
        apps = apps.join(scored, "application_id", "left_anti")
    return apps


def feature_versions(
    spark: SparkSession, catalog: TableCatalog, tables: Sequence[str] = FEATURE_TABLES
) -> dict[str, int]:
    """The current Delta version of each gold feature table that exists."""
    return {
        name: catalog.version(spark, name) for name in tables if table_exists(spark, catalog, name)
    }


def _default_features_fn() -> FeaturesFn:
    from lakehouse.features import historical_features

    return historical_features


def entity_frame(applications: DataFrame) -> DataFrame:
    """The entity rows of the feature provider: the entity, its event time and the request."""
    missing = [
        c for c in ("customer_id", "applied_at", *REQUEST_COLUMNS) if c not in applications.columns
    ]
    if missing:
        raise ValueError(f"applications lack column(s): {', '.join(missing)}")
    return applications.select(
        "customer_id",
        F.col("applied_at").alias("event_timestamp"),
        *REQUEST_COLUMNS,
    )


# --- Scoring ---------------------------------------------------------------------------------
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

    Args:
        applications: rows shaped like ``silver.loan_applications``.
        model: the resolved version to score with.
        cache: where the model's UDF is loaded once.
        features_fn: the point-in-time feature provider (default: Feast's
            :func:`lakehouse.features.historical_features`).
        versions: gold table -> Delta version recorded in ``feature_versions``.
        thresholds: decision bands; :class:`DecisionThresholds` by default.
        scoring_mode: ``batch`` or ``stream``.
        scored_at: the time stamped on every row (default: now).
    """
    if scoring_mode not in SCORING_MODES:
        raise ValueError(f"scoring_mode must be one of {', '.join(SCORING_MODES)}")
    thresholds = thresholds or DecisionThresholds()
    provider = features_fn or _default_features_fn()
    featured = provider(spark, settings, entity_frame(applications))
    missing = [name for name, _ in model.input_columns if name not in featured.columns]
    if missing:
        raise ValueError(
            f"{model.uri} needs column(s) the features do not provide: {', '.join(missing)}"
        )
    inputs = F.struct(*[F.col(name).cast(kind).alias(name) for name, kind in model.input_columns])
    output = cache.udf(spark, model)(inputs)
    score = output.getItem(1) if model.proba_pair else output
    stamp = _as_utc(scored_at or datetime.now(UTC))
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


def write_predictions(
    spark: SparkSession, catalog: TableCatalog, predictions: DataFrame
) -> dict[str, int]:
    """Insert-only MERGE into ``gold.predictions`` on (application_id, model_version).

    Rows whose key is already there are left alone, so a re-run inserts nothing. Returns the
    MERGE's metrics (``numSourceRows``, ``numTargetRowsInserted``, ...); empty when Delta
    committed nothing.
    """
    from lakehouse.tables import create_if_missing, last_operation_metrics, merge_upsert

    create_if_missing(
        spark,
        catalog,
        GOLD_PREDICTIONS,
        spark.createDataFrame([], PREDICTIONS_SCHEMA),
        comment="Model predictions of loan applications, one row per application and version",
    )
    before = catalog.version(spark, GOLD_PREDICTIONS)
    source = predictions.dropDuplicates(list(PREDICTION_KEYS))
    merge_upsert(spark, catalog, GOLD_PREDICTIONS, source, list(PREDICTION_KEYS), insert_only=True)
    if catalog.version(spark, GOLD_PREDICTIONS) == before:
        return {}
    return last_operation_metrics(spark, catalog, GOLD_PREDICTIONS)


def _score_and_write(
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
) -> ScoringReport:
    """Score ``applications`` with ``model``, MERGE the predictions, report what was written."""
    versions = feature_versions(spark, catalog)
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
    metrics = write_predictions(spark, catalog, predictions)
    return ScoringReport(
        model_name=model.name,
        model_version=model.version,
        run_id=model.run_id,
        rows_scored=metrics.get("numSourceRows", 0),
        rows_inserted=metrics.get("numTargetRowsInserted", 0),
        feature_versions=versions,
        scoring_mode=scoring_mode,
    )


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

    Args:
        arrow_batch_size: ``spark.sql.execution.arrow.maxRecordsPerBatch`` for the scoring
            UDF (rows per pandas batch handed to the model); the session's value when ``None``.
    """
    if arrow_batch_size is not None:
        if arrow_batch_size < 1:
            raise ValueError(f"arrow_batch_size must be >= 1, got {arrow_batch_size}")
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch_size))
    model = resolve_model(settings, model_uri)
    log.info("scoring with %s (run %s)", model.uri, model.run_id)
    apps = select_applications(spark, catalog, start=start, end=end, unscored_by=model.version)
    report = _score_and_write(
        spark,
        settings,
        catalog,
        apps,
        model,
        cache=cache or ModelCache(),
        features_fn=features_fn,
        thresholds=thresholds,
        scoring_mode="batch",
    )
    log.info(
        "batch scoring with version %d: %d scored, %d inserted",
        report.model_version,
        report.rows_scored,
        report.rows_inserted,
    )
    return report


# --- Streaming -------------------------------------------------------------------------------
class MicroBatchScorer:
    """The ``foreachBatch`` function of the scoring stream.

    Resolves the model URI (an alias by default) at every micro-batch, so a promotion is picked
    up by the next micro-batch; the UDF of each version is loaded once (:class:`ModelCache`).
    """

    def __init__(
        self,
        settings: Settings,
        catalog: TableCatalog,
        *,
        model_uri: str | None = None,
        features_fn: FeaturesFn | None = None,
        thresholds: DecisionThresholds | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.model_uri = model_uri or default_model_uri(settings)
        self.features_fn = features_fn
        self.thresholds = thresholds or DecisionThresholds()
        self.cache = ModelCache()
        self.reports: list[ScoringReport] = []

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        """Score one micro-batch and MERGE it into ``gold.predictions``."""
        spark = batch.sparkSession
        log.info("scoring batch %d started", batch_id)
        model = resolve_model(self.settings, self.model_uri)
        apps = batch.dropDuplicates(["application_id"])
        report = _score_and_write(
            spark,
            self.settings,
            self.catalog,
            apps,
            model,
            cache=self.cache,
            features_fn=self.features_fn,
            thresholds=self.thresholds,
            scoring_mode="stream",
        )
        self.reports.append(report)
        log.info(
            "scoring batch %d done: version %d, %d scored, %d inserted",
            batch_id,
            report.model_version,
            report.rows_scored,
            report.rows_inserted,
        )


def scoring_checkpoint(settings: Settings) -> str:
    """The checkpoint folder of the scoring stream."""
    return str(settings.checkpoints_dir / CHECKPOINT_NAME)


def start_scoring_stream(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    *,
    available_now: bool = False,
    processing_time: str | None = None,
    model_uri: str | None = None,
    features_fn: FeaturesFn | None = None,
    thresholds: DecisionThresholds | None = None,
    checkpoint: str | None = None,
    max_files_per_trigger: int | None = None,
) -> StreamingQuery:
    """Start the stream ``silver.loan_applications`` -> score -> ``gold.predictions``.

    Exactly one trigger: ``available_now`` (catch up, then stop) or ``processing_time``
    (for example ``"1 second"``; runs until stopped). The checkpoint defaults to
    ``settings.checkpoints_dir/scoring``. Returns the running query.
    """
    if available_now == (processing_time is not None):
        raise ValueError("give exactly one trigger: available_now=True or processing_time")
    if processing_time is not None and not processing_time.strip():
        raise ValueError("processing_time must be an interval such as '1 second'")
    if not table_exists(spark, catalog, SILVER_LOAN_APPLICATIONS):
        raise FileNotFoundError(
            f"no table {SILVER_LOAN_APPLICATIONS} at {catalog.path(SILVER_LOAN_APPLICATIONS)}: "
            "run the pipeline first"
        )
    scorer = MicroBatchScorer(
        settings, catalog, model_uri=model_uri, features_fn=features_fn, thresholds=thresholds
    )
    reader = spark.readStream.format("delta").option("skipChangeCommits", "true")
    if max_files_per_trigger is not None:
        reader = reader.option("maxFilesPerTrigger", str(max_files_per_trigger))
    source = reader.load(catalog.path(SILVER_LOAN_APPLICATIONS))
    writer = (
        source.writeStream.queryName("scoring")
        .foreachBatch(scorer)
        .option("checkpointLocation", checkpoint or scoring_checkpoint(settings))
    )
    if processing_time is None:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=processing_time)
    query = writer.start()
    log.info("scoring stream started (%s)", "available-now" if available_now else processing_time)
    return query


# --- Outcomes --------------------------------------------------------------------------------
def prediction_outcomes(spark: SparkSession, catalog: TableCatalog) -> DataFrame:
    """Build ``gold.prediction_outcomes``: every prediction beside its observed outcome.

    One row per prediction (application and model version); ``defaulted`` and ``observed_at``
    come from ``gold.labels`` and are null while the outcome is not observed yet. The table is
    rewritten (one new Delta version) and registered; the rebuilt table is returned.
    """
    from lakehouse.tables import overwrite

    for name in (GOLD_PREDICTIONS, GOLD_LABELS):
        if not table_exists(spark, catalog, name):
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
