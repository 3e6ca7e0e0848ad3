"""Delta table operations shared by every stage: write, merge, describe.

All functions take ``spark`` and a :class:`~lakehouse.platform.catalog.TableCatalog`; none builds a
session or knows a path of its own.

Every write here is idempotent and is retried after a Delta write conflict with another writer
(:func:`lakehouse.platform.retry.retry_on_conflict`; a conflicting commit writes nothing): a
create is skipped once the table exists, an overwrite replaces the whole table, a MERGE matches
on the table's keys again, and an append is retried only after a conflict, which committed none
of its rows. After each commit a named crash point (:mod:`lakehouse.platform.crash`) lets a test
kill the process between the commit and whatever the caller records next.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from lakehouse.platform.catalog import TableCatalog, is_remote, register_table
from lakehouse.platform.crash import crash_point
from lakehouse.platform.errors import on_target
from lakehouse.platform.retry import retry_on_conflict

T = TypeVar("T")

#: Columns Delta keeps min/max statistics on: event times (each entity's, as in
#: ``lakehouse.medallion.contracts.EVENT_TIME``, and the feature tables'), the ingest time and the
#: predictions' model version. Rows land roughly in time order, so time filters skip files;
#: business keys are random and would skip nothing, so they only make writes slower.
STATS_COLUMNS: frozenset[str] = frozenset(
    {
        "updated_at",
        "transaction_ts",
        "applied_at",
        "observed_at",
        "event_timestamp",
        "_ingested_at",
        "model_version",
    }
)


@dataclass(frozen=True)
class TableInfo:
    """What ``lakehouse tables`` shows for one table."""

    name: str
    location: str
    rows: int
    version: int
    last_operation: str
    last_modified: str


def create_if_missing(
    spark: SparkSession,
    catalog: TableCatalog,
    name: str,
    df: DataFrame,
    comment: str | None = None,
    column_comments: dict[str, str] | None = None,
    partition_by: list[str] | None = None,
) -> bool:
    """Create an empty Delta table with ``df``'s schema unless it exists; register it.

    Returns True when the table was created. Two writers creating the same table at once: one
    commit wins, the other gets a conflict, is retried and finds the table there.
    """
    path = catalog.path(name)

    def create() -> bool:
        if DeltaTable.isDeltaTable(spark, path):
            return False
        # Column comments go in with the schema: creating the table is one commit.
        builder = DeltaTable.createIfNotExists(spark).location(path)
        for field in df.schema.fields:
            builder = builder.addColumn(
                field.name,
                field.dataType,
                nullable=field.nullable,
                comment=(column_comments or {}).get(field.name),
            )
        if comment:
            builder = builder.comment(comment)
        if partition_by:
            builder = builder.partitionedBy(*partition_by)
        for key, value in table_properties(df.schema).items():
            builder = builder.property(key, value)
        builder.execute()
        return True

    with on_target(name):
        created = retry_on_conflict(name, create)
    if created:
        crash_point(f"created:{name}")
    register_table(spark, catalog, name)
    return created


def table_properties(schema: StructType) -> dict[str, str]:
    """The Delta properties a new platform table with ``schema`` is created with.

    ``delta.dataSkippingStatsColumns``: statistics only on the :data:`STATS_COLUMNS` the table
    has (Delta rejects a listed column that a table lacks, so each table lists its own).
    """
    stats = [field.name for field in schema.fields if field.name in STATS_COLUMNS]
    return {"delta.dataSkippingStatsColumns": ",".join(stats)} if stats else {}


def overwrite(
    spark: SparkSession,
    catalog: TableCatalog,
    name: str,
    df: DataFrame,
    comment: str | None = None,
    column_comments: dict[str, str] | None = None,
) -> None:
    """Replace the contents of ``name`` with ``df`` (one new Delta version)."""
    create_if_missing(spark, catalog, name, df, comment, column_comments)

    def replace() -> None:
        df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(
            catalog.path(name)
        )

    with on_target(name):
        retry_on_conflict(name, replace)
    crash_point(f"overwrite:{name}")


def merge_upsert(
    spark: SparkSession,
    catalog: TableCatalog,
    name: str,
    df: DataFrame,
    keys: list[str],
    update_condition: str | None = None,
    insert_only: bool = False,
    read_history: bool = True,
) -> dict[str, int]:
    """MERGE ``df`` into ``name`` on ``keys``: insert new keys, update changed ones.

    ``update_condition`` (SQL over ``t`` and ``s``) limits which matches are updated, so a
    re-run of the same data changes nothing. Returns Delta's operation metrics, read back from
    the table's history; with ``read_history=False`` only the row counts the MERGE itself
    returns (``numTargetRowsInserted``, ``numTargetRowsUpdated``, ``numTargetRowsDeleted``),
    which saves reading the log again.
    """
    create_if_missing(spark, catalog, name, df)
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)

    def merge() -> DataFrame:
        # Each attempt reads the table afresh: rows a concurrent writer committed are matched.
        target = DeltaTable.forPath(spark, catalog.path(name))
        builder = target.alias("t").merge(df.alias("s"), on)
        if not insert_only:
            builder = builder.whenMatchedUpdateAll(condition=update_condition)
        return builder.whenNotMatchedInsertAll().execute()

    with on_target(name):
        result = retry_on_conflict(name, merge)
    crash_point(f"merge:{name}")
    if read_history:
        return last_operation_metrics(spark, catalog, name)
    row = result.first()
    counts = row.asDict() if row else {}
    return {
        metric: int(counts.get(column) or 0)
        for metric, column in (
            ("numTargetRowsInserted", "num_inserted_rows"),
            ("numTargetRowsUpdated", "num_updated_rows"),
            ("numTargetRowsDeleted", "num_deleted_rows"),
        )
    }


def _log_dir(spark: SparkSession, catalog: TableCatalog, name: str) -> tuple[Any, Any, Any]:
    """The Hadoop file system and ``_delta_log`` folder of ``name``, and Hadoop's Path class."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    path_class = jvm.org.apache.hadoop.fs.Path
    log_dir = path_class(f"{catalog.path(name)}/_delta_log")
    return log_dir.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), log_dir, path_class


def _read_text(spark: SparkSession, fs: Any, file: Any) -> str:
    """The content of a small file (a Delta log entry) on a Hadoop file system."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    stream = fs.open(file)
    try:
        return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


def has_commit(spark: SparkSession, catalog: TableCatalog, name: str, version: int) -> bool:
    """Whether the log of ``name`` still holds the commit file of ``version``.

    Asks the file system directly (no log replay); old commit files are removed by log cleanup.
    """
    fs, log_dir, path = _log_dir(spark, catalog, name)
    return bool(fs.exists(path(log_dir, f"{version:020d}.json")))


def delta_version(spark: SparkSession, catalog: TableCatalog, name: str, since: int = -1) -> int:
    """The latest committed Delta version of ``name``; -1 when it has none or does not exist.

    Read from the log folder without a Spark job (``DESCRIBE HISTORY`` runs one): the commit
    files ``_delta_log/<version>.json`` are probed upwards from the last checkpoint recorded in
    ``_last_checkpoint``, or from ``since`` (a version known to be committed) if that is later.
    That is a few file-status calls, and it sees the commits of other processes at once.
    """
    fs, log_dir, path = _log_dir(spark, catalog, name)
    version = since
    marker = path(log_dir, "_last_checkpoint")
    if fs.exists(marker):
        try:
            version = max(version, int(json.loads(_read_text(spark, fs, marker))["version"]))
        except (ValueError, KeyError, TypeError):  # unreadable: let Delta read its own log
            return catalog.version(spark, name)
    while fs.exists(path(log_dir, f"{version + 1:020d}.json")):
        version += 1
    return version


def _commit_info(spark: SparkSession, catalog: TableCatalog, name: str, version: int) -> Any:
    """The ``commitInfo`` action of one commit of ``name`` (empty if it has none)."""
    fs, log_dir, path = _log_dir(spark, catalog, name)
    return _read_commit_info(spark, fs, path(log_dir, f"{version:020d}.json"))


def _read_commit_info(spark: SparkSession, fs: Any, file: Any) -> Any:
    """The ``commitInfo`` action of the commit file ``file`` (empty if it has none)."""
    for line in _read_text(spark, fs, file).splitlines():
        action = json.loads(line) if line.strip() else {}
        if "commitInfo" in action:
            return action["commitInfo"]
    return {}


def _newest_user_metadata(
    spark: SparkSession,
    catalog: TableCatalog,
    name: str,
    pick: Callable[[str], T | None],
) -> T | None:
    """``pick(userMetadata)`` of the newest commit of ``name`` for which it is not None; None
    when no commit still in the log gives a value (or the table does not exist).

    Read from the commit files, newest first, without a Spark job (``DESCRIBE HISTORY`` runs one
    over every commit still in the log).
    """
    fs, log_dir, path = _log_dir(spark, catalog, name)
    version = delta_version(spark, catalog, name)
    while version >= 0:
        file = path(log_dir, f"{version:020d}.json")
        if not fs.exists(file):  # removed by log cleanup
            break
        metadata = _read_commit_info(spark, fs, file).get("userMetadata")
        picked = pick(metadata) if isinstance(metadata, str) else None
        if picked is not None:
            return picked
        version -= 1
    return None


def latest_user_metadata(
    spark: SparkSession, catalog: TableCatalog, name: str, containing: str
) -> str | None:
    """The ``userMetadata`` of the newest commit of ``name`` whose metadata contains
    ``containing``; None when no commit still in the log has such metadata.

    Read from the commit files, newest first, without a Spark job.
    """
    return _newest_user_metadata(
        spark, catalog, name, lambda metadata: metadata if containing in metadata else None
    )


# --- Exactly-once appends of stream micro-batches ----------------------------------------------

#: The ``userMetadata`` key that marks a commit as one micro-batch of one writer.
BATCH_KEY = "lakehouse.batch"


def batch_metadata(writer: str, batch_id: int) -> str:
    """The ``userMetadata`` of the commit that appends micro-batch ``batch_id`` of ``writer``."""
    return json.dumps({BATCH_KEY: {"writer": writer, "batch": batch_id}}, sort_keys=True)


def committed_batch(spark: SparkSession, catalog: TableCatalog, name: str, writer: str) -> int:
    """The newest micro-batch of ``writer`` committed to ``name``; -1 when the log holds none.

    Read from the commit files, newest first, down to the newest commit that carries
    ``writer``'s mark (:func:`batch_metadata`), so up to the whole log when ``writer`` never
    committed; :func:`append_batch` asks only for a batch that is being replayed.
    """

    def batch_of_writer(metadata: str) -> int | None:
        if BATCH_KEY not in metadata:
            return None
        try:
            mark = json.loads(metadata)[BATCH_KEY]
            return int(mark["batch"]) if mark["writer"] == writer else None
        except (ValueError, KeyError, TypeError):
            return None

    batch = _newest_user_metadata(spark, catalog, name, batch_of_writer)
    return -1 if batch is None else batch


def append_batch(
    df: DataFrame,
    catalog: TableCatalog,
    name: str,
    writer: str,
    batch_id: int,
    replayed: int | None,
) -> bool:
    """Append micro-batch ``batch_id`` of ``writer`` (a stream's ``foreachBatch``) to ``name``,
    exactly once; False when an earlier attempt had committed it already, so nothing was written.

    Each append marks its commit with ``writer`` and ``batch_id`` (:func:`batch_metadata`).
    ``replayed`` is the batch the stream left started but not committed when it last stopped:
    the one batch whose rows an earlier attempt may have appended, and the only one that looks
    for its mark in the log.

    This does what Delta's idempotent-write options (``txnAppId``, ``txnVersion``) do without
    their price: Delta answers ``txnVersion`` from the table's fully reconstructed state, several
    Spark jobs before every append. The marks live in the commit files, so a replay must come
    within the log's retention (``delta.logRetentionDuration``) of the attempt it repeats.
    """
    spark = df.sparkSession
    if batch_id == replayed and committed_batch(spark, catalog, name, writer) >= batch_id:
        return False

    def append() -> None:
        (
            df.write.format("delta")
            .mode("append")
            .option("userMetadata", batch_metadata(writer, batch_id))
            .save(catalog.path(name))
        )

    with on_target(name):
        retry_on_conflict(name, append)
    crash_point(f"append:{name}")
    return True


def _int_metrics(metrics: dict[str, Any] | None) -> dict[str, int]:
    """Delta's ``operationMetrics`` (strings) as integers; non-numeric entries left out."""
    return {k: int(v) for k, v in (metrics or {}).items() if str(v).lstrip("-").isdigit()}


def merge_metrics(
    spark: SparkSession, catalog: TableCatalog, name: str, before: int, after: int
) -> dict[str, int]:
    """The ``operationMetrics`` of the newest MERGE in versions ``before+1..after``.

    Read from the commit files (no Spark job); empty when none of them is a MERGE.
    """
    for version in range(after, before, -1):
        info = _commit_info(spark, catalog, name, version)
        if info.get("operation") == "MERGE":
            return _int_metrics(info.get("operationMetrics"))
    return {}


def latest_commit(spark: SparkSession, catalog: TableCatalog, name: str) -> tuple[int, Any]:
    """The latest version of ``name`` and its ``commitInfo`` action (-1 and empty without one).

    Read from the newest commit file, without the Spark job ``DESCRIBE HISTORY`` runs over the
    whole log.
    """
    version = delta_version(spark, catalog, name)
    return version, _commit_info(spark, catalog, name, version) if version >= 0 else {}


def last_operation_metrics(spark: SparkSession, catalog: TableCatalog, name: str) -> dict[str, int]:
    """The ``operationMetrics`` of the latest commit of ``name``, as integers."""
    return _int_metrics(latest_commit(spark, catalog, name)[1].get("operationMetrics"))


def describe(spark: SparkSession, catalog: TableCatalog, name: str) -> TableInfo:
    """Location, row count, Delta version and last operation of ``name``.

    The version and the last operation come from :func:`latest_commit` (``DESCRIBE HISTORY`` is
    asked only when that commit carries no ``commitInfo``); the rows are counted by Delta.
    """
    path = catalog.path(name)
    # A Spark Connect client has no py4j to read the log with: the server answers in SQL.
    version, info = (-1, {}) if is_remote(spark) else latest_commit(spark, catalog, name)
    if isinstance(info.get("operation"), str) and isinstance(info.get("timestamp"), int):
        operation = info["operation"]
        modified = datetime.fromtimestamp(info["timestamp"] / 1000, UTC).isoformat(" ")
    else:
        last = spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()
        version = int(last["version"]) if last else -1
        operation = str(last["operation"]) if last else ""
        modified = str(last["timestamp"]) if last else ""
    rows = spark.read.format("delta").load(path).count()
    return TableInfo(
        name=name,
        location=path,
        rows=rows,
        version=version,
        last_operation=operation,
        last_modified=modified,
    )


def history(spark: SparkSession, catalog: TableCatalog, name: str, limit: int = 20) -> DataFrame:
    """Delta history of ``name``: version, time, operation, parameters and metrics."""
    return (
        DeltaTable.forPath(spark, catalog.path(name))
        .history(limit)
        .select("version", "timestamp", "operation", "operationParameters", "operationMetrics")
    )
