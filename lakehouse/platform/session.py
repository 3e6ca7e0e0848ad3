"""What every spark-submit job and command shares: settings, logging, one session, a clean stop."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark import SparkContext
from pyspark.sql import SparkSession

from lakehouse.platform import logs
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.home import check_home
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.platform.spark import get_spark, spark_conf, table_catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobContext:
    """The settings, session and table catalog a job runs with."""

    settings: Settings
    spark: SparkSession
    catalog: TableCatalog


def configure_logging(
    verbose: bool = False, command: str = "lakehouse", progress: bool = False
) -> logs.LogSetup:
    """Log to ``<home>/logs/<command>-<time>-<pid>.log``; warnings and errors to the terminal.

    See :mod:`lakehouse.platform.logs`: ``verbose`` adds DEBUG lines, tracebacks and the JVM's
    warnings on the terminal, ``progress`` the platform's INFO lines (a service's progress).
    Settings that cannot be loaded leave the command without a log file; the command itself
    then reports why.
    """
    try:
        home = load_settings().home
    except Exception:  # a bad profile: the command that loads it says what is wrong
        home = None
    setup = logs.configure_logging(verbose, command, home, progress)
    # Feast marks its Spark offline store experimental on every use; say it once in the docs.
    warnings.filterwarnings("ignore", message=r"The spark .* experimental", category=RuntimeWarning)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return setup


def platform_spark(
    settings: Settings,
    app_name: str,
    conf: Mapping[str, str] | None = None,
    register_tables: bool = True,
) -> SparkSession:
    """:func:`~lakehouse.platform.spark.get_spark` for a command or job of the platform.

    Checks first that the state folder was not moved (:func:`~lakehouse.platform.home.check_home`)
    and routes the JVM's log into the command's log file: by ``-D`` options when this process
    starts the JVM, by reconfiguring log4j when ``spark-submit`` started it. A session that was
    already running (a notebook's, a test's) keeps its logging.
    """
    check_home(settings.home)
    setup = logs.current()
    running = SparkContext._active_spark_context is not None
    options = dict(conf or {})
    if not running and setup.file is not None:
        java = spark_conf(settings).get("spark.driver.extraJavaOptions", "")
        options["spark.driver.extraJavaOptions"] = f"{java} {setup.java_options()}".strip()
        # Plain-text log lines in the file (Spark 4 writes JSON by default).
        options.setdefault("spark.log.structuredLogging.enabled", "false")
    launched_by_submit = not running and "PYSPARK_GATEWAY_PORT" in os.environ
    spark = get_spark(settings, app_name=app_name, conf=options, register_tables=register_tables)
    if launched_by_submit:
        setup.route_running_jvm(spark)
    return spark


@contextmanager
def job_session(app_name: str, settings: Settings | None = None) -> Iterator[JobContext]:
    """Build the session for a job and stop it when the job ends, whatever happens."""
    settings = settings or load_settings()
    spark = platform_spark(settings, app_name)
    try:
        yield JobContext(settings, spark, table_catalog(settings))
    finally:
        spark.stop()
