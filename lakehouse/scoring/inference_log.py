"""The inference table: the serving spools in Delta, and the canary analysis that reads it.

The serving process has no JVM: it appends one JSON line per (request, served entity) to
``landing/inference_log/_open/<pid>-<seq>.jsonl`` before it answers, and renames finished files
into ``landing/inference_log/`` (:mod:`lakehouse.serving.spool`). The endpoint commands likewise
write each decision as a file into ``landing/serving_decisions/``
(:func:`lakehouse.scoring.canary.record_decision`). Both spools come into Delta here with the
platform's Auto Loader pattern: a Structured Streaming file source with a checkpoint under
``settings.checkpoints_dir/gold/<table>`` and ``trigger(availableNow=True)`` reads each file once;
each micro-batch is typed and checked, and

* the lines that pass are deduplicated and MERGEd into ``gold.inference_log`` on
  ``(databricks_request_id, served_entity_name)`` (``gold.serving_decisions`` on
  ``decision_id``), insert-only, so a replayed batch or a file read twice adds nothing;
* the others go to ``silver.quarantine`` with their rule (``malformed``: not a JSON object of
  the record's fields and types, a truncated last line for one; ``required_fields``; or
  ``invalid_value``: a date that is not ``YYYY-MM-DD``, an unknown route or action) and the raw
  line, exactly once per batch (:func:`lakehouse.platform.tables.append_batch`).

Every non-blank line is accounted for: ``lines_read = inserted + duplicates + quarantined``.
Before each ingest the open files of a server that died are sealed
(:func:`lakehouse.serving.spool.seal_orphans`), so its last answered requests are ingested too.

:func:`analyze_canary` compares the ``canary`` and ``champion`` entities of an endpoint on the
inference log (and on ``gold.labels`` where a request names its ``application_id``, in its
rows or as its ``client_request_id``) and, asked to, promotes or rolls back
(:mod:`lakehouse.scoring.canary`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lakehouse.medallion.bronze import pending_batch, run_available_now, stream_app_id
from lakehouse.medallion.contracts import QUARANTINE_SCHEMA
from lakehouse.platform.catalog import (
    GOLD_INFERENCE_LOG,
    GOLD_LABELS,
    GOLD_SERVING_DECISIONS,
    SILVER_QUARANTINE,
    TableCatalog,
)
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import append_batch, create_if_missing, merge_upsert
from lakehouse.scoring.canary import (
    CANARY_ENTITY,
    DECISIONS_FOLDER,
    PROMOTE,
    ROLLBACK,
    CanaryThresholds,
    Decision,
    EndpointClient,
    EndpointConfig,
    EntityStats,
    Verdict,
    judge,
    promote_canary,
    record_decision,
    registry_of,
    rollback_canary,
    running_canary,
    served_version,
)
from lakehouse.serving.spool import seal_orphans, spool_dir

log = logging.getLogger(__name__)

_CORRUPT = "_corrupt_record"
#: At most this many scores per side are brought to the driver for the distribution tests.
MAX_SCORES = 200_000

INFERENCE_LOG_SCHEMA = StructType(
    [
        StructField("databricks_request_id", StringType(), False),
        StructField("client_request_id", StringType(), True),
        StructField("date", DateType(), False),
        StructField("timestamp", TimestampType(), False),
        StructField("timestamp_ms", LongType(), False),
        StructField("status_code", IntegerType(), False),
        StructField("execution_duration_ms", DoubleType(), True),
        StructField("request", StringType(), True),
        StructField("response", StringType(), True),
        StructField("endpoint_name", StringType(), False),
        StructField("served_entity_name", StringType(), False),
        StructField("model_name", StringType(), True),
        StructField("model_version", IntegerType(), True),
        StructField("route", StringType(), False),
        StructField("sampling_fraction", DoubleType(), True),
        StructField("logging_error_codes", ArrayType(StringType()), True),
        StructField("_source_file", StringType(), False),
        StructField("_ingested_at", TimestampType(), False),
    ]
)

SERVING_DECISIONS_SCHEMA = StructType(
    [
        StructField("decision_id", StringType(), False),
        StructField("decided_at", TimestampType(), False),
        StructField("endpoint_name", StringType(), False),
        StructField("action", StringType(), False),
        StructField("trigger", StringType(), False),
        StructField("verdict", StringType(), True),
        StructField("applied", BooleanType(), False),
        StructField("model_name", StringType(), True),
        StructField("champion_version", IntegerType(), True),
        StructField("canary_version", IntegerType(), True),
        StructField("canary_percent", IntegerType(), True),
        StructField("reason", StringType(), True),
        StructField("evidence", StringType(), True),  # JSON: metrics and thresholds, or configs
        StructField("decided_by", StringType(), True),
        StructField("_source_file", StringType(), False),
        StructField("_ingested_at", TimestampType(), False),
    ]
)

#: The fields of one spool line and their JSON types (a line of other types is malformed).
_LOG_LINE = (
    "databricks_request_id STRING, client_request_id STRING, date STRING, timestamp_ms BIGINT, "
    "status_code INT, execution_duration_ms DOUBLE, request STRING, response STRING, "
    "endpoint_name STRING, served_entity_name STRING, model_name STRING, model_version INT, "
    "route STRING, sampling_fraction DOUBLE, logging_error_codes ARRAY<STRING>"
)
_DECISION_LINE = (
    "decision_id STRING, decided_at_ms BIGINT, endpoint_name STRING, action STRING, "
    "trigger STRING, verdict STRING, applied BOOLEAN, model_name STRING, "
    "champion_version INT, canary_version INT, canary_percent INT, reason STRING, "
    "evidence STRING, decided_by STRING"
)
_ROUTES = ("primary", "shadow")
_ACTIONS = ("create", "canary", "promote", "rollback", "delete", "analyze")


@dataclass(frozen=True)
class SpoolIngest:
    """What one ingest of a spool did.

    ``lines_read = inserted + duplicates + quarantined``: a duplicate is a line whose key the
    table (or the same batch) held already.
    """

    table: str
    files: int = 0
    lines_read: int = 0
    inserted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    sealed: int = 0

    def __str__(self) -> str:
        sealed = f", {self.sealed} open file(s) of a stopped server sealed" if self.sealed else ""
        return (
            f"{self.table}: {self.files} file(s), {self.lines_read} line(s) read, "
            f"{self.inserted} inserted, {self.duplicates} duplicate(s), "
            f"{self.quarantined} quarantined{sealed}"
        )


@dataclass(frozen=True)
class _Spool:
    """One spool: where its files land, what a line holds, where it goes in Delta.

    ``columns`` maps the parsed line (struct ``_p``) to the table's columns; ``invalid`` gives,
    for a line that parsed, the reason it cannot be kept (null when it can).
    """

    name: str
    table: str
    comment: str
    schema: StructType
    line_ddl: str
    keys: tuple[str, ...]
    required: tuple[str, ...]
    columns: Callable[[], list[Column]]
    invalid: Callable[[], Column]
    order: tuple[str, ...]


def _p(name: str) -> Column:
    return F.col(f"_p.`{name}`")


def _log_columns() -> list[Column]:
    typed: dict[str, Column] = {
        "date": F.try_to_date(_p("date"), "yyyy-MM-dd"),
        "timestamp": F.timestamp_millis(_p("timestamp_ms")),
    }
    return [
        typed.get(f.name, _p(f.name)).cast(f.dataType).alias(f.name)
        for f in INFERENCE_LOG_SCHEMA.fields
        if not f.name.startswith("_")
    ]


def _log_invalid() -> Column:
    date_ok = F.try_to_date(_p("date"), "yyyy-MM-dd").isNotNull() & F.regexp_like(
        _p("date"), F.lit(r"^\d{4}-\d{2}-\d{2}$")
    )
    return (
        F.when(~date_ok, F.concat(F.lit("date is not YYYY-MM-DD: "), _p("date")))
        .when(
            ~_p("route").isin(*_ROUTES),
            F.concat(F.lit(f"route must be one of {', '.join(_ROUTES)}: "), _p("route")),
        )
        .otherwise(F.lit(None).cast("string"))
    )


def _decision_columns() -> list[Column]:
    typed = {"decided_at": F.timestamp_millis(_p("decided_at_ms"))}
    return [
        typed.get(f.name, _p(f.name)).cast(f.dataType).alias(f.name)
        for f in SERVING_DECISIONS_SCHEMA.fields
        if not f.name.startswith("_")
    ]


def _decision_invalid() -> Column:
    return F.when(
        ~_p("action").isin(*_ACTIONS),
        F.concat(F.lit(f"action must be one of {', '.join(_ACTIONS)}: "), _p("action")),
    ).otherwise(F.lit(None).cast("string"))


INFERENCE_LOG_SPOOL = _Spool(
    name="inference_log",
    table=GOLD_INFERENCE_LOG,
    comment="Every request answered by a serving endpoint, one row per served entity "
    "(the payload table of Databricks inference tables).",
    schema=INFERENCE_LOG_SCHEMA,
    line_ddl=_LOG_LINE,
    keys=("databricks_request_id", "served_entity_name"),
    required=(
        "databricks_request_id",
        "date",
        "timestamp_ms",
        "status_code",
        "endpoint_name",
        "served_entity_name",
        "route",
    ),
    columns=_log_columns,
    invalid=_log_invalid,
    order=("timestamp_ms",),
)

DECISIONS_SPOOL = _Spool(
    name=DECISIONS_FOLDER,
    table=GOLD_SERVING_DECISIONS,
    comment="Every decision on a serving endpoint (create, canary, promote, rollback, delete, "
    "analysis), by hand or automatic, with its evidence.",
    schema=SERVING_DECISIONS_SCHEMA,
    line_ddl=_DECISION_LINE,
    keys=("decision_id",),
    required=("decision_id", "decided_at_ms", "endpoint_name", "action", "trigger", "applied"),
    columns=_decision_columns,
    invalid=_decision_invalid,
    order=("decided_at_ms",),
)


def parse_lines(lines: DataFrame, spool: _Spool, ingested_at: datetime) -> DataFrame:
    """Spool lines (``value``, ``_source_file``) -> the table's columns, plus ``_rule``,
    ``_reason`` (null for a line that can be kept) and ``_raw`` (the line)."""
    parsed = F.from_json(
        F.col("value"),
        f"{spool.line_ddl}, {_CORRUPT} STRING",
        {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT},
    )
    df = lines.select(
        F.col("value").alias("_raw"),
        "_source_file",
        parsed.alias("_p"),
        F.json_object_keys(F.col("value")).isNull().alias("_not_object"),
    )
    missing = F.concat_ws(
        ", ", *[F.when(_p(name).isNull(), F.lit(name)) for name in spool.required]
    )
    malformed = F.col("_not_object") | _p(_CORRUPT).isNotNull()
    invalid = spool.invalid()
    rule = (
        F.when(malformed, F.lit("malformed"))
        .when(missing != "", F.lit("required_fields"))
        .when(invalid.isNotNull(), F.lit("invalid_value"))
    )
    reason = (
        F.when(malformed, F.lit(f"not a JSON object of the {spool.name} record's fields and types"))
        .when(missing != "", F.concat(F.lit("missing "), missing))
        .otherwise(invalid)
    )
    return df.select(
        *spool.columns(),
        *[_p(name).alias(f"_order_{name}") for name in spool.order],
        "_source_file",
        F.lit(ingested_at).cast("timestamp").alias("_ingested_at"),
        rule.alias("_rule"),
        reason.alias("_reason"),
        "_raw",
    )


def deduplicate(rows: DataFrame, spool: _Spool) -> DataFrame:
    """One row per key: the earliest by the spool's order column, then file and line."""
    window = Window.partitionBy(*spool.keys).orderBy(
        *[F.col(f"_order_{name}") for name in spool.order], "_source_file", "_raw"
    )
    return rows.withColumn("_n", F.row_number().over(window)).where("_n = 1")


class SpoolBatchWriter:
    """The ``foreachBatch`` function of a spool's ingest: quarantine what cannot be kept, MERGE
    the rest on the spool's keys; the totals are held for :meth:`result`.

    Args:
        spark: the session the MERGEs run on.
        catalog: where the tables live.
        spool: which spool.
        checkpoint_dir: the stream's checkpoint (its id marks the quarantine appends).
        replayed: the batch the stream left unfinished when it last stopped.
    """

    def __init__(
        self,
        spark: SparkSession,
        catalog: TableCatalog,
        spool: _Spool,
        checkpoint_dir: Path | str,
        replayed: int | None,
    ) -> None:
        self.spark = spark
        self.catalog = catalog
        self.spool = spool
        self.checkpoint_dir = checkpoint_dir
        self.replayed = replayed
        self.files = self.lines = self.inserted = self.duplicates = self.quarantined = 0
        self.run_id = f"{spool.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}"

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        """Quarantine and MERGE one micro-batch of spool lines."""
        now = datetime.now(UTC)
        lines = batch.where(F.trim(F.col("value")) != "")
        rows = parse_lines(lines, self.spool, now).persist()
        try:
            self._process(rows, batch_id, now)
        finally:
            rows.unpersist()

    def _process(self, rows: DataFrame, batch_id: int, now: datetime) -> None:
        stats = rows.agg(
            F.count(F.lit(1)).alias("lines"),
            F.count_distinct("_source_file").alias("files"),
            F.count_if(F.col("_rule").isNull()).alias("kept"),
        ).first()
        assert stats is not None
        lines, kept = int(stats["lines"]), int(stats["kept"])
        if lines == 0:
            return
        quarantined = lines - kept
        writer = stream_app_id(self.checkpoint_dir, self.spool.table)
        if quarantined:
            append_batch(
                rows.where(F.col("_rule").isNotNull()).select(
                    F.lit(self.spool.name).alias("entity"),
                    F.col("_rule").alias("rule"),
                    F.col("_reason").alias("reason"),
                    F.col("_raw").alias("raw_record"),
                    "_source_file",
                    "_ingested_at",
                    F.lit(now).cast("timestamp").alias("quarantined_at"),
                    F.lit(self.run_id).alias("run_id"),
                ),
                self.catalog,
                SILVER_QUARANTINE,
                f"{writer}:quarantine",
                batch_id,
                self.replayed,
            )
        inserted = 0
        if kept:
            unique = deduplicate(rows.where(F.col("_rule").isNull()), self.spool)
            metrics = merge_upsert(
                self.spark,
                self.catalog,
                self.spool.table,
                unique.select(*[f.name for f in self.spool.schema.fields]),
                list(self.spool.keys),
                insert_only=True,
                read_history=False,
            )
            inserted = metrics.get("numTargetRowsInserted", 0)
        self.files += int(stats["files"])
        self.lines += lines
        self.inserted += inserted
        self.duplicates += kept - inserted
        self.quarantined += quarantined
        log.info(
            "%s batch %d: %d line(s), %d inserted, %d duplicate(s), %d quarantined",
            self.spool.table,
            batch_id,
            lines,
            inserted,
            kept - inserted,
            quarantined,
        )

    def result(self, sealed: int = 0) -> SpoolIngest:
        """What the micro-batches processed so far did."""
        return SpoolIngest(
            self.spool.table,
            self.files,
            self.lines,
            self.inserted,
            self.duplicates,
            self.quarantined,
            sealed,
        )


def _ensure_tables(spark: SparkSession, catalog: TableCatalog, spool: _Spool) -> None:
    create_if_missing(
        spark, catalog, spool.table, spark.createDataFrame([], spool.schema), comment=spool.comment
    )
    create_if_missing(
        spark,
        catalog,
        SILVER_QUARANTINE,
        spark.createDataFrame([], QUARANTINE_SCHEMA),
        comment="Every bronze row rejected by silver, with the rule it broke.",
    )


def ingest_spool(
    spark: SparkSession,
    catalog: TableCatalog,
    spool: _Spool,
    source: Path,
    checkpoint_dir: Path | str,
    sealed: int = 0,
) -> SpoolIngest:
    """Take the sealed ``*.jsonl`` files of ``source`` not ingested yet into the spool's table.

    The table (and ``silver.quarantine``) is created and registered even when nothing landed.
    """
    _ensure_tables(spark, catalog, spool)
    if not source.is_dir():
        log.info("no %s files at %s: nothing to ingest", spool.name, source)
        return SpoolIngest(spool.table, sealed=sealed)
    stream = (
        spark.readStream.format("text")
        .option("pathGlobFilter", "*.jsonl")
        .load(str(source))
        .select("value", F.col("_metadata.file_path").alias("_source_file"))
    )
    writer = SpoolBatchWriter(
        spark, catalog, spool, checkpoint_dir, pending_batch(spark, checkpoint_dir)
    )
    run_available_now(stream, checkpoint_dir, writer)
    result = writer.result(sealed)
    log.info("%s", result)
    return result


def _catalog(settings: Settings, catalog: TableCatalog | None) -> TableCatalog:
    return catalog or TableCatalog(settings.tables_root)


def ingest_inference_log(
    spark: SparkSession, settings: Settings, catalog: TableCatalog | None = None
) -> SpoolIngest:
    """Take the serving spool (``landing/inference_log/*.jsonl``) into ``gold.inference_log``,
    each file once and each (request, served entity) once; the open files of a server that is
    no longer running are sealed first."""
    sealed = seal_orphans(settings.landing_dir)
    if sealed:
        log.info("sealed %d open spool file(s) of a stopped server", len(sealed))
    return ingest_spool(
        spark,
        _catalog(settings, catalog),
        INFERENCE_LOG_SPOOL,
        spool_dir(settings.landing_dir),
        settings.checkpoints_dir / "gold" / "inference_log",
        sealed=len(sealed),
    )


def ingest_decisions(
    spark: SparkSession, settings: Settings, catalog: TableCatalog | None = None
) -> SpoolIngest:
    """Take the decisions spool (``landing/serving_decisions/*.jsonl``) into
    ``gold.serving_decisions``, each decision once."""
    return ingest_spool(
        spark,
        _catalog(settings, catalog),
        DECISIONS_SPOOL,
        settings.landing_dir / DECISIONS_FOLDER,
        settings.checkpoints_dir / "gold" / "serving_decisions",
    )


# --- Reading the inference log -------------------------------------------------------------------

#: The rows of a request, in each of the query formats of the scoring protocol.
_REQUEST_SHAPE = (
    "dataframe_split STRUCT<columns: ARRAY<STRING>, data: ARRAY<ARRAY<STRING>>>, "
    "dataframe_records ARRAY<MAP<STRING, STRING>>, instances ARRAY<MAP<STRING, STRING>>, "
    "inputs STRING"
)


def application_ids(request: Column) -> Column:
    """The ``application_id`` of each row of a request (JSON text), in row order; null when
    the request does not carry them.

    Reads ``dataframe_split`` (by the column's position), ``dataframe_records``, ``instances``
    (records) and ``inputs`` (records, or a mapping of columns).
    """
    body = F.from_json(request, _REQUEST_SHAPE)
    split = body["dataframe_split"]
    position = F.array_position(split["columns"], F.lit("application_id")).cast("int")
    from_split = F.when(
        position > 0, F.transform(split["data"], lambda row: F.element_at(row, position))
    )

    def from_records(records: Column) -> Column:
        return F.when(
            F.exists(records, lambda r: r["application_id"].isNotNull()),
            F.transform(records, lambda r: r["application_id"]),
        )

    inputs = body["inputs"]
    input_records = F.from_json(inputs, "ARRAY<MAP<STRING, STRING>>")
    input_columns = F.from_json(inputs, "MAP<STRING, ARRAY<STRING>>")
    return F.coalesce(
        from_split,
        from_records(body["dataframe_records"]),
        from_records(body["instances"]),
        from_records(input_records),
        input_columns["application_id"],
    )


def predictions(response: Column) -> Column:
    """The scores of a response (``{"predictions": [...]}``); null for an error answer."""
    return F.from_json(response, "predictions ARRAY<DOUBLE>")["predictions"]


def entity_records(
    log_df: DataFrame, endpoint: str, entity: str, version: int, since_ms: int | None = None
) -> DataFrame:
    """The inference log rows of one served entity at one version, from ``since_ms`` on."""
    rows = log_df.where(
        (F.col("endpoint_name") == endpoint)
        & (F.col("served_entity_name") == entity)
        & (F.col("model_version") == version)
    )
    return rows if since_ms is None else rows.where(F.col("timestamp_ms") >= since_ms)


def entity_stats(
    spark: SparkSession,
    catalog: TableCatalog,
    endpoint: str,
    entity: str,
    version: int,
    since_ms: int | None = None,
) -> EntityStats:
    """One side of a canary analysis: requests, server errors, latency of the successful
    requests, their scores and, where ``gold.labels`` knows the application, the outcomes.

    A score's application is the ``application_id`` of its row in the request or, for a request
    of one row, the request's ``client_request_id``.
    """
    rows = entity_records(
        catalog.read(spark, GOLD_INFERENCE_LOG), endpoint, entity, version, since_ms
    )
    ok = F.col("status_code").between(200, 299)
    counts = rows.agg(
        F.count(F.lit(1)).alias("requests"),
        F.count_if(F.col("status_code") >= 500).alias("errors"),
        F.percentile(F.when(ok, F.col("execution_duration_ms")), F.lit(0.5)).alias("p50"),
        F.percentile(F.when(ok, F.col("execution_duration_ms")), F.lit(0.99)).alias("p99"),
    ).first()
    assert counts is not None
    scores_of = predictions(F.col("response"))
    # The application of each row: named in the row, or, for a one-row request, the client's
    # request id (as Databricks suggests for joining inference tables with labels).
    ids = F.coalesce(
        application_ids(F.col("request")),
        F.when(F.size(scores_of) == 1, F.array(F.col("client_request_id"))),
        F.array().cast("array<string>"),  # scores without an application still count
    )
    scored = (
        rows.where(ok)
        .select(
            F.explode(F.arrays_zip(scores_of.alias("score"), ids.alias("application_id"))).alias(
                "_s"
            )
        )
        .select("_s.score", "_s.application_id")
        .where(F.col("score").isNotNull())
    )
    scores = np.array([r["score"] for r in scored.select("score").limit(MAX_SCORES).collect()])
    outcomes = np.empty((0, 2))
    if catalog.exists(spark, GOLD_LABELS):
        labels = catalog.read(spark, GOLD_LABELS).select("application_id", "defaulted")
        joined = scored.where(F.col("application_id").isNotNull()).join(labels, "application_id")
        pairs = [(r["score"], r["defaulted"]) for r in joined.limit(MAX_SCORES).collect()]
        if pairs:
            outcomes = np.array(pairs, dtype=float)
    return EntityStats(
        entity=entity,
        version=version,
        requests=int(counts["requests"]),
        errors=int(counts["errors"]),
        p50_ms=None if counts["p50"] is None else float(counts["p50"]),
        p99_ms=None if counts["p99"] is None else float(counts["p99"]),
        scores=scores.astype(float),
        outcomes=outcomes,
    )


def canary_started(
    spark: SparkSession, catalog: TableCatalog, endpoint: str, entity: str, version: int
) -> int | None:
    """The time (epoch ms) of the first request the canary at ``version`` answered."""
    rows = entity_records(catalog.read(spark, GOLD_INFERENCE_LOG), endpoint, entity, version)
    first = rows.agg(F.min("timestamp_ms").alias("t")).first()
    return None if first is None or first["t"] is None else int(first["t"])


def compare(
    spark: SparkSession,
    catalog: TableCatalog,
    endpoint: str,
    champion: tuple[str, int],
    canary: tuple[str, int],
    thresholds: CanaryThresholds,
) -> Verdict:
    """Hold the canary (entity, version) against the champion over the same window: from the
    canary's first request on (:func:`lakehouse.scoring.canary.judge`)."""
    since = canary_started(spark, catalog, endpoint, *canary)
    canary_stats = entity_stats(spark, catalog, endpoint, *canary, since_ms=since)
    champion_stats = entity_stats(spark, catalog, endpoint, *champion, since_ms=since)
    return judge(canary_stats, champion_stats, thresholds)


@dataclass(frozen=True)
class CanaryAnalysis:
    """An analysis of an endpoint's canary and the decision it recorded."""

    verdict: Verdict
    decision: Decision
    ingest: SpoolIngest


def analyze_canary(
    spark: SparkSession,
    settings: Settings,
    client: EndpointClient,
    name: str,
    thresholds: CanaryThresholds,
    apply: bool = False,
    force: bool = False,
    catalog: TableCatalog | None = None,
) -> CanaryAnalysis:
    """Ingest the inference log, compare the canary of endpoint ``name`` with its champion,
    and with ``apply`` promote (verdict ``promote``) or roll back (``rollback``); ``wait``
    changes nothing. The decision, with the metrics and thresholds as its evidence, is in
    ``gold.serving_decisions`` when this returns.

    Raises:
        ServingError: the server cannot be reached, the endpoint is unknown or runs no canary.
    """
    catalog = _catalog(settings, catalog)
    ingest = ingest_inference_log(spark, settings, catalog)
    config = EndpointConfig.of(client.get(name))
    _, canary_version = running_canary(config, "analyze")
    champion = config.champion()
    model = str(champion["entity_name"])
    champion_version = served_version(registry_of(settings, model), champion, config)
    verdict = compare(
        spark,
        catalog,
        name,
        (str(champion["name"]), champion_version),
        (CANARY_ENTITY, canary_version),
        thresholds,
    )
    evidence = verdict.evidence()
    decision: Decision
    if apply and verdict.verdict == PROMOTE:
        decision = promote_canary(
            client,
            settings,
            name,
            force=force,
            trigger="automatic",
            reason=verdict.reason,
            evidence=evidence,
            verdict=verdict.verdict,
        )
    elif apply and verdict.verdict == ROLLBACK:
        decision = rollback_canary(
            client,
            settings,
            name,
            trigger="automatic",
            reason=verdict.reason,
            evidence=evidence,
            verdict=verdict.verdict,
        )
    else:
        decision = Decision(
            name,
            "analyze",
            "automatic",
            False,
            verdict.reason,
            evidence,
            model_name=model,
            champion_version=champion_version,
            canary_version=canary_version,
            canary_percent=config.routes.get(CANARY_ENTITY),
            verdict=verdict.verdict,
        )
        record_decision(settings, decision)
    ingest_decisions(spark, settings, catalog)
    return CanaryAnalysis(verdict, decision, ingest)


def serving_decisions(spark: SparkSession, catalog: TableCatalog, endpoint: str) -> list[Any]:
    """The decisions on ``endpoint``, oldest first."""
    if not catalog.exists(spark, GOLD_SERVING_DECISIONS):
        return []
    rows = catalog.read(spark, GOLD_SERVING_DECISIONS).where(F.col("endpoint_name") == endpoint)
    return rows.orderBy("decided_at", "decision_id").collect()
