"""``lakehouse ingest`` and ``jobs/ingest.py``: a user's folder into bronze, then silver by a spec.

One run ingests the folder's new files (:func:`lakehouse.medallion.autoloader.ingest_folder`)
and, given a silver spec, builds its silver table from the bronze rows not processed yet
(:func:`lakehouse.medallion.user_silver.build_user_silver`). Both streams keep their checkpoints
under ``$LAKEHOUSE_HOME/checkpoints/ingest/<table>``; a lock per bronze table
(``$LAKEHOUSE_HOME/locks/ingest-<table>.lock``) keeps two runs from committing the same
micro-batch of one checkpoint.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from lakehouse.medallion.autoloader import AutoLoaderResult, check_table, ingest_folder
from lakehouse.medallion.silver import Accounting, SilverResult
from lakehouse.medallion.user_silver import (
    SilverSpec,
    build_user_silver,
    user_accounting,
)
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.locks import Holder, exclusive
from lakehouse.platform.settings import Settings


@dataclass(frozen=True)
class IngestRequest:
    """What ``lakehouse ingest`` was asked to do (see :func:`run_ingest`)."""

    source_dir: str
    table: str
    fmt: str
    schema_hints: str | None = None
    evolution: str = "addNewColumns"
    glob: str | None = None
    spec: SilverSpec | None = None


@dataclass(frozen=True)
class IngestReport:
    """What one run did: the bronze ingest, and the silver build with its accounting."""

    bronze: AutoLoaderResult
    silver: SilverResult | None = None
    accounting: Accounting | None = None

    def lines(self) -> list[str]:
        """The summary a person reads."""
        lines = [str(self.bronze)]
        if self.silver is not None:
            lines.append(str(self.silver))
        if self.accounting is not None:
            a = self.accounting
            verdict = "balanced" if a.balanced else "NOT balanced"
            lines.append(
                f"{a.entity}: {a.bronze_rows} bronze = {a.silver_rows} silver + "
                f"{a.quarantined_rows} quarantined + {a.duplicate_rows} duplicates ({verdict})"
            )
        return lines


def checkpoint_dir(settings: Settings, table: str) -> Path:
    """The checkpoint of the stream that writes ``table`` (its schema files live under it)."""
    return settings.checkpoints_dir / "ingest" / table


def ingest_lock(
    settings: Settings, table: str, wait: float = 0.0
) -> AbstractContextManager[Holder]:
    """The lock of one bronze table's ingest (and the silver build reading it)."""
    check_table(table)
    return exclusive(settings.home, f"ingest-{table}", wait=wait)


def run_ingest(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, request: IngestRequest
) -> IngestReport:
    """Ingest the folder's new files, then build silver when the request carries a spec.

    Raises:
        ExpectationFailed: an ``expect_or_fail`` rule failed (the bronze rows stay ingested;
            nothing of the failing silver batch was written).
    """
    bronze = ingest_folder(
        spark,
        catalog,
        request.source_dir,
        request.table,
        request.fmt,
        checkpoint_dir(settings, request.table),
        schema_hints=request.schema_hints,
        evolution=request.evolution,
        glob=request.glob,
    )
    if request.spec is None:
        return IngestReport(bronze)
    spec = request.spec.with_source(request.table)
    silver = build_user_silver(spark, catalog, spec, checkpoint_dir(settings, spec.target))
    return IngestReport(bronze, silver, user_accounting(spark, catalog, spec))
