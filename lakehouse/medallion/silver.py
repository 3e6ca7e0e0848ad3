"""Silver: typed, checked, deduplicated records, one row per business key.

:func:`build_silver_entity` reads the new rows of ``bronze.<entity>_raw`` with a Delta streaming
source (its own checkpoint, ``trigger(availableNow=True)``); a :class:`SilverBatchProcessor`
takes each micro-batch through these steps:

1. typed (:func:`typed_columns`: bronze strings cast to
   :data:`lakehouse.medallion.contracts.SILVER_SCHEMAS`, strictly: a value that is not of its
   field's kind is not converted, and :func:`unconverted` names it);
2. checked (:func:`lakehouse.medallion.expectations.flag_expectations`, the counts in one
   aggregation over the batch) against every field's contract, so nothing a later stage cannot
   process gets through: a ``fail`` rule (only in rule sets a caller passes) stops here, before
   anything is written, and the checkpoint does not advance;
3. rejected rows appended to ``silver.quarantine`` with the rule and the raw bronze record;
4. deduplicated on the business key (the latest by ``_ingested_at`` then ``_source_file``);
5. MERGEd into ``silver.<entity>``: new keys inserted, a known key updated only when the incoming
   row is newer and differs, so replaying rows changes nothing (the first batch into a table
   the build has just created is simply appended);
6. the per-expectation counts, plus ``duplicates``, appended to ``silver.expectation_results``.

Every bronze row ends up in exactly one place: ``bronze = silver + quarantined + duplicates``
(:func:`accounting`). Rows whose customer (or application) is unknown stay in silver and are
counted by :func:`orphan_counts`; gold holds them back until the customer arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, IntegerType, StringType

from lakehouse.medallion.bronze import (
    bronze_table,
    check_entity,
    entity_checkpoint,
    pending_batch,
    run_available_now,
    stream_app_id,
)
from lakehouse.medallion.contracts import (
    BUSINESS_KEYS,
    EXPECTATION_RESULTS_SCHEMA,
    FIELD_CONTRACTS,
    QUARANTINE_SCHEMA,
    RAW_PATTERNS,
    REFERENCES,
    SILVER_SCHEMAS,
    bronze_schema,
)
from lakehouse.medallion.expectations import (
    DUPLICATES,
    EXPECTATIONS,
    MALFORMED_FLAG,
    UNCONVERTED,
    Expectation,
    ExpectationCount,
    FlaggedRows,
    builtin_expectations,
    check_counts,
    flag_expectations,
    malformed_condition,
)
from lakehouse.platform.catalog import (
    ENTITIES,
    SILVER_EXPECTATIONS,
    SILVER_QUARANTINE,
    TableCatalog,
)
from lakehouse.platform.tables import (
    append_batch,
    batch_metadata,
    committed_batch,
    create_if_missing,
    has_commit,
    merge_upsert,
)

log = logging.getLogger(__name__)

_RAW_RECORD = "_raw_record"
_METADATA = ("_source_file", "_ingested_at")
_VERSIONS = "_versions"  # distinct records of a key in a batch, see deduplicate()
#: The session setting Delta records as a commit's ``userMetadata``.
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
#: The counts of :class:`SilverResult` a build adds up over its micro-batches.
_TOTALS = (
    "rows_read",
    "inserted",
    "updated",
    "quarantined",
    "exact_duplicates",
    "key_duplicates",
)


def silver_table(entity: str) -> str:
    """The silver table name of ``entity`` (``silver.<entity>``)."""
    check_entity(entity)
    return f"silver.{entity}"


# --- Typing (pure transforms) -------------------------------------------------------------------


def _raw(name: str) -> Column:
    """A bronze string without its surrounding spaces; a blank one is null (absent)."""
    return F.nullif(F.trim(F.col(f"`{name}`")), F.lit(""))


def _cast(name: str, data_type: DataType, kind: str | None = None) -> Column:
    """Cast a bronze string to ``data_type``; a value that does not convert becomes null.

    With the field's ``kind`` (:class:`lakehouse.medallion.contracts.FieldContract`), the raw
    text must also match the kind's pattern (:data:`lakehouse.medallion.contracts.RAW_PATTERNS`),
    so what Spark's cast reads beyond plain decimal numbers and ISO-8601 times (``NaN``,
    ``Infinity``, ``1d``, hexadecimal, a timestamp cut short) is not converted either.
    """
    raw = _raw(name)
    pattern = RAW_PATTERNS.get(kind or "")
    if pattern is not None:
        raw = F.when(raw.rlike(pattern), raw)
    if isinstance(data_type, StringType):
        return raw
    if isinstance(data_type, IntegerType):
        # "36" and "36.0" are both 36; "36.5" is not an integer, nor is one beyond int's range.
        as_double = raw.try_cast("double")
        whole = as_double.between(-(2.0**31), 2.0**31 - 1) & (as_double % 1 == 0)
        integral = F.when(whole, as_double.try_cast("int"))
        return F.coalesce(raw.try_cast("int"), integral)
    return raw.try_cast(data_type)


def _kinds(entity: str) -> dict[str, str]:
    return {c.name: c.kind for c in FIELD_CONTRACTS[entity]}


def typed_columns(entity: str) -> list[Column]:
    """The silver columns of ``entity`` as expressions over its bronze columns."""
    check_entity(entity)
    kinds = _kinds(entity)
    return [
        (F.col(f.name) if f.name in _METADATA else _cast(f.name, f.dataType, kinds[f.name]))
        .cast(f.dataType)
        .alias(f.name)
        for f in SILVER_SCHEMAS[entity].fields
    ]


def unconverted(entity: str) -> Column:
    """The names of the raw fields of ``entity`` that hold a value which did not convert to its
    type (a wrong type, a nested object, an unreadable number or time), as an array."""
    kinds = _kinds(entity)
    names = [
        F.when(
            _raw(f.name).isNotNull() & _cast(f.name, f.dataType, kinds[f.name]).isNull(),
            F.lit(f.name),
        )
        for f in SILVER_SCHEMAS[entity].fields
        if f.name not in _METADATA
    ]
    return F.filter(F.array(*names), lambda name: name.isNotNull())


def typed(df: DataFrame, entity: str) -> DataFrame:
    """Bronze rows of ``entity`` -> the silver columns and types (no row is removed)."""
    return df.select(*typed_columns(entity))


def typed_customers(df: DataFrame) -> DataFrame:
    """Bronze customers -> silver customer columns and types."""
    return typed(df, "customers")


def typed_transactions(df: DataFrame) -> DataFrame:
    """Bronze transactions -> silver transaction columns and types."""
    return typed(df, "transactions")


def typed_loan_applications(df: DataFrame) -> DataFrame:
    """Bronze loan applications -> silver loan application columns and types."""
    return typed(df, "loan_applications")


def typed_repayments(df: DataFrame) -> DataFrame:
    """Bronze repayments -> silver repayment columns and types."""
    return typed(df, "repayments")


def prepare_batch(bronze: DataFrame, entity: str) -> DataFrame:
    """Bronze rows -> typed columns, the fields that did not convert (:data:`UNCONVERTED`),
    ``_rescued_data``, the raw record (JSON) and a malformed flag: what
    :func:`lakehouse.medallion.expectations.flag_expectations` and the quarantine need."""
    raw_columns = [f.name for f in bronze_schema(entity).fields]
    return bronze.select(
        *typed_columns(entity),
        unconverted(entity).alias(UNCONVERTED),
        F.col("_rescued_data"),
        F.to_json(F.struct(*[F.col(c) for c in raw_columns])).alias(_RAW_RECORD),
        F.expr(malformed_condition(entity)).alias(MALFORMED_FLAG),
    )


def deduplicate(df: DataFrame, entity: str, versions: str | None = None) -> DataFrame:
    """One row per business key: the latest by ``_ingested_at``, then ``_source_file``.

    Remaining ties (the same key twice in one file) are broken by the row's values, so the
    choice is deterministic. With ``versions``, each kept row also gets, in that column, how many
    distinct versions of its record (its data columns, file and ingest time aside) ``df`` held:
    their sum over the result is the number of distinct records, from the same window.
    """
    keys = list(BUSINESS_KEYS[entity])
    data = [f.name for f in SILVER_SCHEMAS[entity].fields if f.name not in keys]
    order = [F.col(c).desc_nulls_last() for c in ["_ingested_at", "_source_file", *data]]
    by_key = Window.partitionBy(*keys)
    if versions is not None:
        record = [c for c in df.columns if c not in _METADATA]
        version = F.dense_rank().over(by_key.orderBy(*record))
        df = df.withColumn(versions, version).withColumn(versions, F.max(versions).over(by_key))
    ranked = df.withColumn("_rank", F.row_number().over(by_key.orderBy(*order)))
    return ranked.where("_rank = 1").drop("_rank")


def _size_columns() -> list[Column]:
    """Of a deduplicated batch: its keys and its distinct records (``deduplicate(versions=)``)."""
    return [F.count(F.lit(1)).alias("keys"), F.sum(_VERSIONS).alias("records")]


def _sizes(row: Any) -> tuple[int, int]:
    """(keys, distinct records) from a row or observation of :func:`_size_columns`."""
    assert row is not None
    return int(row["keys"]), int(row["records"] or 0)


def _count_sizes(deduplicated: DataFrame) -> tuple[int, int]:
    """(keys, distinct records) of a deduplicated batch, counted by a job of their own."""
    return _sizes(deduplicated.agg(*_size_columns()).first())


def _newer_and_different(entity: str) -> str:
    keys = set(BUSINESS_KEYS[entity])
    data = [f.name for f in SILVER_SCHEMAS[entity].fields if f.name not in keys | set(_METADATA)]
    newer = (
        "(s._ingested_at > t._ingested_at OR "
        "(s._ingested_at = t._ingested_at AND s._source_file > t._source_file))"
    )
    same = " AND ".join(f"s.`{c}` <=> t.`{c}`" for c in data)
    return f"{newer} AND NOT ({same})"


# --- Build --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SilverResult:
    """What one silver build of one entity did."""

    entity: str
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    quarantined: int = 0
    exact_duplicates: int = 0
    key_duplicates: int = 0
    warnings: tuple[tuple[str, int], ...] = ()

    @property
    def duplicates(self) -> int:
        """Rows not inserted because their business key was seen already."""
        return self.exact_duplicates + self.key_duplicates

    def __str__(self) -> str:
        warned = ", ".join(f"{name}={n}" for name, n in self.warnings if n)
        return (
            f"silver.{self.entity}: {self.rows_read} read, {self.inserted} inserted, "
            f"{self.updated} updated, {self.quarantined} quarantined, "
            f"{self.duplicates} duplicates" + (f" (warnings: {warned})" if warned else "")
        )


def ensure_shared_tables(spark: SparkSession, catalog: TableCatalog) -> None:
    """Create (empty) and register ``silver.quarantine`` and ``silver.expectation_results``.

    Every entity's build appends to both: create them before building entities concurrently.
    """
    create_if_missing(
        spark,
        catalog,
        SILVER_QUARANTINE,
        spark.createDataFrame([], QUARANTINE_SCHEMA),
        comment="Every bronze row rejected by silver, with the rule it broke.",
    )
    create_if_missing(
        spark,
        catalog,
        SILVER_EXPECTATIONS,
        spark.createDataFrame([], EXPECTATION_RESULTS_SCHEMA),
        comment="Rows passing and failing each expectation, per run and entity.",
    )


def _ensure_tables(spark: SparkSession, catalog: TableCatalog, entity: str) -> bool:
    """Create the tables a silver build of ``entity`` writes; True when ``silver.<entity>`` was
    created by this call (so it is empty)."""
    created = create_if_missing(
        spark,
        catalog,
        silver_table(entity),
        spark.createDataFrame([], SILVER_SCHEMAS[entity]),
        comment=f"Typed, checked {entity}, one row per {', '.join(BUSINESS_KEYS[entity])}.",
    )
    ensure_shared_tables(spark, catalog)
    return created


class SilverBatchProcessor:
    """The ``foreachBatch`` function of a silver build of one entity.

    Each micro-batch is read once (kept in memory while it is processed): one aggregation gives
    the expectation counts before anything is written (:meth:`_check`); the rejected rows go to
    the quarantine (:meth:`_quarantine`); the rest are deduplicated and written to silver
    (:meth:`_upsert`), the distinct records and keys counted on the way; the counts are appended
    to ``silver.expectation_results`` (:meth:`_record_counts`).

    The run's totals are held by the object (read :meth:`result` once the stream has stopped),
    not by variables of the caller, so they arrive wherever the object is asked for them; the
    per-batch counts are in ``silver.expectation_results`` as well.

    Args:
        spark: the session the build runs on (tables are registered through it; each MERGE
            runs on its micro-batch's own session, which carries the batch's commit mark).
        catalog: where the silver tables live.
        entity: the entity built.
        checkpoint_dir: the stream's checkpoint (its id marks the appends).
        run_id: recorded with the quarantined rows and the expectation counts.
        rules: every expectation, in order (built-in ones included).
        empty_target: ``silver.<entity>`` was just created, so the first batch is appended.
        replayed: the batch the stream left unfinished when it last stopped.
    """

    def __init__(
        self,
        spark: SparkSession,
        catalog: TableCatalog,
        entity: str,
        checkpoint_dir: Path | str,
        run_id: str,
        rules: Sequence[Expectation],
        *,
        empty_target: bool,
        replayed: int | None,
    ) -> None:
        self.spark = spark
        self.catalog = catalog
        self.entity = entity
        self.target = silver_table(entity)
        self.checkpoint_dir = checkpoint_dir
        self.run_id = run_id
        self.rules = list(rules)
        self.empty_target = empty_target
        self.replayed = replayed
        self.totals = dict.fromkeys(_TOTALS, 0)
        self.warnings: dict[str, int] = {}

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        """Check, quarantine, deduplicate and write one micro-batch of bronze rows."""
        flagged = flag_expectations(prepare_batch(batch, self.entity), self.rules)
        # Only rejected rows need their raw record: passing rows do not carry it in memory.
        raw_if_rejected = F.when(~flagged.passed, F.col(_RAW_RECORD))
        rows = flagged.df.withColumn(_RAW_RECORD, raw_if_rejected).persist()
        try:
            self._process(flagged, rows, batch_id)
        finally:
            rows.unpersist()

    def result(self) -> SilverResult:
        """What the micro-batches processed so far did."""
        totals = self.totals
        return SilverResult(
            self.entity,
            rows_read=totals["rows_read"],
            inserted=totals["inserted"],
            updated=totals["updated"],
            quarantined=totals["quarantined"],
            exact_duplicates=totals["exact_duplicates"],
            key_duplicates=totals["key_duplicates"],
            warnings=tuple(sorted(self.warnings.items())),
        )

    def _process(self, flagged: FlaggedRows, rows: DataFrame, batch_id: int) -> None:
        now = datetime.now(UTC)
        checked = self._check(flagged, rows)
        if checked is None:
            return
        rows_read, passed, counts = checked
        quarantined = sum(c.failed for c in counts if c.action == "drop")
        app_id = stream_app_id(self.checkpoint_dir, self.target)
        if quarantined:
            self._quarantine(flagged, rows, now, app_id, batch_id)
        inserted = updated = unique_keys = distinct_rows = 0
        if passed:
            inserted, updated, unique_keys, distinct_rows = self._upsert(
                flagged, rows, app_id, batch_id
            )
        exact = rows_read - quarantined - distinct_rows
        key_dups = distinct_rows - unique_keys
        # A row whose key silver already held is a duplicate, whether it updated it or not.
        key_dups += unique_keys - inserted
        duplicates = ExpectationCount(DUPLICATES, "drop", inserted, exact + key_dups)
        self._record_counts([*counts, duplicates], now, app_id, batch_id)
        self._add(
            counts,
            rows_read=rows_read,
            inserted=inserted,
            updated=updated,
            quarantined=quarantined,
            exact_duplicates=exact,
            key_duplicates=key_dups,
        )
        log.info(
            "%s batch %d: %d read, %d inserted, %d updated, %d quarantined, %d duplicates",
            self.target,
            batch_id,
            rows_read,
            inserted,
            updated,
            quarantined,
            exact + key_dups,
        )

    def _check(
        self, flagged: FlaggedRows, rows: DataFrame
    ) -> tuple[int, int, list[ExpectationCount]] | None:
        """(rows read, rows passed, expectation counts) of a batch; None when it is empty.

        Raises:
            ExpectationFailed: a ``fail`` rule failed; nothing of the batch is written.
        """
        stats = rows.agg(
            F.count(F.lit(1)).alias("_rows"),
            *flagged.aggregates,
            F.count_if(flagged.passed).alias("_passed"),
        ).first()
        assert stats is not None
        rows_read = int(stats["_rows"])
        if rows_read == 0:
            return None
        counts = flagged.counts(stats)
        check_counts(counts, self.rules, self.entity)
        return rows_read, int(stats["_passed"]), counts

    def _quarantine(
        self, flagged: FlaggedRows, rows: DataFrame, now: datetime, app_id: str, batch_id: int
    ) -> None:
        """Append the rejected rows, with their rule and raw record, to ``silver.quarantine``."""
        append_batch(
            flagged.rejected_rows(rows).select(
                F.lit(self.entity).alias("entity"),
                F.col("rule"),
                F.col("reason"),
                F.col(_RAW_RECORD).alias("raw_record"),
                F.col("_source_file"),
                F.col("_ingested_at"),
                F.lit(now).cast("timestamp").alias("quarantined_at"),
                F.lit(self.run_id).alias("run_id"),
            ),
            self.catalog,
            SILVER_QUARANTINE,
            f"{app_id}:quarantine",
            batch_id,
            self.replayed,
        )

    def _upsert(
        self, flagged: FlaggedRows, rows: DataFrame, app_id: str, batch_id: int
    ) -> tuple[int, int, int, int]:
        """Deduplicate the passing rows and write them to silver.

        Returns (inserted, updated, unique keys, distinct records). The first batch into a
        table this build has just created is appended, since there is nothing to MERGE with;
        later batches are MERGEd. Either commit is marked with the batch
        (:func:`lakehouse.platform.tables.batch_metadata`), so a batch an earlier attempt wrote
        but did not checkpoint is not written again but counted as that attempt counted it.
        """
        columns = [f.name for f in SILVER_SCHEMAS[self.entity].fields]
        deduped = deduplicate(
            flagged.passed_rows(rows).select(*columns), self.entity, versions=_VERSIONS
        )
        if batch_id == self.replayed and (
            committed_batch(self.spark, self.catalog, self.target, app_id) >= batch_id
        ):
            unique_keys, distinct_rows = _count_sizes(deduped)
            inserted, updated = self._earlier_write(app_id, batch_id, unique_keys)
        elif self.empty_target:
            observed = Observation(f"{self.target}:{batch_id}")
            written = deduped.observe(observed, *_size_columns()).drop(_VERSIONS)
            append_batch(written, self.catalog, self.target, app_id, batch_id, replayed=None)
            unique_keys, distinct_rows = _sizes(observed.get)
            inserted, updated = unique_keys, 0
        else:
            # A MERGE may read its source more than once: count before, not on the way.
            unique_keys, distinct_rows = _count_sizes(deduped)
            # The batch's own session (the stream's, used by no other thread) carries the mark
            # into the MERGE's commit: a MERGE takes commit metadata only from the session.
            session = rows.sparkSession
            session.conf.set(USER_METADATA_CONF, batch_metadata(app_id, batch_id))
            try:
                metrics = merge_upsert(
                    session,
                    self.catalog,
                    self.target,
                    deduped.drop(_VERSIONS),
                    list(BUSINESS_KEYS[self.entity]),
                    update_condition=_newer_and_different(self.entity),
                    read_history=False,
                )
            finally:
                session.conf.unset(USER_METADATA_CONF)
            inserted = metrics.get("numTargetRowsInserted", 0)
            updated = metrics.get("numTargetRowsUpdated", 0)
        self.empty_target = False
        return inserted, updated, unique_keys, distinct_rows

    def _earlier_write(self, app_id: str, batch_id: int, unique_keys: int) -> tuple[int, int]:
        """(inserted, updated) by the commit of ``batch_id`` an earlier attempt made.

        A MERGE's counts are in its commit's metrics; a first-fill append inserted every key.
        Asked only of a replayed batch, so reading the table's history costs nothing otherwise.
        """
        commit = (
            DeltaTable.forPath(self.spark, self.catalog.path(self.target))
            .history()
            .where(F.col("userMetadata") == batch_metadata(app_id, batch_id))
            .select("operation", "operationMetrics")
            .first()
        )
        if commit is None or commit["operation"] != "MERGE":
            return unique_keys, 0
        metrics = commit["operationMetrics"] or {}
        return (
            int(metrics.get("numTargetRowsInserted") or 0),
            int(metrics.get("numTargetRowsUpdated") or 0),
        )

    def _record_counts(
        self, counts: Sequence[ExpectationCount], now: datetime, app_id: str, batch_id: int
    ) -> None:
        """Append the batch's counts per expectation to ``silver.expectation_results``."""
        rows = [
            (self.run_id, self.entity, c.name, c.action, int(c.passed), int(c.failed), now)
            for c in counts
        ]
        append_batch(
            self.spark.createDataFrame(rows, EXPECTATION_RESULTS_SCHEMA),
            self.catalog,
            SILVER_EXPECTATIONS,
            f"{app_id}:expectations",
            batch_id,
            self.replayed,
        )

    def _add(self, counts: Sequence[ExpectationCount], **batch: int) -> None:
        for name, value in batch.items():
            self.totals[name] += value
        for count in counts:
            if count.action == "warn":
                self.warnings[count.name] = self.warnings.get(count.name, 0) + count.failed


def build_silver_entity(
    spark: SparkSession,
    catalog: TableCatalog,
    entity: str,
    checkpoint_dir: Path | str,
    run_id: str,
    expectations: Sequence[Expectation] | None = None,
) -> SilverResult:
    """MERGE the bronze rows of ``entity`` not processed yet into ``silver.<entity>``.

    ``expectations`` defaults to :data:`lakehouse.medallion.expectations.EXPECTATIONS` of the
    entity; the built-in ``malformed``, ``schema_drift`` and ``required_fields`` rules always
    apply. A re-run with no new bronze row writes nothing. The micro-batches are processed by a
    :class:`SilverBatchProcessor`.

    Raises:
        ExpectationFailed: a ``fail`` expectation failed; nothing of that batch was written and
            the next run processes it again.
        ValueError: unknown entity, or the bronze table does not exist yet.
    """
    check_entity(entity)
    source_table = bronze_table(entity)
    if not catalog.exists(spark, source_table):
        raise ValueError(f"{source_table} does not exist: ingest the landing files first")
    empty_target = _ensure_tables(spark, catalog, entity)
    first, last = builtin_expectations(entity)
    rules = [*first, *(EXPECTATIONS[entity] if expectations is None else expectations), *last]
    processor = SilverBatchProcessor(
        spark,
        catalog,
        entity,
        checkpoint_dir,
        run_id,
        rules,
        empty_target=empty_target,
        replayed=pending_batch(spark, checkpoint_dir),  # a batch an earlier run did not finish
    )
    stream = _bronze_stream(spark, catalog, source_table)
    run_available_now(stream, checkpoint_dir, processor)
    return processor.result()


def _bronze_stream(spark: SparkSession, catalog: TableCatalog, name: str) -> DataFrame:
    """A streaming read of the append-only bronze table ``name``.

    A stream without a checkpoint yet starts from the table's first commit while the log still
    holds it: for an append-only table its changes are exactly the table's rows, read from the
    commit files, whereas the default start reconstructs and sorts the whole current snapshot
    first. With a checkpoint, the checkpoint decides where the stream resumes either way.
    """
    reader = spark.readStream.format("delta")
    if has_commit(spark, catalog, name, 0):
        reader = reader.option("startingVersion", 0)
    return reader.load(catalog.path(name))


def build_silver(
    spark: SparkSession,
    catalog: TableCatalog,
    checkpoint_dir: Path | str,
    run_id: str,
    entities: Sequence[str] = ENTITIES,
) -> list[SilverResult]:
    """Build silver for every entity, each with its own checkpoint ``checkpoint_dir/<entity>``."""
    for entity in entities:
        check_entity(entity)
    return [
        build_silver_entity(
            spark, catalog, entity, entity_checkpoint(checkpoint_dir, entity), run_id
        )
        for entity in entities
    ]


# --- Accounting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accounting:
    """Where the bronze rows of one entity went."""

    entity: str
    bronze_rows: int
    silver_rows: int
    quarantined_rows: int
    duplicate_rows: int

    @property
    def balanced(self) -> bool:
        """Every bronze row is in silver, in the quarantine, or counted as a duplicate."""
        return self.bronze_rows == self.silver_rows + self.quarantined_rows + self.duplicate_rows


def accounting(spark: SparkSession, catalog: TableCatalog, entity: str) -> Accounting:
    """Count bronze, silver, quarantined and duplicate rows of ``entity`` (missing tables: 0)."""
    check_entity(entity)

    def count(name: str, where: Column | None = None) -> int:
        if not catalog.exists(spark, name):
            return 0
        df = catalog.read(spark, name)
        return df.where(where).count() if where is not None else df.count()

    duplicates = 0
    if catalog.exists(spark, SILVER_EXPECTATIONS):
        row = (
            catalog.read(spark, SILVER_EXPECTATIONS)
            .where((F.col("entity") == entity) & (F.col("expectation") == DUPLICATES))
            .agg(F.sum("failed").alias("n"))
            .first()
        )
        duplicates = int(row["n"] or 0) if row else 0
    return Accounting(
        entity=entity,
        bronze_rows=count(bronze_table(entity)),
        silver_rows=count(silver_table(entity)),
        quarantined_rows=count(SILVER_QUARANTINE, F.col("entity") == entity),
        duplicate_rows=duplicates,
    )


# --- Orphans ------------------------------------------------------------------------------------


def orphan_counts(spark: SparkSession, catalog: TableCatalog) -> dict[str, int]:
    """Rows of silver whose reference is unknown, per entity: transactions and loan applications
    of a customer not in ``silver.customers``, repayments of an application not in
    ``silver.loan_applications`` (:data:`lakehouse.medallion.contracts.REFERENCES`).

    Orphans stay in silver and are held out of gold until the referenced record arrives (see
    :func:`lakehouse.medallion.gold.with_known_references`); call this after a run's silver
    builds to report them. An entity whose tables do not exist yet counts 0.
    """
    counts: dict[str, int] = {}
    for (entity, column), (target, key) in REFERENCES.items():
        source, referenced = silver_table(entity), silver_table(target)
        if not catalog.exists(spark, source):
            counts[entity] = 0
            continue
        rows = catalog.read(spark, source).select(column)
        if catalog.exists(spark, referenced):
            known = catalog.read(spark, referenced).select(F.col(key).alias(column)).distinct()
            rows = rows.join(known, column, "left_anti")
        counts[entity] = rows.count()
        if counts[entity]:
            log.warning(
                "%s: %d row(s) reference a %s not in %s; held out of gold until it arrives",
                source,
                counts[entity],
                key,
                referenced,
            )
    return counts


__all__ = [
    "Accounting",
    "SilverResult",
    "accounting",
    "build_silver",
    "build_silver_entity",
    "deduplicate",
    "ensure_shared_tables",
    "orphan_counts",
    "prepare_batch",
    "typed",
    "typed_columns",
    "typed_customers",
    "typed_loan_applications",
    "typed_repayments",
    "typed_transactions",
]
