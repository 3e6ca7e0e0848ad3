"""The medallion pipeline: landing -> bronze -> silver -> gold, on one session.

The three stages are also separate spark-submit jobs (``jobs/ingest_bronze.py``,
``jobs/build_silver.py``, ``jobs/build_gold.py``); :func:`run_pipeline` runs them in one process
on one SparkSession, which is what ``lakehouse pipeline run`` and the demo do.

The entities are independent until gold: each has its own landing folder, stream checkpoints,
bronze and silver tables (the shared ``silver.quarantine`` and ``silver.expectation_results`` only
receive appends). So the entities run side by side, each on its own thread of the one session:
Spark runs the jobs of several queries at once, and while one entity waits on a commit or a
checkpoint another keeps the cores busy. Within a run, an entity goes from bronze to silver as soon
as its own ingest is done, and a gold table is built as soon as the silver tables it reads are
(``gold.customer_transaction_features`` does not wait for the customers or the loans). As in a
Delta Live Tables update, an entity whose silver build fails stops only the gold tables that read
it: the others are still built, then the error is raised.

Recovery and concurrency: a run killed anywhere is finished by the next one (each stage resumes
from its stream checkpoint, appends are marked per micro-batch and MERGEs are keyed, so nothing
is written twice); Delta write conflicts are retried (:mod:`lakehouse.platform.retry`); and one
run at a time holds :func:`pipeline_lock`, because two runs would race on the same stream
checkpoints. Named crash points (:mod:`lakehouse.platform.crash`) let tests kill a run at each
step.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyspark.sql import SparkSession

from lakehouse.medallion.bronze import IngestResult, ingest_entity
from lakehouse.medallion.gold import GOLD_TABLES, GoldTable, build_gold_table
from lakehouse.medallion.gold import build_gold as build_gold_tables
from lakehouse.medallion.silver import (
    SilverResult,
    build_silver_entity,
    ensure_shared_tables,
    orphan_counts,
    silver_table,
)
from lakehouse.platform.catalog import (
    ENTITIES,
    SILVER_QUARANTINE,
    TableCatalog,
    register_all,
)
from lakehouse.platform.crash import crash_point
from lakehouse.platform.errors import on_target
from lakehouse.platform.locks import Holder, exclusive
from lakehouse.platform.retry import retry_on_conflict
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import delta_version

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("bronze", "silver", "gold")
#: Name of the lock one pipeline run holds (``<home>/locks/pipeline.lock``).
PIPELINE_LOCK = "pipeline"

T = TypeVar("T")


@dataclass
class StageTiming:
    """How long one stage took, in seconds.

    When entities overlap (bronze of one entity while silver of another runs), a stage's time is
    the wall time from the end of the previous stage (or the start) until its last entity
    finished, so the timings of a run add up to its wall time.
    """

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
    #: Silver rows per entity whose customer (or application) is unknown, held out of gold.
    orphans: dict[str, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Total wall time of the stages."""
        return sum(t.seconds for t in self.timings)

    @property
    def rows_ingested(self) -> int:
        """Rows appended to bronze by this run."""
        return sum(int(getattr(r, "rows", 0)) for r in self.bronze)

    @property
    def held(self) -> str:
        """The orphans as ``held (reference unknown): transactions 2, ...``; empty if none."""
        held = [f"{entity} {n}" for entity, n in self.orphans.items() if n]
        return f"held (reference unknown): {', '.join(held)}" if held else ""


def pipeline_lock(settings: Settings, wait: float = 0.0) -> AbstractContextManager[Holder]:
    """The lock of the pipeline's tables and checkpoints under ``settings.home``.

    Every entry point that writes them (``lakehouse pipeline run``, the demo, the bronze, silver
    and gold jobs) holds it: two runs at once would commit the same micro-batch to the same
    stream checkpoint. Raises :class:`~lakehouse.platform.locks.LockBusy` when another process
    holds it after ``wait`` seconds.
    """
    return exclusive(settings.home, PIPELINE_LOCK, wait=wait)


def new_run_id() -> str:
    """A short unique id for a pipeline run."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def for_each_entity(
    work: Callable[[str], T], entities: Sequence[str], parallel: bool = True
) -> list[T]:
    """``work(entity)`` for every entity, results in the order of ``entities``.

    With ``parallel`` each entity runs on its own thread (sharing the session); every entity
    is carried to its end even when another fails, then the first error, in the order of
    ``entities``, is raised.
    """
    if not parallel or len(entities) < 2:
        return [work(entity) for entity in entities]
    with ThreadPoolExecutor(len(entities), thread_name_prefix="lakehouse") as pool:
        futures = [pool.submit(work, entity) for entity in entities]
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
    return [f.result() for f in futures]


def _ingest(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, entity: str
) -> IngestResult:
    started = time.perf_counter()
    checkpoint = settings.checkpoint_location("bronze", entity)
    with on_target(f"bronze.{entity}_raw (from {settings.landing_dir / entity})"):
        result = ingest_entity(spark, catalog, entity, settings.landing_dir, checkpoint)
    crash_point(f"bronze:{entity}")
    log.info(
        "[bronze] %-17s %3d new files, %8d rows (%.1fs)",
        entity,
        result.files,
        result.rows,
        time.perf_counter() - started,
    )
    return result


def _build(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, run_id: str, entity: str
) -> SilverResult:
    started = time.perf_counter()
    checkpoint = settings.checkpoint_location("silver", entity)
    with on_target(silver_table(entity)):
        result = build_silver_entity(spark, catalog, entity, checkpoint, run_id)
    crash_point(f"silver:{entity}")
    log.info("[silver] %-17s %s (%.1fs)", entity, result, time.perf_counter() - started)
    return result


def ingest_bronze(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    entities: Sequence[str] = ENTITIES,
    parallel: bool = True,
) -> list[Any]:
    """Ingest new landing files of ``entities`` into bronze, each file exactly once.

    The entities are ingested side by side unless ``parallel`` is False.
    """
    return for_each_entity(lambda e: _ingest(spark, settings, catalog, e), entities, parallel)


def build_silver(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    run_id: str,
    entities: Sequence[str] = ENTITIES,
    parallel: bool = True,
) -> list[Any]:
    """Type, check, deduplicate and MERGE new bronze rows into silver.

    The entities are built side by side unless ``parallel`` is False.
    """
    ensure_shared_tables(spark, catalog)
    return for_each_entity(
        lambda e: _build(spark, settings, catalog, run_id, e), entities, parallel
    )


def build_gold(spark: SparkSession, catalog: TableCatalog, parallel: bool = True) -> dict[str, int]:
    """Rebuild the gold feature tables and labels when silver changed.

    The tables are built side by side unless ``parallel`` is False.
    """
    # Idempotent as a whole: a table whose silver inputs are those recorded at its last build is
    # skipped, and a rebuild MERGEs only new or changed rows, so a conflicting attempt is redone.
    counts = retry_on_conflict("gold", lambda: build_gold_tables(spark, catalog, parallel=parallel))
    crash_point("gold:all")
    _log_gold(counts)
    return counts


def _log_gold(counts: dict[str, int]) -> None:
    for name, rows in counts.items():
        log.info("[gold]   %-40s %8d rows", name, rows)


def _gold_table(
    spark: SparkSession,
    catalog: TableCatalog,
    table: GoldTable,
    created_at: dt.datetime,
    versions: dict[str, int],
) -> int:
    """Build one gold table, again after a Delta write conflict (see :func:`build_gold`)."""
    with on_target(table.name):
        rows = retry_on_conflict(
            table.name,
            lambda: build_gold_table(spark, catalog, table, created_at, versions),
        )
    crash_point(f"gold:{table.name}")
    return rows


def _chained_stages(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    report: PipelineReport,
    parallel: bool,
    gold: bool = False,
) -> None:
    """Each entity from landing to silver, the entities side by side; stage timings recorded.

    With ``gold``, each gold table is built, on a thread of its own, as soon as every silver
    table it reads is built (in this run); a table whose input failed is not built. Errors are
    raised once everything started has finished: the first entity's, else the first gold
    table's.
    """
    started = time.perf_counter()
    ensure_shared_tables(spark, catalog)
    bronze_done: dict[str, float] = {}
    lock = threading.Lock()
    built: set[str] = set()  # silver tables built by this run
    gold_builds: dict[str, Future[int]] = {}
    created_at: list[dt.datetime] = []  # one created_at for every gold row of the run
    gold_pool = ThreadPoolExecutor(len(GOLD_TABLES), thread_name_prefix="lakehouse-gold")

    def silver_built(table_name: str) -> None:
        """Record a built silver table and start the gold tables now ready."""
        with lock:
            built.add(table_name)
            for table in GOLD_TABLES:
                if table.name in gold_builds or not set(table.inputs) <= built:
                    continue
                if not created_at:
                    log.info("[gold] starting")
                    created_at.append(dt.datetime.now(dt.UTC))
                versions = {name: delta_version(spark, catalog, name) for name in table.inputs}
                gold_builds[table.name] = gold_pool.submit(
                    _gold_table, spark, catalog, table, created_at[0], versions
                )

    def chain(entity: str) -> tuple[Any, Any]:
        ingested = _ingest(spark, settings, catalog, entity)
        bronze_done[entity] = time.perf_counter()
        silver = _build(spark, settings, catalog, report.run_id, entity)
        if gold:
            silver_built(silver_table(entity))
        return ingested, silver

    try:
        results = for_each_entity(chain, ENTITIES, parallel)
    finally:
        silver_end = time.perf_counter()
        gold_pool.shutdown(wait=True)  # the gold tables started finish either way
        ended = time.perf_counter()
        bronze_end = max(bronze_done.values(), default=silver_end)
        report.timings.append(StageTiming("bronze", bronze_end - started))
        report.timings.append(StageTiming("silver", silver_end - bronze_end))
        if gold:
            report.timings.append(StageTiming("gold", ended - silver_end))
    report.bronze = [bronze for bronze, _ in results]
    report.silver = [silver for _, silver in results]
    if gold:
        report.gold = {
            table.name: gold_builds[table.name].result()
            for table in GOLD_TABLES
            if table.name in gold_builds
        }
        _log_gold(report.gold)


def run_pipeline(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    stages: Sequence[str] = STAGES,
    run_id: str | None = None,
    parallel: bool = True,
) -> PipelineReport:
    """Run the given stages in order on one session; return what each did and its timing.

    With ``parallel`` (the default) the entities run side by side, and when both bronze and
    silver run, each entity goes on to silver as soon as its own ingest is done, and each gold
    table is built as soon as the silver tables it reads are (see the module's description).
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}: expected some of {list(STAGES)}")
    report = PipelineReport(run_id=run_id or new_run_id())
    run_started = time.perf_counter()
    chained: set[str] = set()
    if parallel and "bronze" in stages and "silver" in stages:
        chained = {"bronze", "silver", *(["gold"] if "gold" in stages else [])}
        log.info("%s starting", " ".join(f"[{stage}]" for stage in STAGES if stage in chained))
        _chained_stages(spark, settings, catalog, report, parallel, gold="gold" in chained)
    for stage in STAGES:
        if stage not in stages or stage in chained:
            continue
        started = time.perf_counter()
        log.info("[%s] starting", stage)
        if stage == "bronze":
            report.bronze = ingest_bronze(spark, settings, catalog, parallel=parallel)
        elif stage == "silver":
            report.silver = build_silver(spark, settings, catalog, report.run_id, parallel=parallel)
        else:
            report.gold = build_gold(spark, catalog, parallel)
        report.timings.append(StageTiming(stage, time.perf_counter() - started))
    register_all(spark, catalog)
    if "silver" in stages:
        report.orphans = orphan_counts(spark, catalog)
    log.info(
        "pipeline %s: %s (%.1fs)",
        report.run_id,
        ", ".join(f"{t.stage} {t.seconds:.1f}s" for t in report.timings),
        time.perf_counter() - run_started,
    )
    return report


def quarantine_counts(spark: SparkSession, catalog: TableCatalog) -> dict[tuple[str, str], int]:
    """Rows in ``silver.quarantine`` per (entity, rule)."""
    if not catalog.exists(spark, SILVER_QUARANTINE):
        return {}
    rows = catalog.read(spark, SILVER_QUARANTINE).groupBy("entity", "rule").count().collect()
    return {(r["entity"], r["rule"]): int(r["count"]) for r in rows}
