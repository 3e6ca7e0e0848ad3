"""Stream scoring: new rows of ``silver.loan_applications`` scored as they land.

A Structured Streaming query whose ``foreachBatch`` function (:class:`MicroBatchScorer`)
resolves the model alias again at every micro-batch, so a promotion takes effect without a
restart, and writes through the same idempotent MERGE as batch scoring.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from lakehouse.platform.catalog import SILVER_LOAN_APPLICATIONS, TableCatalog
from lakehouse.platform.settings import Settings
from lakehouse.scoring.decisions import DecisionThresholds
from lakehouse.scoring.predictions import (
    FeaturesFn,
    ModelCache,
    ScoringReport,
    StepTimer,
    score_and_write,
)
from lakehouse.scoring.resolution import ModelResolver

log = logging.getLogger(__name__)

#: Checkpoint sub-folder of the scoring stream (``Settings.checkpoint_location``).
CHECKPOINT_NAME = "scoring"
#: Settings of the scoring stream's own session. Its micro-batches are small, so file scans
#: and Delta's snapshot reconstruction run as one task when the data fits in one (a scan still
#: splits at ``spark.sql.files.maxPartitionBytes``) instead of one task per core.
STREAM_CONF: dict[str, str] = {
    "spark.sql.files.minPartitionNum": "1",
    "spark.databricks.delta.snapshotPartitions": "1",
}


class MicroBatchScorer:
    """The ``foreachBatch`` function of the scoring stream.

    A callable object rather than a closure, so its state (the reports) is read after the
    query and nothing of the driver is captured. Resolves the model URI (an alias by default)
    at every micro-batch with one registry call, so a promotion is picked up by the next
    micro-batch; the signature of each version is read once (:class:`ModelResolver`) and its
    UDF loaded once (:class:`ModelCache`). The predictions table is created and registered by
    the first micro-batch only. Each micro-batch logs the wall time of its steps.
    """

    def __init__(
        self,
        settings: Settings,
        catalog: TableCatalog,
        *,
        model_uri: str | None = None,
        features_fn: FeaturesFn | None = None,
        thresholds: DecisionThresholds | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.resolver = ModelResolver(settings, model_uri)
        self.model_uri = self.resolver.uri
        self.features_fn = features_fn
        self.thresholds = thresholds or DecisionThresholds()
        self.cache = ModelCache()
        self.reports: list[ScoringReport] = []
        self._registered = False

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        """Score one micro-batch and MERGE it into ``gold.predictions``."""
        spark = batch.sparkSession
        log.info("scoring batch %d started", batch_id)
        timer = StepTimer()
        model = self.resolver.resolve()
        timer.lap("resolve")
        report = score_and_write(
            spark,
            self.settings,
            self.catalog,
            batch,
            model,
            cache=self.cache,
            features_fn=self.features_fn,
            thresholds=self.thresholds,
            scoring_mode="stream",
            register=not self._registered,
            timer=timer,
        )
        self._registered = True
        self.reports.append(report)
        log.info(
            "scoring batch %d done: version %d, %d scored, %d inserted in %.2f s (%s)",
            batch_id,
            report.model_version,
            report.rows_scored,
            report.rows_inserted,
            timer.total(),
            timer,
        )


def scoring_checkpoint(settings: Settings) -> str:
    """The checkpoint of the scoring stream: on the store with ``settings.checkpoints_uri``."""
    return settings.checkpoint_location(CHECKPOINT_NAME)


def start_scoring_stream(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    *,
    available_now: bool = False,
    processing_time: str | None = None,
    model_uri: str | None = None,
    features_fn: FeaturesFn | None = None,
    thresholds: DecisionThresholds | None = None,
    checkpoint: str | None = None,
    max_files_per_trigger: int | None = None,
) -> StreamingQuery:
    """Start the stream ``silver.loan_applications`` -> score -> ``gold.predictions``.

    Exactly one trigger: ``available_now`` (catch up, then stop) or ``processing_time``
    (for example ``"1 second"``; runs until stopped). The checkpoint defaults to
    :func:`scoring_checkpoint`. The query runs in a session of its own
    (``spark.newSession()`` with :data:`STREAM_CONF`), so ``spark``'s settings are left alone.
    Returns the running query.
    """
    if available_now == (processing_time is not None):
        raise ValueError("give exactly one trigger: available_now=True or processing_time")
    if processing_time is not None and not processing_time.strip():
        raise ValueError("processing_time must be an interval such as '1 second'")
    if not catalog.exists(spark, SILVER_LOAN_APPLICATIONS):
        raise FileNotFoundError(
            f"no table {SILVER_LOAN_APPLICATIONS} at {catalog.path(SILVER_LOAN_APPLICATIONS)}: "
            "run the pipeline first"
        )
    scorer = MicroBatchScorer(
        settings, catalog, model_uri=model_uri, features_fn=features_fn, thresholds=thresholds
    )
    session = spark.newSession()
    for key, value in STREAM_CONF.items():
        session.conf.set(key, value)
    # skipChangeCommits: commits that only add rows (new applications) are scored; a commit
    # that rewrites rows (an in-place correction) is skipped and re-scored only by a batch run.
    reader = session.readStream.format("delta").option("skipChangeCommits", "true")
    if max_files_per_trigger is not None:
        reader = reader.option("maxFilesPerTrigger", str(max_files_per_trigger))
    source = reader.load(catalog.path(SILVER_LOAN_APPLICATIONS))
    writer = (
        source.writeStream.queryName("scoring")
        .foreachBatch(scorer)
        .option("checkpointLocation", checkpoint or scoring_checkpoint(settings))
    )
    if processing_time is None:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=processing_time)
    query = writer.start()
    log.info("scoring stream started (%s)", "available-now" if available_now else processing_time)
    return query
