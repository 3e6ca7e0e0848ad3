"""What every spark-submit job shares: settings, one session, a clean stop."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark.sql import SparkSession

from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.platform.spark import get_spark, table_catalog


@dataclass(frozen=True)
class JobContext:
    """The settings, session and table catalog a job runs with."""

    settings: Settings
    spark: SparkSession
    catalog: TableCatalog


def configure_logging(verbose: bool = False) -> None:
    """Log INFO lines (DEBUG with ``verbose``) to stderr, quiet the chatty libraries."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("py4j", "urllib3", "alembic", "numexpr", "matplotlib", "feast"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    # Feast marks its Spark offline store experimental on every use; say it once in the docs.
    warnings.filterwarnings("ignore", message=r"The spark .* experimental", category=RuntimeWarning)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@contextmanager
def job_session(app_name: str, settings: Settings | None = None) -> Iterator[JobContext]:
    """Build the session for a job and stop it when the job ends, whatever happens."""
    settings = settings or load_settings()
    spark = get_spark(settings, app_name=app_name)
    try:
        yield JobContext(settings, spark, table_catalog(settings))
    finally:
        spark.stop()
