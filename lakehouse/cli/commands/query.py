"""``lakehouse sql``, ``lakehouse tables`` and ``lakehouse history``."""

from __future__ import annotations

import argparse
import sys

from lakehouse.cli.console import render_df, render_rows
from lakehouse.platform.catalog import split_name
from lakehouse.platform.errors import report
from lakehouse.platform.session import platform_spark
from lakehouse.platform.settings import load_settings
from lakehouse.platform.spark import table_catalog
from lakehouse.platform.tables import describe, history


def register(sub: argparse._SubParsersAction) -> None:
    """Add the query commands."""
    sql = sub.add_parser(
        "sql",
        help="run a SQL statement over the lakehouse tables",
        description="Run Spark SQL; bronze.*, silver.* and gold.* resolve. "
        "Time travel: SELECT ... FROM silver.customers VERSION AS OF 0.",
    )
    sql.add_argument("statement", help="the SQL statement, quoted")
    sql.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    sql.set_defaults(handler=run_sql)

    tables = sub.add_parser("tables", help="list tables with location, rows and Delta version")
    tables.set_defaults(handler=run_tables)

    hist = sub.add_parser("history", help="show the Delta history of a table")
    hist.add_argument("table", help="table name, for example silver.customers")
    hist.add_argument("--limit", type=int, default=20, help="versions to show (default 20)")
    hist.set_defaults(handler=run_history)


def run_sql(args: argparse.Namespace) -> int:
    """Execute the statement and print the result."""
    spark = platform_spark(load_settings(), "lakehouse-sql")
    try:
        from pyspark.errors import PySparkException

        try:
            df = spark.sql(args.statement)
        except PySparkException as exc:
            return report(exc, "lakehouse sql")
        print(render_df(df, limit=args.limit))
        return 0
    finally:
        spark.stop()


def run_tables(args: argparse.Namespace) -> int:
    """Print every table with its location, row count and version."""
    settings = load_settings()
    spark = platform_spark(settings, "lakehouse-tables")
    try:
        catalog = table_catalog(settings)
        infos = [describe(spark, catalog, name) for name in catalog.list_tables(spark)]
        if not infos:
            print(f"no tables under {catalog.root}; run `lakehouse pipeline run` first")
            return 0
        print(
            render_rows(
                ["table", "rows", "version", "last operation", "location"],
                [(i.name, i.rows, i.version, i.last_operation, i.location) for i in infos],
            )
        )
        return 0
    finally:
        spark.stop()


def run_history(args: argparse.Namespace) -> int:
    """Print the Delta history of one table."""
    try:
        split_name(args.table)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = load_settings()
    spark = platform_spark(settings, "lakehouse-history")
    try:
        catalog = table_catalog(settings)
        if not catalog.exists(spark, args.table):
            print(f"error: no table {args.table} under {catalog.root}", file=sys.stderr)
            return 1
        print(render_df(history(spark, catalog, args.table, args.limit), limit=args.limit))
        return 0
    finally:
        spark.stop()
