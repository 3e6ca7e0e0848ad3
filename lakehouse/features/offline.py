"""Feast's Spark offline store with a one-pass point-in-time join over the gold Delta tables.

``feature_store.yaml`` names it as the offline store (the package is importable wherever the
platform runs, the plain ``feast`` CLI and ``feast serve`` included)::

    offline_store:
      type: lakehouse.features.offline.LakehouseSparkOfflineStore
      spark_conf: {...}

:class:`LakehouseSparkOfflineStore` is Feast's :class:`SparkOfflineStore` (same configuration,
session handling, sources and materialization reads) except for ``get_historical_features``:
the registry's views, projections, field mappings and TTLs still decide what is joined, but the
join is :func:`point_in_time_join`, one Spark pass, instead of Feast's SQL template (which
computes the entity time range with two extra Spark jobs, registers temporary views and joins
every view twice: once to pick the latest row, once to fetch it).

The join gives Feast's answer: for each entity row and view, among the feature rows with the
same join keys, stamped at or before the entity row's time and, when the view has a TTL, no
more than the TTL before it, the one with the latest event time, then the latest created time;
null features when there is none. Entity rows with the same keys and time get the same values,
and duplicate entity rows stay duplicated. Feature rows without a created time are never chosen
when the source has a created-time column (Feast's deduplication join drops them too). One
difference: when two feature rows tie on both times, Feast returns the entity row once per tied
row, this join returns it once, with one of them.

Requests this join does not cover go to Feast's own join unchanged: a time range without an
entity frame, on-demand feature views, ``filter_by_created_timestamp``, views that are not plain
feature views over a :class:`SparkSource`, views without join keys, views with different join
keys, and join keys typed differently in the entity frame and the sources.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from typing import Any

import pandas as pd
import pyspark.sql
from feast import FeatureView, OnDemandFeatureView
from feast.batch_feature_view import BatchFeatureView
from feast.errors import FeastEntityDFMissingColumnsError, InvalidEntityType
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    SparkOfflineStore,
    SparkOfflineStoreConfig,
    SparkRetrievalJob,
    get_spark_session_or_start_new_with_repoconfig,
)
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig
from feast.type_map import spark_schema_to_np_dtypes
from feast.utils import _get_requested_feature_views_to_features_dict
from pydantic import StrictStr
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StructField, StructType, TimestampType

log = logging.getLogger(__name__)

#: The ``offline_store.type`` of ``feature_store.yaml`` that selects this store.
STORE_TYPE = "lakehouse.features.offline.LakehouseSparkOfflineStore"

# Internal column names of the join (prefixed so that they cannot meet a user's column).
_KEY = "__pit_k{}"
_TIME = "__pit_t"
_ORDER = "__pit_o"
_CREATED = "__pit_c"
_ENTITY = "__pit_e"
_VIEW = "__pit_v{}"
_EVENT = "__pit_event"
#: Sort rank of the two kinds of rows at the same time: feature rows first, so that a feature
#: row stamped exactly at an entity row's time counts for it.
_FEATURE_ROW, _ENTITY_ROW = 0, 1


@dataclass(frozen=True)
class ViewRead:
    """One feature view as :func:`point_in_time_join` reads it.

    Attributes:
        name: the view's name in the request (its projection's name), for full feature names.
        frame: the view's source rows.
        join_keys: ``(source column, entity frame column)`` of each join key.
        timestamp_field: the source's event-time column.
        created_timestamp_column: the source's created-time column, if any.
        features: ``(source column, feature name)`` of each requested feature, in order.
        ttl_seconds: how old a row may be at the entity row's time; 0 for no limit.
    """

    name: str
    frame: DataFrame
    join_keys: list[tuple[str, str]]
    timestamp_field: str
    created_timestamp_column: str | None
    features: list[tuple[str, str]]
    ttl_seconds: int


def source_frame(spark: SparkSession, source: SparkSource) -> DataFrame:
    """The rows of a Spark source, read as Feast's Spark offline store reads them."""
    if source.table:
        return spark.table(source.table)
    if source.query:
        return spark.sql(source.query)
    if source.path is None:
        raise ValueError(f"source {source.name} has no table, query or path")
    if source.table_format is not None:
        reader = spark.read.format(source.table_format.format_type.value)
        for key, value in source.table_format.properties.items():
            reader = reader.option(key, value)
        return reader.load(source.path)
    return spark.read.format(source.file_format).load(source.path)


def quoted(name: str) -> str:
    """``name`` as a Spark SQL identifier (backquoted, backquotes doubled)."""
    return "`" + name.replace("`", "``") + "`"


def _timestamp_sql(expression: str, kind: DataType) -> str:
    """``expression`` as a timestamp (a cast unless it is one already)."""
    return expression if isinstance(kind, TimestampType) else f"CAST({expression} AS TIMESTAMP)"


def _type_sql(kind: DataType) -> str:
    """A SQL type for ``kind`` (struct field names quoted)."""
    if isinstance(kind, StructType):
        fields = ", ".join(f"{quoted(f.name)}: {_type_sql(f.dataType)}" for f in kind.fields)
        return f"STRUCT<{fields}>"
    return kind.simpleString()


def point_in_time_join(
    entity: DataFrame,
    timestamp_col: str,
    views: Sequence[ViewRead],
    full_feature_names: bool = False,
) -> DataFrame:
    """Every row of ``entity`` with the point-in-time features of ``views``; lazy.

    One pass: the entity rows and every view's feature rows are put in one frame, partitioned
    by the join keys and ordered by time (feature rows before entity rows at the same time,
    older created times first); for each entity row the last feature row of each view so far is
    its latest one, kept when it is within the view's TTL. One shuffle, whatever the number of
    views, no join and no action. All views must share the join keys.

    The plan is written as SQL expressions: a handful of calls into the JVM in all, where
    building the same columns one by one through PySpark's Column API costs tens per column.

    Returns the entity frame's columns, then each view's features (``<view>__<feature>`` with
    ``full_feature_names``), in view order.
    """
    if not views:
        raise ValueError("no feature views to join")
    entity_keys = [entity_col for _, entity_col in views[0].join_keys]
    for view in views[1:]:
        if [entity_col for _, entity_col in view.join_keys] != entity_keys:
            raise ValueError("every view of one point-in-time join must share the join keys")
    entity_types = {f.name: f.dataType for f in entity.schema.fields}
    for column in (*entity_keys, timestamp_col):
        if column not in entity_types:
            raise FeastEntityDFMissingColumnsError({*entity_keys, timestamp_col}, {column})

    # Each view's payload: its event time and features in one struct.
    payloads: list[str] = []
    payload_types: list[str] = []
    for view in views:
        types = {f.name: f.dataType for f in view.frame.schema.fields}
        event = _timestamp_sql(quoted(view.timestamp_field), types[view.timestamp_field])
        fields = [f"{event} AS {_EVENT}"]
        fields += [f"{quoted(source)} AS {quoted(name)}" for source, name in view.features]
        payloads.append(f"struct({', '.join(fields)})")
        payload_type = StructType(
            [
                StructField(_EVENT, TimestampType()),
                *[StructField(name, types[source]) for source, name in view.features],
            ]
        )
        payload_types.append(_type_sql(payload_type))
    entity_type = _type_sql(StructType([StructField(c, entity_types[c]) for c in entity.columns]))
    keys = [_KEY.format(i) for i in range(len(entity_keys))]

    parts = [
        entity.selectExpr(
            *[f"{quoted(c)} AS {key}" for c, key in zip(entity_keys, keys, strict=True)],
            _timestamp_sql(quoted(timestamp_col), entity_types[timestamp_col]) + f" AS {_TIME}",
            f"{_ENTITY_ROW} AS {_ORDER}",
            f"CAST(NULL AS TIMESTAMP) AS {_CREATED}",
            f"struct({', '.join(quoted(c) for c in entity.columns)}) AS {_ENTITY}",
            *[f"CAST(NULL AS {kind}) AS {_VIEW.format(j)}" for j, kind in enumerate(payload_types)],
        )
    ]
    for j, view in enumerate(views):
        types = {f.name: f.dataType for f in view.frame.schema.fields}
        required = [source for source, _ in view.join_keys] + [view.timestamp_field]
        created = "CAST(NULL AS TIMESTAMP)"
        if view.created_timestamp_column:
            required.append(view.created_timestamp_column)
            created = _timestamp_sql(
                quoted(view.created_timestamp_column), types[view.created_timestamp_column]
            )
        event = _timestamp_sql(quoted(view.timestamp_field), types[view.timestamp_field])
        parts.append(
            view.frame.where(" AND ".join(f"{quoted(c)} IS NOT NULL" for c in required)).selectExpr(
                *[
                    f"{quoted(source)} AS {key}"
                    for (source, _), key in zip(view.join_keys, keys, strict=True)
                ],
                f"{event} AS {_TIME}",
                f"{_FEATURE_ROW} AS {_ORDER}",
                f"{created} AS {_CREATED}",
                f"CAST(NULL AS {entity_type}) AS {_ENTITY}",
                *[
                    f"{payloads[j] if k == j else f'CAST(NULL AS {kind})'} AS {_VIEW.format(k)}"
                    for k, kind in enumerate(payload_types)
                ],
            )
        )
    rows = reduce(DataFrame.union, parts)

    so_far = (
        f"OVER (PARTITION BY {', '.join(keys)} "
        f"ORDER BY {_TIME} ASC NULLS FIRST, {_ORDER}, {_CREATED} ASC NULLS FIRST "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    )
    latest = rows.selectExpr(
        _ORDER,
        _TIME,
        _ENTITY,
        *[
            f"last({_VIEW.format(j)}, true) {so_far} AS {_VIEW.format(j)}"
            for j in range(len(views))
        ],
    ).where(f"{_ORDER} = {_ENTITY_ROW}")

    out = [f"{_ENTITY}.{quoted(c)} AS {quoted(c)}" for c in entity.columns]
    for j, view in enumerate(views):
        payload = _VIEW.format(j)
        for _, name in view.features:
            value = f"{payload}.{quoted(name)}"
            if view.ttl_seconds:
                oldest = f"{_TIME} - INTERVAL {int(view.ttl_seconds)} SECONDS"
                value = f"CASE WHEN {payload}.{_EVENT} >= {oldest} THEN {value} END"
            label = f"{view.name}__{name}" if full_feature_names else name
            out.append(f"{value} AS {quoted(label)}")
    return latest.selectExpr(*out)


def latest_per_entity(
    frame: DataFrame,
    join_keys: Sequence[str],
    timestamp_field: str,
    created_timestamp_column: str | None,
    start: datetime,
    end: datetime,
) -> DataFrame:
    """The latest row of each entity stamped from ``start`` to ``end`` (both included); lazy.

    What Feast's ``pull_latest_from_table_or_query`` selects for materialization: latest event
    time, then latest created time (rows without one last). Rows without a join key or event
    time are left out.
    """
    order = [f"{quoted(timestamp_field)} DESC"]
    if created_timestamp_column:
        order.append(f"{quoted(created_timestamp_column)} DESC")
    rank = "__latest_rank"
    present = " AND ".join(f"{quoted(k)} IS NOT NULL" for k in join_keys)
    numbered = (
        frame.where(present)
        .where(F.col(timestamp_field).between(F.lit(start), F.lit(end)))
        .selectExpr(
            "*",
            f"row_number() OVER (PARTITION BY {', '.join(quoted(k) for k in join_keys)} "
            f"ORDER BY {', '.join(order)}) AS {rank}",
        )
    )
    return numbered.where(f"{rank} = 1").drop(rank)


# --- The Feast offline store -----------------------------------------------------------------
class LakehouseSparkOfflineStoreConfig(SparkOfflineStoreConfig):
    """Configuration of :class:`LakehouseSparkOfflineStore`: the Spark offline store's own."""

    type: StrictStr = STORE_TYPE
    """Offline store type selector."""


class _EntityRangeMetadata(RetrievalMetadata):
    """Retrieval metadata whose entity time range is computed when first asked for.

    Feast's Spark store computes the range up front, with two Spark jobs, for every retrieval;
    only saved datasets read it.
    """

    def __init__(
        self, features: list[str], keys: list[str], entity: DataFrame, timestamp_col: str
    ) -> None:
        self.features = features
        self.keys = keys
        self._entity = entity
        self._timestamp_col = timestamp_col
        self._range: list[datetime | None] | None = None

    def _bounds(self) -> list[datetime | None]:
        if self._range is None:
            column = F.col(self._timestamp_col)
            row = self._entity.agg(F.min(column), F.max(column)).first()
            self._range = [row[0], row[1]] if row is not None else [None, None]
        return self._range

    @property
    def min_event_timestamp(self) -> datetime | None:
        """The earliest entity row time."""
        return self._bounds()[0]

    @min_event_timestamp.setter
    def min_event_timestamp(self, value: datetime | None) -> None:
        self._bounds()[0] = value

    @property
    def max_event_timestamp(self) -> datetime | None:
        """The latest entity row time."""
        return self._bounds()[1]

    @max_event_timestamp.setter
    def max_event_timestamp(self, value: datetime | None) -> None:
        self._bounds()[1] = value


class DataFrameRetrievalJob(SparkRetrievalJob):
    """A Spark retrieval job over a lazy DataFrame rather than SQL text.

    Everything Feast's Spark job offers (``to_df``, ``to_arrow``, ``to_spark_df``, ``persist``,
    remote export) works on the frame, as Feast's job works on its query's.
    """

    def __init__(
        self,
        frame: DataFrame,
        config: RepoConfig,
        full_feature_names: bool,
        metadata: RetrievalMetadata | None = None,
    ) -> None:
        """Wrap ``frame`` (built in ``frame.sparkSession``)."""
        super().__init__(
            spark_session=frame.sparkSession,
            query="",
            full_feature_names=full_feature_names,
            config=config,
            on_demand_feature_views=None,
            metadata=metadata,
        )
        self._frame = frame

    def to_spark_df(self) -> DataFrame:
        """The result as a (lazy) Spark DataFrame."""
        return self._frame


def _entity_frame(
    spark: SparkSession, entity_df: pd.DataFrame | str | DataFrame
) -> tuple[DataFrame, str]:
    """The entity rows as a Spark DataFrame, and their event-time column, as Feast finds it."""
    if isinstance(entity_df, pd.DataFrame):
        timestamp_col = offline_utils.infer_event_timestamp_from_entity_df(
            dict(zip(entity_df.columns, entity_df.dtypes, strict=True))
        )
        frame = entity_df.copy()
        frame[timestamp_col] = pd.to_datetime(frame[timestamp_col], utc=True)
        return spark.createDataFrame(frame), timestamp_col
    if isinstance(entity_df, str):
        sdf = spark.sql(entity_df)
    elif isinstance(entity_df, pyspark.sql.DataFrame):
        sdf = entity_df
    else:
        raise InvalidEntityType(type(entity_df))
    timestamp_col = offline_utils.infer_event_timestamp_from_entity_df(
        dict(zip(sdf.columns, spark_schema_to_np_dtypes(sdf.dtypes), strict=True))
    )
    return sdf, timestamp_col


def view_reads(
    spark: SparkSession,
    feature_views: Sequence[FeatureView],
    feature_refs: Sequence[str],
    registry: BaseRegistry,
    project: str,
) -> list[ViewRead] | None:
    """How :func:`point_in_time_join` reads each requested view; None if it cannot join them.

    Views, projections (names, join-key maps), field mappings and TTLs are taken from the
    registry's objects exactly as Feast's Spark store takes them.
    """
    if OnDemandFeatureView.get_requested_odfvs(list(feature_refs), project, registry):
        return None
    requested, _ = _get_requested_feature_views_to_features_dict(
        list(feature_refs), list(feature_views), []
    )
    reads: list[ViewRead] = []
    for view, names in requested.items():
        source = view.batch_source
        if (
            isinstance(view, BatchFeatureView)
            or type(source) is not SparkSource
            or not view.entity_columns
        ):
            return None
        mapping = source.field_mapping
        reverse = {v: k for k, v in mapping.items()}
        created = source.created_timestamp_column
        columns = [reverse.get(name, name) for name in names]
        reads.append(
            ViewRead(
                name=view.projection.name_to_use(),
                frame=source_frame(spark, source),
                join_keys=[
                    (
                        reverse.get(c.name, c.name),
                        view.projection.join_key_map.get(c.name, c.name),
                    )
                    for c in view.entity_columns
                ],
                timestamp_field=reverse.get(source.timestamp_field, source.timestamp_field),
                created_timestamp_column=reverse.get(created, created) if created else None,
                features=[(column, mapping.get(column, column)) for column in columns],
                ttl_seconds=int(view.ttl.total_seconds()) if view.ttl else 0,
            )
        )
    if not reads:
        return None
    keys = [entity_col for _, entity_col in reads[0].join_keys]
    if any([entity_col for _, entity_col in r.join_keys] != keys for r in reads):
        return None
    return reads


def _key_types_agree(entity: DataFrame, reads: Sequence[ViewRead]) -> bool:
    """Whether each join key has one type in the entity frame (when there) and every source."""
    entity_types = dict(entity.dtypes)
    for i, (_, entity_col) in enumerate(reads[0].join_keys):
        kinds = {dict(r.frame.dtypes)[r.join_keys[i][0]] for r in reads}
        if entity_col in entity_types:
            kinds.add(entity_types[entity_col])
        if len(kinds) > 1:
            return False
    return True


class LakehouseSparkOfflineStore(SparkOfflineStore):
    """Feast's Spark offline store, with :func:`point_in_time_join` for historical retrieval."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | DataFrame | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        """Point-in-time features of ``feature_refs`` for each row of ``entity_df``.

        The same rows and values as Feast's Spark store (see the module docstring), from one
        lazy Spark plan; requests outside what :func:`point_in_time_join` covers are passed
        to Feast's own join.
        """
        assert isinstance(config.offline_store, SparkOfflineStoreConfig)
        spark = get_spark_session_or_start_new_with_repoconfig(config.offline_store)
        reads = None
        if entity_df is not None and not filter_by_created_timestamp:
            reads = view_reads(spark, feature_views, feature_refs, registry, project)
        if reads is not None and entity_df is not None:
            entity, timestamp_col = _entity_frame(spark, entity_df)
            if _key_types_agree(entity, reads):
                frame = point_in_time_join(entity, timestamp_col, reads, full_feature_names)
                keys = [c for c in entity.columns if c != timestamp_col]
                metadata = _EntityRangeMetadata(list(feature_refs), keys, entity, timestamp_col)
                return DataFrameRetrievalJob(frame, config, full_feature_names, metadata)
        log.debug("historical retrieval by Feast's Spark join (not covered by the one-pass join)")
        return SparkOfflineStore.get_historical_features(
            config=config,
            feature_views=feature_views,
            feature_refs=feature_refs,
            entity_df=entity_df,
            registry=registry,
            project=project,
            full_feature_names=full_feature_names,
            filter_by_created_timestamp=filter_by_created_timestamp,
            **kwargs,
        )
