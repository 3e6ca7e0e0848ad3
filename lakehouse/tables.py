"""Delta table operations shared by every stage: write, merge, describe.

All functions take ``spark`` and a :class:`~lakehouse.catalog.TableCatalog`; none builds a
session or knows a path of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from lakehouse.catalog import TableCatalog, register_table


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

    Returns True when the table was created.
    """
    path = catalog.path(name)
    created = False
    if not DeltaTable.isDeltaTable(spark, path):
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
        builder.execute()
        created = True
    register_table(spark, catalog, name)
    return created


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
    df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(
        catalog.path(name)
    )


def merge_upsert(
    spark: SparkSession,
    catalog: TableCatalog,
    name: str,
    df: DataFrame,
    keys: list[str],
    update_condition: str | None = None,
    insert_only: bool = False,
) -> dict[str, int]:
    """MERGE ``df`` into ``name`` on ``keys``: insert new keys, update changed ones.

    ``update_condition`` (SQL over ``t`` and ``s``) limits which matches are updated, so a
    re-run of the same data changes nothing. Returns Delta's operation metrics.
    """
    create_if_missing(spark, catalog, name, df)
    target = DeltaTable.forPath(spark, catalog.path(name))
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    merge = target.alias("t").merge(df.alias("s"), on)
    if not insert_only:
        merge = merge.whenMatchedUpdateAll(condition=update_condition)
    merge.whenNotMatchedInsertAll().execute()
    return last_operation_metrics(spark, catalog, name)


def last_operation_metrics(spark: SparkSession, catalog: TableCatalog, name: str) -> dict[str, int]:
    """The ``operationMetrics`` of the latest commit of ``name``, as integers."""
    row = DeltaTable.forPath(spark, catalog.path(name)).history(1).first()
    metrics: dict[str, Any] = (row["operationMetrics"] if row else None) or {}
    return {k: int(v) for k, v in metrics.items() if str(v).lstrip("-").isdigit()}


def describe(spark: SparkSession, catalog: TableCatalog, name: str) -> TableInfo:
    """Location, row count, Delta version and last operation of ``name``."""
    path = catalog.path(name)
    last = DeltaTable.forPath(spark, path).history(1).first()
    rows = spark.read.format("delta").load(path).count()
    return TableInfo(
        name=name,
        location=path,
        rows=rows,
        version=int(last["version"]) if last else -1,
        last_operation=str(last["operation"]) if last else "",
        last_modified=str(last["timestamp"]) if last else "",
    )


def history(spark: SparkSession, catalog: TableCatalog, name: str, limit: int = 20) -> DataFrame:
    """Delta history of ``name``: version, time, operation, parameters and metrics."""
    return (
        DeltaTable.forPath(spark, catalog.path(name))
        .history(limit)
        .select("version", "timestamp", "operation", "operationParameters", "operationMetrics")
    )
