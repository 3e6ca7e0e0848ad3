"""The platform's Feast compute engine: materialization straight from Spark into the online store.

``feature_store.yaml`` names it next to the online store whenever that is
:class:`lakehouse.features.online.LakehouseSqliteOnlineStore`::

    batch_engine:
      type: lakehouse.features.engine.LakehouseComputeEngine

Feast's provider hands every materialization (``FeatureStore.materialize``,
``feast materialize-incremental``) to the batch engine. Feast's local engine reads the latest
rows into Arrow, turns each into protobuf messages and calls the online store's
``online_write_batch``; this engine reads the same rows (:func:`latest_per_entity`, Feast's
ordering) with Spark into Arrow and gives the table to
:meth:`LakehouseSqliteOnlineStore.write_arrow`, which serializes it a column at a time. It takes
all views of a materialization at once, so Spark reads the next view while this thread writes
the previous one. Views it cannot read that way (sources other than Spark, views without join
keys, ``disable_event_timestamp``, other online stores) go through Feast's local engine.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
from feast import FeatureView
from feast.infra.common.materialization_job import (
    MaterializationJob,
    MaterializationJobStatus,
    MaterializationTask,
)
from feast.infra.compute_engines.local.compute import LocalComputeEngine, LocalComputeEngineConfig
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    get_spark_session_or_start_new_with_repoconfig,
)
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.infra.registry.base_registry import BaseRegistry
from pydantic import StrictStr
from pyspark import inheritable_thread_target
from pyspark.sql import DataFrame

from lakehouse.features.offline import latest_per_entity, quoted, source_frame
from lakehouse.features.online import LakehouseSqliteOnlineStore, plain_layout

log = logging.getLogger(__name__)

#: The ``batch_engine.type`` of ``feature_store.yaml`` that selects this engine.
ENGINE_TYPE = "lakehouse.features.engine.LakehouseComputeEngine"
#: Names of the event and created times in the Arrow tables handed to the online store.
_EVENT = "__lakehouse_event_ts"
_CREATED = "__lakehouse_created_ts"


class LakehouseComputeEngineConfig(LocalComputeEngineConfig):
    """Configuration of :class:`LakehouseComputeEngine`: Feast's local engine's own."""

    type: StrictStr = ENGINE_TYPE  # type: ignore[assignment]
    """Batch engine type selector."""


class LakehouseComputeEngine(LocalComputeEngine):
    """Feast's local compute engine, with Spark-to-Arrow-to-SQLite materialization."""

    @property
    def supports_batch(self) -> bool:
        """True: Feast hands over all views of a materialization in one call."""
        return True

    def materialize(
        self,
        registry: BaseRegistry,
        tasks: MaterializationTask | list[MaterializationTask],
        **kwargs: Any,
    ) -> list[MaterializationJob]:
        """One job per task, in order; the bulk path for the tasks it covers."""
        tasks = [tasks] if isinstance(tasks, MaterializationTask) else list(tasks)
        bulk = [task for task in tasks if self.covers(task)]
        jobs: dict[int, MaterializationJob] = self._bulk(bulk) if bulk else {}
        return [
            jobs[id(task)] if id(task) in jobs else self._materialize_one(registry, task, **kwargs)
            for task in tasks
        ]

    def covers(self, task: MaterializationTask) -> bool:
        """Whether the bulk path materializes ``task`` (else Feast's local engine does)."""
        view = task.feature_view
        return (
            isinstance(self.online_store, LakehouseSqliteOnlineStore)
            and isinstance(view, FeatureView)
            and view.online
            and isinstance(view.batch_source, SparkSource)
            and bool(view.entity_columns)
            and not task.disable_event_timestamp
            and plain_layout(self.repo_config)
        )

    def _bulk(self, tasks: list[MaterializationTask]) -> dict[int, MaterializationJob]:
        """Read each view's latest rows into Arrow on a background thread, write them here."""
        store = self.online_store
        assert isinstance(store, LakehouseSqliteOnlineStore)
        spark = get_spark_session_or_start_new_with_repoconfig(self.repo_config.offline_store)
        reads = [_latest_rows(spark, task) for task in tasks]
        jobs: dict[int, MaterializationJob] = {}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lakehouse-bulk-read") as pool:
            tables: list[Future[pa.Table]] = [
                pool.submit(inheritable_thread_target(spark)(frame.toArrow)) for frame, _ in reads
            ]
            try:
                for task, (_, created), table in zip(tasks, reads, tables, strict=True):
                    job_id = f"{task.feature_view.name}-{task.start_time}-{task.end_time}"
                    try:
                        rows = store.write_arrow(
                            self.repo_config, task.feature_view, table.result(), _EVENT, created
                        )
                        log.info("%s: %d entity rows written", task.feature_view.name, rows)
                        status, error = MaterializationJobStatus.SUCCEEDED, None
                    except Exception as exc:  # reported per view, as Feast's engine does
                        status, error = MaterializationJobStatus.ERROR, exc
                    jobs[id(task)] = LocalMaterializationJob(job_id, status, error)
            finally:
                for table in tables:
                    table.cancel()  # reads not started yet, after a failure
        return jobs


def _latest_rows(spark: Any, task: MaterializationTask) -> tuple[DataFrame, str | None]:
    """The latest row per entity of ``task``'s window, under Feast's names; the created column."""
    view = task.feature_view
    assert isinstance(view, FeatureView)
    source = view.batch_source
    assert isinstance(source, SparkSource)
    reverse = {v: k for k, v in source.field_mapping.items()}

    def column(name: str) -> str:
        return reverse.get(name, name)

    keys = [column(c.name) for c in view.entity_columns]
    timestamp = column(source.timestamp_field)
    created = column(source.created_timestamp_column) if source.created_timestamp_column else None
    latest = latest_per_entity(
        source_frame(spark, source), keys, timestamp, created, task.start_time, task.end_time
    )
    pairs = [(timestamp, _EVENT)]
    if created:
        pairs.append((created, _CREATED))
    pairs += [(column(c.name), c.name) for c in view.entity_columns]
    pairs += [(column(f.name), f.name) for f in view.features]
    selected = latest.selectExpr(*[f"{quoted(src)} AS {quoted(name)}" for src, name in pairs])
    return selected, _CREATED if created else None
