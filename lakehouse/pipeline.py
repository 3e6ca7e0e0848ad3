"""The medallion pipeline: landing -> bronze -> silver -> gold, on one session.

The three stages are also separate spark-submit jobs (``jobs/ingest_bronze.py``,
``jobs/build_silver.py``, ``jobs/build_gold.py``); :func:`run_pipeline` runs them in one process
on one SparkSession, which is what ``lakehouse pipeline run`` and the demo do.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from lakehouse.catalog import (
    ENTITIES,
    SILVER_QUARANTINE,
    TableCatalog,
    register_all,
)
from lakehouse.settings import Settings

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("bronze", "silver", "gold")


@dataclass
class StageTiming:
    """How long one stage took, in seconds."""

    stage: str
    seconds: float


@dataclass
class PipelineReport:
    """What one pipeline run did."""

    run_id: str
    bronze: list[Any] = field(default_factory=list)
    silver: list[Any] = field(default_factory=list)
    gold: dict[str, int] = field(default_factory=dict)
    timings: list[StageTiming] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Total wall time of the stages."""
        return sum(t.seconds for t in self.timings)

    @property
    def rows_ingested(self) -> int:
        """Rows appended to bronze by this run."""
        return sum(int(getattr(r, "rows", 0)) for r in self.bronze)


def new_run_id() -> str:
    """A short unique id for a pipeline run."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def ingest_bronze(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    entities: Sequence[str] = ENTITIES,
) -> list[Any]:
    """Ingest new landing files of ``entities`` into bronze, each file exactly once."""
    from lakehouse.bronze import ingest_entity

    results = []
    for entity in entities:
        started = time.perf_counter()
        result = ingest_entity(
            spark,
            catalog,
            entity,
            settings.landing_dir,
            settings.checkpoints_dir / "bronze" / entity,
        )
        log.info(
            "[bronze] %-17s %3d new files, %8d rows (%.1fs)",
            entity,
            result.files,
            result.rows,
            time.perf_counter() - started,
        )
        results.append(result)
    return results


def build_silver(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    run_id: str,
    entities: Sequence[str] = ENTITIES,
) -> list[Any]:
    """Type, check, deduplicate and MERGE new bronze rows into silver."""
    from lakehouse.silver import build_silver_entity

    results = []
    for entity in entities:
        started = time.perf_counter()
        result = build_silver_entity(
            spark, catalog, entity, settings.checkpoints_dir / "silver" / entity, run_id
        )
        log.info("[silver] %-17s %s (%.1fs)", entity, result, time.perf_counter() - started)
        results.append(result)
    return results


def build_gold(spark: SparkSession, catalog: TableCatalog) -> dict[str, int]:
    """Rebuild the gold feature tables and labels when silver changed."""
    from lakehouse.gold import build_gold as _build_gold

    counts = _build_gold(spark, catalog)
    for name, rows in counts.items():
        log.info("[gold]   %-40s %8d rows", name, rows)
    return counts


def run_pipeline(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    stages: Sequence[str] = STAGES,
    run_id: str | None = None,
) -> PipelineReport:
    """Run the given stages in order on one session; return what each did and its timing."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}: expected some of {list(STAGES)}")
    report = PipelineReport(run_id=run_id or new_run_id())
    for stage in STAGES:
        if stage not in stages:
            continue
        started = time.perf_counter()
        log.info("[%s] starting", stage)
        if stage == "bronze":
            report.bronze = ingest_bronze(spark, settings, catalog)
        elif stage == "silver":
            report.silver = build_silver(spark, settings, catalog, report.run_id)
        else:
            report.gold = build_gold(spark, catalog)
        report.timings.append(StageTiming(stage, time.perf_counter() - started))
    register_all(spark, catalog)
    return report


def quarantine_counts(spark: SparkSession, catalog: TableCatalog) -> dict[tuple[str, str], int]:
    """Rows in ``silver.quarantine`` per (entity, rule)."""
    if not catalog.exists(spark, SILVER_QUARANTINE):
        return {}
    rows = catalog.read(spark, SILVER_QUARANTINE).groupBy("entity", "rule").count().collect()
    return {(r["entity"], r["rule"]): int(r["count"]) for r in rows}
