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
``pyfunc_predict_fn="predict_proba"``, so the pyfunc output is an ``(n, 2)`` array of class
probabilities. The UDF returns its first column, the probability of class 0, as a ``double``, and
the score is ``1 - p0``: an ``array<double>`` result would make MLflow turn every batch into
Python lists, which costs as much CPU as the model itself. The two probabilities of a binary
classifier sum to 1 (scikit-learn computes ``p0`` as ``1 - p1``), so ``1 - p0`` is ``p1`` to
within one rounding of 1.0 (at most 1.2e-16). A model whose signature declares a single output
column is taken to return the probability itself.

**Throughput**: the UDF gets :data:`ARROW_BATCH_SIZE` rows per Arrow batch (see
:func:`arrow_batch_size`), and its input is the output of the de-duplication by application, a
shuffle, so a large input is spread over ``spark.sql.shuffle.partitions`` tasks whatever the
partitioning of the features. Spark starts its Python workers with ``OMP_NUM_THREADS`` set to
``spark.task.cpus``, so a tree model's OpenMP prediction uses one thread per task slot and
concurrent tasks do not oversubscribe the cores.

**Idempotence**: ``gold.predictions`` is written by an insert-only MERGE keyed by
``(application_id, model_version)`` that reads only the target rows of the version being
written. Re-running a batch, or replaying a micro-batch after a crash,
inserts nothing twice; scoring with a new version adds that version's rows beside the old. The
MERGE's metrics and the Delta versions recorded with each prediction are read from the Delta log
files themselves, without a Spark job (:func:`lakehouse.platform.tables.delta_version`).

**Streaming source**: ``silver.loan_applications`` is read with ``skipChangeCommits``: commits
that only add rows (new applications) are scored; a commit that rewrites existing rows (an
in-place correction) is skipped, so corrections are re-scored only by a batch run over the range.
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

from lakehouse.models.config import REQUEST_COLUMNS
from lakehouse.platform.catalog import (
    GOLD_CUSTOMER_PROFILE,
    GOLD_CUSTOMER_TRANSACTIONS,
    GOLD_LABELS,
    GOLD_PREDICTION_OUTCOMES,
    GOLD_PREDICTIONS,
    SILVER_LOAN_APPLICATIONS,
    TableCatalog,
    register_table,
)
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import create_if_missing, delta_version, merge_metrics, overwrite

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
ENTITY_REQUEST_COLUMNS: tuple[str, ...] = ("application_id", *REQUEST_COLUMNS)
SCORING_MODES: tuple[str, ...] = ("batch", "stream")
#: Checkpoint sub-folder of the scoring stream under ``settings.checkpoints_dir``.
CHECKPOINT_NAME = "scoring"
#: Spark setting that caps the rows of each Arrow batch handed to the scoring UDF.
ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"
#: Rows per Arrow batch while scoring (Spark's default is 10,000). Larger batches spread the
#: fixed cost of each model call over more rows; 20,000 to 100,000 measured alike on 10^6 rows.
ARROW_BATCH_SIZE = 50_000
#: Settings of the scoring stream's own session. Its micro-batches are small, so file scans
#: and Delta's snapshot reconstruction of the tables it reads and MERGEs into run as one task
#: when the data fits in one (a scan still splits at ``spark.sql.files.maxPartitionBytes``)
#: instead of one task per core: a third of the tasks of a 100-row micro-batch.
STREAM_CONF: dict[str, str] = {
    "spark.sql.files.minPartitionNum": "1",
    "spark.databricks.delta.snapshotPartitions": "1",
}

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


class ModelResolver:
    """Resolves one model URI to a concrete registered version, as often as asked.

    Each :meth:`resolve` asks the registry once (the alias, or the version, is looked up again,
    so an alias moved since the previous call is honoured); what never changes for a version
    (its run, signature and output shape) is read the first time the version is seen and kept.
    """

    def __init__(self, settings: Settings, model_uri: str | None = None) -> None:
        self.settings = settings
        self.uri = model_uri or default_model_uri(settings)
        self.name, self.alias, self.version = parse_model_uri(self.uri)
        self._client: Any = None
        self._versions: dict[int, ResolvedModel] = {}

    def resolve(self) -> ResolvedModel:
        """The version the URI names now.

        Raises:
            LookupError: the alias is not set or the version does not exist.
            ValueError: the model has no input signature, or one that cannot be scored.
        """
        from mlflow.exceptions import MlflowException

        if self._client is None:
            self._client = _client(self.settings)
        try:
            if self.alias is not None:
                mv = self._client.get_model_version_by_alias(self.name, self.alias)
            else:
                mv = self._client.get_model_version(self.name, str(self.version))
        except MlflowException as exc:
            what = f"alias {self.alias!r}" if self.alias is not None else f"version {self.version}"
            raise LookupError(
                f"registered model {self.name!r} has no {what}: train and promote a model first "
                f"({str(exc).splitlines()[0]})"
            ) from exc
        version = int(mv.version)
        if version not in self._versions:
            self._versions[version] = _describe_version(self.name, version, str(mv.run_id))
        return self._versions[version]


def _describe_version(name: str, version: int, run_id: str) -> ResolvedModel:
    """Read the signature of a registered version into a :class:`ResolvedModel`."""
    from mlflow.models import get_model_info

    concrete = f"models:/{name}/{version}"
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
        version=version,
        run_id=run_id,
        uri=concrete,
        input_columns=tuple(columns),
        proba_pair=_is_proba_pair(signature),
    )


def resolve_model(settings: Settings, model_uri: str | None = None) -> ResolvedModel:
    """Resolve ``model_uri`` (default: the champion) to a concrete registered version.

    Raises:
        LookupError: the alias is not set or the version does not exist.
        ValueError: the URI is not a registry URI, or the model has no input signature.
    """
    return ModelResolver(settings, model_uri).resolve()


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
    """Loaded scoring UDFs by model version, so a version is loaded once per process.

    Each UDF returns one ``double`` per row: the first output column of the model, which is the
    probability of class 0 of a two-class model (:func:`score_features` turns it into the
    score) or the single output of a one-column model.
    """

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
                    result_type="double",
                    env_manager="local",
                    extra_env={ALLOW_DESERIALIZATION_ENV: "true"},
                )
            return self._udfs[model.uri]

    def __len__(self) -> int:
        return len(self._udfs)


# --- Selection and features ------------------------------------------------------------------
def _check_range(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and _as_utc(start) >= _as_utc(end):
        raise ValueError(f"start ({start.isoformat()}) must be before end ({end.isoformat()})")


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
    _check_range(start, end)
    if not catalog.exists(spark, SILVER_LOAN_APPLICATIONS):
        raise FileNotFoundError(
            f"no table {SILVER_LOAN_APPLICATIONS} at {catalog.path(SILVER_LOAN_APPLICATIONS)}: "
            "run the pipeline first"
        )
    apps = catalog.read(spark, SILVER_LOAN_APPLICATIONS)
    if start is not None:
        apps = apps.where(F.col("applied_at") >= F.lit(_as_utc(start)))
    if end is not None:
        apps = apps.where(F.col("applied_at") < F.lit(_as_utc(end)))
    if unscored_by is not None and delta_version(spark, catalog, GOLD_PREDICTIONS) >= 0:
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
    """The current Delta version of each gold feature table that exists (read from its log)."""
    versions = {name: delta_version(spark, catalog, name) for name in tables}
    return {name: version for name, version in versions.items() if version >= 0}


def _default_features_fn() -> FeaturesFn:
    from lakehouse.features.store import historical_features

    return historical_features


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
    # A (n, 2) model's UDF returns the probability of class 0: the score is its complement.
    score = F.lit(1.0) - output if model.proba_pair else output
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
    provider = features_fn or _default_features_fn()
    featured = provider(spark, settings, entity_frame(applications))
    _check_inputs(featured, model)
    needed = dict.fromkeys(["application_id", "customer_id", *(n for n, _ in model.input_columns)])
    return featured.select(*needed).dropDuplicates(["application_id"])


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


class _Laps:
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
    laps: _Laps | None = None,
) -> dict[str, int]:
    """MERGE ``source`` (unique keys) into ``gold.predictions``, inserting only new keys.

    Args:
        model_version: the version of every source row, if known: only the target rows of
            that version are then read (and files of other versions skipped, where Delta keeps
            statistics on ``model_version``).
        register: make ``gold.predictions`` resolve in the session's SQL catalog (a table
            created here is always registered).
        laps: where the MERGE's and the metrics' wall times are recorded.
    """
    from delta.tables import DeltaTable

    before = delta_version(spark, catalog, GOLD_PREDICTIONS)
    if before < 0:
        create_if_missing(
            spark,
            catalog,
            GOLD_PREDICTIONS,
            spark.createDataFrame([], PREDICTIONS_SCHEMA),
            comment="Model predictions of loan applications, one row per application and version",
        )
        before = delta_version(spark, catalog, GOLD_PREDICTIONS)
    elif register:
        register_table(spark, catalog, GOLD_PREDICTIONS)
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in PREDICTION_KEYS)
    if model_version is not None:
        on += f" AND t.`model_version` = {int(model_version)}"
    target = DeltaTable.forPath(spark, catalog.path(GOLD_PREDICTIONS))
    target.alias("t").merge(source.alias("s"), on).whenNotMatchedInsertAll().execute()
    if laps is not None:
        laps.lap("score and merge")
    after = delta_version(spark, catalog, GOLD_PREDICTIONS, since=before)
    metrics = merge_metrics(spark, catalog, GOLD_PREDICTIONS, before, after)
    if laps is not None:
        laps.lap("metrics")
    return metrics


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
    arrow_batch_size: int = ARROW_BATCH_SIZE,
    register: bool = True,
    laps: _Laps | None = None,
) -> ScoringReport:
    """Score ``applications`` with ``model``, MERGE the predictions, report what was written."""
    versions = feature_versions(spark, catalog)
    if laps is not None:
        laps.lap("feature versions")
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
            laps=laps,
        )
    return ScoringReport.of(model, versions, scoring_mode, metrics)


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
    laps = _Laps()
    model = resolve_model(settings, model_uri)
    log.info("scoring with %s (run %s)", model.uri, model.run_id)
    apps = select_applications(spark, catalog, start=start, end=end, unscored_by=model.version)
    nothing_to_score = apps.isEmpty()
    laps.lap("resolve and select")
    if nothing_to_score:
        # A re-run: no features to read, no model to load into the Python workers, no MERGE.
        log.info("batch scoring with version %d: nothing to score", model.version)
        return ScoringReport.of(model, feature_versions(spark, catalog), "batch", {})
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
        arrow_batch_size=rows,
        laps=laps,
    )
    log.info(
        "batch scoring with version %d: %d scored, %d inserted in %.2f s (%s)",
        report.model_version,
        report.rows_scored,
        report.rows_inserted,
        laps.total(),
        laps,
    )
    return report


# --- Streaming -------------------------------------------------------------------------------
class MicroBatchScorer:
    """The ``foreachBatch`` function of the scoring stream.

    Resolves the model URI (an alias by default) at every micro-batch with one registry call,
    so a promotion is picked up by the next micro-batch; the signature of each version is read
    once (:class:`ModelResolver`) and its UDF loaded once (:class:`ModelCache`). The predictions
    table is created and registered by the first micro-batch only. Each micro-batch logs the
    wall time of its steps.
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
        self.resolver = ModelResolver(settings, model_uri)
        self.model_uri = self.resolver.uri
        self.features_fn = features_fn
        self.thresholds = thresholds or DecisionThresholds()
        self.cache = ModelCache()
        self.reports: list[ScoringReport] = []
        self._registered = False

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        """Score one micro-batch and MERGE it into ``gold.predictions``."""
        spark = batch.sparkSession
        log.info("scoring batch %d started", batch_id)
        laps = _Laps()
        model = self.resolver.resolve()
        laps.lap("resolve")
        report = _score_and_write(
            spark,
            self.settings,
            self.catalog,
            batch,
            model,
            cache=self.cache,
            features_fn=self.features_fn,
            thresholds=self.thresholds,
            scoring_mode="stream",
            register=not self._registered,
            laps=laps,
        )
        self._registered = True
        self.reports.append(report)
        log.info(
            "scoring batch %d done: version %d, %d scored, %d inserted in %.2f s (%s)",
            batch_id,
            report.model_version,
            report.rows_scored,
            report.rows_inserted,
            laps.total(),
            laps,
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
    ``settings.checkpoints_dir/scoring``. The query runs in a session of its own
    (``spark.newSession()`` with :data:`STREAM_CONF`), so ``spark``'s settings are left alone.
    Returns the running query.
    """
    if available_now == (processing_time is not None):
        raise ValueError("give exactly one trigger: available_now=True or processing_time")
    if processing_time is not None and not processing_time.strip():
        raise ValueError("processing_time must be an interval such as '1 second'")
    if not catalog.exists(spark, SILVER_LOAN_APPLICATIONS):
        raise FileNotFoundError(
            f"no table {SILVER_LOAN_APPLICATIONS} at {catalog.path(SILVER_LOAN_APPLICATIONS)}: "
            "run the pipeline first"
        )
    scorer = MicroBatchScorer(
        settings, catalog, model_uri=model_uri, features_fn=features_fn, thresholds=thresholds
    )
    session = spark.newSession()
    for key, value in STREAM_CONF.items():
        session.conf.set(key, value)
    reader = session.readStream.format("delta").option("skipChangeCommits", "true")
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
