"""Shared helpers of the benchmark scripts: timing, peak memory, target lines."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import psutil
from pyspark.sql import SparkSession

from lakehouse.features import store as features
from lakehouse.medallion.pipeline import run_pipeline
from lakehouse.platform.catalog import GOLD_LABELS, TableCatalog
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.simulation.generator import GeneratorConfig, generate

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` and return its result and wall time in seconds."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


@contextmanager
def peak_rss(pid: int, interval: float = 0.2) -> Iterator[dict[str, int]]:
    """Track the peak resident memory of ``pid`` and all its children (the JVM included)."""
    peak = {"bytes": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    with suppress(psutil.Error):
                        total += p.memory_info().rss
                peak["bytes"] = max(peak["bytes"], total)
            except psutil.Error:
                return
            stop.wait(interval)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def verdict(
    name: str, value: float, target: float, unit: str = "", higher_is_better: bool = False
) -> str:
    """One line: the figure, its target and whether it is met."""
    ok = value >= target if higher_is_better else value <= target
    op = ">=" if higher_is_better else "<="
    status = "MET" if ok else "MISSED"
    return f"{name:<52} {value:>9.2f}{unit:<4} target {op} {target:g}{unit:<4} {status}"


def quiet() -> None:
    """Warnings and library logging off: only the figures are printed."""
    os.environ.setdefault("FEAST_USAGE", "False")
    # Feast's Spark modules install their own warning filters when imported: import them first.
    import feast.infra.offline_stores.contrib.spark_offline_store.spark  # noqa: F401

    logging.basicConfig(level=logging.ERROR)
    for name in ("lakehouse", "feast", "py4j", "mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """Swallow what the libraries print on stdout and stderr (progress bars, banners)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def build_world(
    spark: SparkSession,
    home: Path,
    customers: int,
    days: int,
    materialize: bool = True,
    min_labels: int = 2,
) -> Settings:
    """Generate a world ending yesterday, run the pipeline, apply (and materialize) Feast."""
    settings = load_settings().with_home(home)
    catalog = TableCatalog(settings.tables_root)
    start = date.today() - timedelta(days=days)
    config = GeneratorConfig(customers=customers, days=days, start_date=start)
    report = generate(settings.landing_dir, config)
    txns = report.entities["transactions"].lines
    _, pipeline_s = timed(lambda: run_pipeline(spark, settings, catalog))
    features.use_session(spark)
    with muted():
        features.apply(settings)
        if materialize:
            features.materialize(settings, datetime.now(UTC))
    labels = catalog.read(spark, GOLD_LABELS).count()
    if labels < min_labels:
        raise SystemExit(f"only {labels} labelled applications: use more --customers or --days")
    print(
        f"world: {customers} customers x {days} days ({start} to {config.end_date}), "
        f"{txns} transaction lines, {labels} labelled applications; pipeline {pipeline_s:.0f}s"
    )
    return settings
