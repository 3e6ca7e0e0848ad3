"""The Feast feature store over the gold Delta tables: apply, materialize, retrieve.

The declarative repository is ``feature_repo/`` (entity, Spark sources on the gold Delta tables,
feature views, the ``credit_risk_v1`` service). This module is the glue the platform calls:

* :func:`feature_store` builds a :class:`feast.FeatureStore` for a :class:`Settings` object; its
  configuration is rendered from the settings into ``settings.feast_dir/feature_store.yaml``
  (registry and SQLite online store under ``settings.feast_dir``, or Redis at
  ``settings.redis_url``; the offline store of :mod:`lakehouse.features.offline`, Feast's Spark
  store with a one-pass point-in-time join, with the platform's Delta configuration).
* :func:`apply` registers the repository's definitions, with every source re-rooted at the
  settings' table root; :func:`materialize` loads the online store incrementally (SQLite in
  bulk, with exactly the rows Feast's writer writes).
* :func:`build_training_set` and :func:`historical_features` run Feast's historical retrieval
  on the caller's SparkSession; :func:`online_features` reads the online store.

Feast's Spark offline store takes the active SparkSession of the calling thread, or builds one
with ``getOrCreate``. Functions that receive ``spark`` make it the active session first, so Feast
reads Delta through the platform's session rather than a session of its own.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sqlite3
import struct
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import yaml
from feast import FeatureService, FeatureStore, FeatureView
from feast.table_format import DeltaFormat
from pyspark.sql import DataFrame, SparkSession

from lakehouse.features.offline import STORE_TYPE, quoted
from lakehouse.platform.catalog import GOLD_LABELS, TableCatalog
from lakehouse.platform.jars import jar_paths
from lakehouse.platform.settings import Settings
from lakehouse.platform.spark import spark_conf
from lakehouse.platform.tables import delta_version

log = logging.getLogger(__name__)

#: The feature service the model trains and scores with.
FEATURE_SERVICE = "credit_risk_v1"
#: Feast project name (``project`` in ``feature_store.yaml``).
PROJECT = "lakehouse"
#: Overrides where the declarative Feast repository lives.
FEATURE_REPO_ENV = "LAKEHOUSE_FEATURE_REPO"
#: Tag on each source and view naming its gold table (see ``feature_repo/definitions.py``).
TABLE_TAG = "lakehouse_table"
#: Entity join key of every feature view.
ENTITY_KEY = "customer_id"
#: Event-time column of entity frames given to :func:`historical_features`.
EVENT_TIMESTAMP = "event_timestamp"

#: Columns of the training frame that come from ``gold.labels``, in order.
LABEL_COLUMNS: tuple[str, ...] = (
    "application_id",
    "customer_id",
    "application_timestamp",
    "loan_amount",
    "term_months",
    "purpose",
    "defaulted",
)


@dataclass(frozen=True)
class TrainingSet:
    """A point-in-time correct training frame and the exact data it came from.

    Attributes:
        frame: one row per labelled application, :data:`LABEL_COLUMNS` then the features,
            sorted by ``application_id``; timestamps are timezone-naive UTC.
        feature_columns: the feature columns of the service, in frame order.
        table_versions: Delta version of ``gold.labels`` and of each gold feature table read.
        feature_service: the Feast feature service used.
    """

    frame: pd.DataFrame
    feature_columns: list[str]
    table_versions: dict[str, int]
    feature_service: str


# --- Configuration ---------------------------------------------------------------------------
def feature_repo_dir() -> Path:
    """The declarative Feast repository (``$LAKEHOUSE_FEATURE_REPO`` or ``<repo>/feature_repo``)."""
    override = os.environ.get(FEATURE_REPO_ENV)
    path = Path(override) if override else Path(__file__).resolve().parent.parent / "feature_repo"
    if not (path / "definitions.py").is_file():
        raise FileNotFoundError(
            f"no Feast repository at {path} (definitions.py missing); set {FEATURE_REPO_ENV}"
        )
    return path


def offline_spark_conf(settings: Settings) -> dict[str, str]:
    """Spark configuration of Feast's offline store: the platform's, with master and jars.

    Used only when Feast itself has to start a session (the ``feast`` CLI, ``feast serve``).
    """
    conf = spark_conf(settings)
    conf.pop("spark.driver.extraJavaOptions", None)
    conf["spark.master"] = settings.spark_master
    conf["spark.app.name"] = "lakehouse-feast"
    conf["spark.jars"] = ",".join(str(p) for p in jar_paths())
    return conf


def feature_store_config(settings: Settings) -> dict[str, Any]:
    """The ``feature_store.yaml`` mapping for ``settings``."""
    feast_dir = settings.feast_dir
    online: dict[str, Any]
    if settings.online_store == "redis":
        online = {"type": "redis", "connection_string": settings.redis_url}
    else:
        online = {"type": "sqlite", "path": str(feast_dir / "online_store.db")}
    return {
        "project": PROJECT,
        "provider": "local",
        "registry": {"registry_type": "file", "path": str(feast_dir / "registry.db")},
        "online_store": online,
        "offline_store": {"type": STORE_TYPE, "spark_conf": offline_spark_conf(settings)},
        "entity_key_serialization_version": 3,
    }


def write_feature_store_yaml(settings: Settings) -> Path:
    """Write ``settings.feast_dir/feature_store.yaml`` (for ``feast -f``); return its path."""
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    path = settings.feast_dir / "feature_store.yaml"
    text = yaml.safe_dump(feature_store_config(settings), sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def feature_store(settings: Settings) -> FeatureStore:
    """A FeatureStore configured from ``settings`` over the declarative repository."""
    fs_yaml = write_feature_store_yaml(settings)
    return FeatureStore(repo_path=str(feature_repo_dir()), fs_yaml_file=fs_yaml)


def use_session(spark: SparkSession) -> None:
    """Make ``spark`` the active session of this thread, so that Feast reuses it."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    jvm.org.apache.spark.sql.SparkSession.setActiveSession(spark._jsparkSession)
    SparkSession._activeSession = spark
    spark.conf.set("spark.sql.session.timeZone", "UTC")


# --- Definitions -----------------------------------------------------------------------------
def load_definitions(
    settings: Settings, table_versions: dict[str, int] | None = None
) -> ModuleType:
    """Import ``feature_repo/definitions.py`` afresh, every source re-rooted for ``settings``.

    With ``table_versions`` (gold table name -> Delta version), each source whose table is
    listed reads that version (Delta time travel), for reproducing a training set.
    """
    path = feature_repo_dir() / "definitions.py"
    name = f"_lakehouse_feast_definitions_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    catalog = TableCatalog(settings.tables_root)
    for view in _module_objects(module, FeatureView):
        source = view.batch_source
        table = source.tags.get(TABLE_TAG) if source is not None else None
        if source is not None and table:
            source.spark_options.path = catalog.path(table)
            if table_versions and table in table_versions:
                source.spark_options.table_format = DeltaFormat(
                    properties={"versionAsOf": str(int(table_versions[table]))}
                )
    return module


def _module_objects(module: ModuleType, kind: type) -> list[Any]:
    return [v for v in vars(module).values() if isinstance(v, kind)]


def apply(settings: Settings, table_versions: dict[str, int] | None = None) -> list[str]:
    """Register the repository's entity, sources, views and service; return the view names.

    Idempotent: applying the same definitions twice leaves the registry as it was.
    ``table_versions`` pins sources to Delta versions (see :func:`load_definitions`).
    """
    from feast import Entity
    from feast.data_source import DataSource

    module = load_definitions(settings, table_versions)
    objects: list[Any] = []
    for kind in (Entity, DataSource, FeatureView, FeatureService):
        objects.extend(_module_objects(module, kind))
    store = feature_store(settings)
    store.apply(objects)
    names = sorted(v.name for v in _module_objects(module, FeatureView))
    log.info("applied %d feature views to %s", len(names), store.config.registry.path)
    return names


def list_views(settings: Settings) -> dict[str, list[tuple[str, str]]]:
    """The registered feature views and their ``(feature, type)`` pairs, by view name."""
    store = feature_store(settings)
    return {
        view.name: [(f.name, str(f.dtype)) for f in view.features]
        for view in sorted(store.list_feature_views(), key=lambda v: v.name)
    }


def service_feature_columns(store: FeatureStore, service: str = FEATURE_SERVICE) -> list[str]:
    """The feature columns a service returns, in service order."""
    fs = store.get_feature_service(service)
    return [f.name for projection in fs.feature_view_projections for f in projection.features]


# --- Materialization -------------------------------------------------------------------------
def _utc(ts: datetime | None) -> datetime:
    if ts is None:
        return datetime.now(UTC)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def materialize(
    settings: Settings, end: datetime | None = None, bulk: bool | None = None
) -> datetime:
    """Load the online store incrementally up to ``end`` (default: now); return ``end`` in UTC.

    Each view resumes where its previous materialization stopped (the first one starts ``ttl``
    before ``end``), so running it twice with the same ``end`` changes nothing.

    Args:
        settings: platform settings.
        end: end of the window, UTC when naive.
        bulk: load SQLite in bulk (:func:`_bulk_materialize`: the rows Feast's writer writes,
            far faster) rather than through Feast's per-row writer; defaults to True for the
            SQLite online store. Other online stores (Redis) use Feast's writer; asking them
            for ``bulk=True`` is an error.
    """
    end_utc = _utc(end)
    running = SparkSession.getActiveSession() or SparkSession._instantiatedSession
    if running is not None:
        use_session(running)
    if bulk is None:
        bulk = settings.online_store == "sqlite"
    if bulk and settings.online_store != "sqlite":
        raise ValueError(
            f"bulk materialization needs the sqlite online store, not {settings.online_store}"
        )
    store = feature_store(settings)
    views = store.list_feature_views()
    if not views:
        raise RuntimeError("no feature views registered: run `lakehouse features apply` first")
    windows: list[tuple[FeatureView, datetime]] = []
    for view in views:
        if not view.online:
            continue
        start = view.most_recent_end_time
        if start is None:
            # Feast's own first window starts ``ttl`` before *now*; start it ``ttl`` before
            # ``end`` instead, so that materializing up to a past time loads that time's values.
            start = end_utc - view.ttl if view.ttl else datetime(1970, 1, 1, tzinfo=UTC)
        start = _utc(start)
        if start >= end_utc:
            log.info("%s is materialized up to %s already", view.name, start.isoformat())
            continue
        windows.append((view, start))
    if bulk:
        fast = [(view, start) for view, start in windows if _bulk_supported(store, view)]
        rows = _bulk_materialize(store, fast, end_utc) if fast else {}
        for view, start in fast:
            store.registry.apply_materialization(view, store.project, start, end_utc)
            log.info("%s: %d rows from %s to %s", view.name, rows[view.name], start, end_utc)
        windows = [(view, start) for view, start in windows if view.name not in rows]
    for view, start in windows:  # Feast's own writer
        store.materialize(start_date=start, end_date=end_utc, feature_views=[view.name])
    return end_utc


# --- Retrieval -------------------------------------------------------------------------------
def _spark_df(job: Any) -> DataFrame:
    """The Spark DataFrame of a Spark offline store retrieval job."""
    result: DataFrame = job.to_spark_df()
    return result


def _naive_utc(series: pd.Series) -> pd.Series:
    converted = pd.to_datetime(series, utc=True)
    return converted.dt.tz_convert("UTC").dt.tz_localize(None)


def build_training_set(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    table_versions: dict[str, int] | None = None,
) -> TrainingSet:
    """The training frame: every row of ``gold.labels`` with its point-in-time features.

    Entity rows are the labelled applications, the event time is ``application_timestamp``:
    a feature counts only when stamped at or before it and within its view's TTL, otherwise it
    is null. Versions are recorded just before the read.

    With ``table_versions`` (as recorded by an earlier training run) every table is read at
    that Delta version instead: the same definitions are applied to a throw-away registry whose
    sources time-travel, so the frame is the one that run trained on.
    """
    if table_versions:
        with tempfile.TemporaryDirectory(prefix="lakehouse-pinned-") as tmp:
            pinned = replace(settings, home=Path(tmp), tables_uri=settings.tables_root)
            apply(pinned, table_versions)
            return _training_set(spark, pinned, catalog, dict(table_versions))
    return _training_set(spark, settings, catalog, None)


def _training_set(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    pinned: dict[str, int] | None,
) -> TrainingSet:
    store = feature_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE)
    feature_columns = service_feature_columns(store)
    if not catalog.exists(spark, GOLD_LABELS):
        raise FileNotFoundError(f"no table {GOLD_LABELS} at {catalog.path(GOLD_LABELS)}")
    versions = {GOLD_LABELS: delta_version(spark, catalog, GOLD_LABELS)}
    for projection in service.feature_view_projections:
        source = store.get_feature_view(projection.name).batch_source
        table = source.tags.get(TABLE_TAG) if source is not None else None
        if table:
            versions[table] = delta_version(spark, catalog, table)
    if pinned is not None:
        unknown = sorted(set(pinned) - set(versions))
        if unknown:
            raise ValueError(f"table_versions names tables the service does not read: {unknown}")
        versions.update(pinned)
    labels = catalog.read(spark, GOLD_LABELS, version=versions[GOLD_LABELS])
    entity_df = labels.select(
        *[c for c in LABEL_COLUMNS if c != "application_timestamp"],
        labels["application_timestamp"].alias(EVENT_TIMESTAMP),
    )
    use_session(spark)
    job = store.get_historical_features(entity_df=entity_df, features=service)
    frame = _spark_df(job).withColumnRenamed(EVENT_TIMESTAMP, "application_timestamp")
    pdf: pd.DataFrame = frame.select(*LABEL_COLUMNS, *feature_columns).toPandas()
    pdf["application_timestamp"] = _naive_utc(pdf["application_timestamp"])
    pdf = pdf.sort_values("application_id", kind="stable").reset_index(drop=True)
    return TrainingSet(
        frame=pdf,
        feature_columns=feature_columns,
        table_versions=versions,
        feature_service=FEATURE_SERVICE,
    )


def historical_features(
    spark: SparkSession, settings: Settings, entity_df: pd.DataFrame | DataFrame
) -> pd.DataFrame | DataFrame:
    """Point-in-time features of the service for each row of ``entity_df``.

    ``entity_df`` (pandas or Spark) needs ``customer_id`` and ``event_timestamp``; other
    columns pass through. Returns the same rows with the feature columns appended: a pandas
    frame in the input order for pandas input, a Spark DataFrame for Spark input.
    """
    missing = [c for c in (ENTITY_KEY, EVENT_TIMESTAMP) if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df lacks column(s) {', '.join(missing)}")
    store = feature_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE)
    feature_columns = service_feature_columns(store)
    use_session(spark)
    if isinstance(entity_df, DataFrame):
        job = store.get_historical_features(entity_df=entity_df, features=service)
        return _spark_df(job).select(*entity_df.columns, *feature_columns)
    row = "__lakehouse_row"
    frame = entity_df.copy()
    frame[row] = range(len(frame))
    frame[EVENT_TIMESTAMP] = pd.to_datetime(frame[EVENT_TIMESTAMP], utc=True)
    sdf = spark.createDataFrame(frame)
    job = store.get_historical_features(entity_df=sdf, features=service)
    out: pd.DataFrame = _spark_df(job).select(*frame.columns, *feature_columns).toPandas()
    out = out.sort_values(row).drop(columns=[row]).reset_index(drop=True)
    out[EVENT_TIMESTAMP] = _naive_utc(out[EVENT_TIMESTAMP])
    return out


def online_features(settings: Settings, customer_ids: Sequence[str]) -> pd.DataFrame:
    """Online feature values of the service for ``customer_ids`` (null for unknown ones)."""
    if isinstance(customer_ids, str):
        raise TypeError("customer_ids must be a sequence of ids, not a single string")
    store = feature_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE)
    rows = [{ENTITY_KEY: str(c)} for c in customer_ids]
    frame = store.get_online_features(features=service, entity_rows=rows).to_df()
    return frame[[ENTITY_KEY, *service_feature_columns(store)]]


# --- Fast paths over the SQLite online store -------------------------------------------------
# Both read and write Feast's own SQLite tables (``<project>_<view>``: entity_key, feature_name,
# value, value_text, event_ts, created_ts) with Feast's own serialization, so Feast's API and
# ``feast serve`` see exactly what they would have written or read themselves.
_UINT32 = struct.Struct("<I")


@functools.cache
def _string_key_prefix(join_key: str, version: int) -> bytes:
    """Feast's serialized entity key of one string join key, up to the value's length.

    Feast's serializer lays the key out as its header and join-key name, the value's type, then
    the value's length (4 bytes, little-endian) and UTF-8 bytes; the prefix is taken from
    Feast's own serialization of an empty value, so only the value's part is added per key.
    """
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    empty = EntityKey(join_keys=[join_key], entity_values=[Value(string_val="")])
    return bytes(serialize_entity_key(empty, entity_key_serialization_version=version))[:-4]


def _entity_key_bytes(customer_id: str) -> bytes:
    """Feast's serialized entity key (version 3) of one customer."""
    raw = customer_id.encode("utf8")
    return _string_key_prefix(ENTITY_KEY, 3) + _UINT32.pack(len(raw)) + raw


def _sqlite_path(settings: Settings) -> Path:
    if settings.online_store != "sqlite":
        raise ValueError(
            f"the fast paths need the sqlite online store, not {settings.online_store}"
        )
    return settings.feast_dir / "online_store.db"


def _table_name(store: FeatureStore, view: FeatureView) -> str:
    from feast.infra.online_stores.sqlite import _table_id

    return _table_id(
        store.config.project, view, store.config.registry.enable_online_feature_view_versioning
    )


#: Rows of one multi-row INSERT at most (SQLite's parser handles far more; this bounds memory).
_ROWS_PER_STATEMENT = 600
#: SQLite page cache of the bulk connection, KiB (the default is 2 MiB).
_BULK_CACHE_KIB = 131_072


def _bulk_supported(store: FeatureStore, view: FeatureView) -> bool:
    """Whether :func:`_bulk_materialize` writes ``view`` (else Feast's writer does).

    It reads Spark sources of views with join keys and writes the plain SQLite layout (no
    vector or ``value_num`` columns).
    """
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    online = store.config.online_store
    plain = not getattr(online, "vector_enabled", False) and not getattr(
        online, "enable_openai_compatible_store", False
    )
    return plain and isinstance(view.batch_source, SparkSource) and bool(view.entity_columns)


def _bulk_materialize(
    store: FeatureStore, windows: Sequence[tuple[FeatureView, datetime]], end: datetime
) -> dict[str, int]:
    """Write the latest row per entity of each view in its window into SQLite; rows per view.

    The same rows Feast's writer writes (``pull_latest_from_table_or_query``, then one row per
    feature with Feast's serialized entity key and ValueProto, ``value_text``, event and created
    times), obtained differently:

    * Spark reads the latest row per entity in ``[start, end]`` of each view
      (:func:`lakehouse.features.offline.latest_per_entity`, Feast's own ordering) straight into
      Arrow, one view after the other on a background thread, so that the JVM reads the next
      view while this thread writes the previous one;
    * keys and values are serialized a column at a time (:func:`_entity_keys`,
      :func:`_encode_values`) rather than a message at a time;
    * one SQLite transaction for all views, rows in primary-key order, multi-row upserts that
      bind each entity's key and times once, and a larger page cache.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
        get_spark_session_or_start_new_with_repoconfig,
    )
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from pyspark import inheritable_thread_target

    from lakehouse.features.offline import latest_per_entity, source_frame

    spark = get_spark_session_or_start_new_with_repoconfig(store.config.offline_store)
    reads: list[tuple[FeatureView, _ViewLayout, DataFrame]] = []
    for i, (view, start) in enumerate(windows):
        source = view.batch_source
        assert isinstance(source, SparkSource)
        layout = _ViewLayout.of(i, view)
        latest = latest_per_entity(
            source_frame(spark, source),
            [column for column, _ in layout.keys],
            layout.timestamp,
            layout.created,
            start,
            end,
        )
        reads.append((view, layout, latest.selectExpr(*layout.select())))

    version = store.config.entity_key_serialization_version
    rows: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lakehouse-bulk-read") as pool:
        tables: list[Future[Any]] = [
            pool.submit(inheritable_thread_target(spark)(frame.toArrow)) for _, _, frame in reads
        ]
        conn = sqlite3.connect(_sqlite_path_from_config(store))
        try:
            conn.execute(f"PRAGMA cache_size = -{_BULK_CACHE_KIB}")
            conn.execute("PRAGMA temp_store = MEMORY")
            with conn:
                for (view, layout, _), table in zip(reads, tables, strict=True):
                    rows[view.name] = _write_sqlite_view(
                        conn, _table_name(store, view), view, layout, table.result(), version
                    )
        finally:
            conn.close()
            for table in tables:
                table.cancel()  # reads not started yet, after a failure
    return rows


@dataclass(frozen=True)
class _ViewLayout:
    """Where one view's columns are in the source and in the bulk read's Arrow table.

    ``keys``, ``features``: (source column, name in Feast) pairs; the Arrow columns are
    ``__v<index>_<position>``, so that no name in the source can clash with another.
    """

    index: int
    keys: list[tuple[str, str]]
    timestamp: str
    created: str | None
    features: list[tuple[str, str]]

    @classmethod
    def of(cls, index: int, view: FeatureView) -> _ViewLayout:
        """The layout of ``view`` (source names through its source's field mapping)."""
        source = view.batch_source
        assert source is not None
        reverse = {v: k for k, v in source.field_mapping.items()}
        created = source.created_timestamp_column
        return cls(
            index=index,
            keys=[(reverse.get(c.name, c.name), c.name) for c in view.entity_columns],
            timestamp=reverse.get(source.timestamp_field, source.timestamp_field),
            created=reverse.get(created, created) if created else None,
            features=[(reverse.get(f.name, f.name), f.name) for f in view.features],
        )

    def column(self, position: int | str) -> str:
        """The Arrow column of a key/feature position, or of ``"ts"`` / ``"created"``."""
        return f"__v{self.index}_{position}"

    def select(self) -> list[str]:
        """The selection of the bulk read for this view, as SQL expressions."""
        pairs = [(self.timestamp, "ts")]
        if self.created:
            pairs.append((self.created, "created"))
        pairs += [(src, f"k{i}") for i, (src, _) in enumerate(self.keys)]
        pairs += [(src, f"f{i}") for i, (src, _) in enumerate(self.features)]
        return [f"{quoted(src)} AS {self.column(pos)}" for src, pos in pairs]


def _write_sqlite_view(
    conn: sqlite3.Connection,
    table_name: str,
    view: FeatureView,
    layout: _ViewLayout,
    part: Any,
    version: int,
) -> int:
    """Upsert the latest rows of one view (an Arrow table) into its SQLite table; the rows."""
    import numpy as np

    n = part.num_rows
    if n == 0 or not layout.features:  # Feast writes one row per feature
        return n
    value_types = {f.name: f.dtype.to_value_type() for f in view.entity_columns}
    keys = _entity_keys(
        [
            (name, value_types[name], part.column(layout.column(f"k{i}")))
            for i, (_, name) in enumerate(layout.keys)
        ],
        version,
    )
    dtypes = {f.name: f.dtype.to_value_type() for f in view.features}
    features = sorted((name, layout.column(f"f{i}")) for i, (_, name) in enumerate(layout.features))
    width = 3 + 2 * len(features)  # key, event time, created time, (value, text) per feature
    params = np.empty((n, width), dtype=object)
    params[:, 0] = keys
    params[:, 1] = _sqlite_times(part.column(layout.column("ts")))
    params[:, 2] = _sqlite_times(part.column(layout.column("created"))) if layout.created else None
    for j, (name, column) in enumerate(features):
        blobs, texts = _encode_values(part.column(column), dtypes[name])
        params[:, 3 + 2 * j] = blobs
        params[:, 4 + 2 * j] = texts
    params = params[sorted(range(n), key=keys.__getitem__)]  # primary-key order

    variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per_statement = max(1, min(_ROWS_PER_STATEMENT // len(features), variables // width))
    full = n - n % per_statement
    if full:
        conn.executemany(
            _upsert_sql(table_name, [name for name, _ in features], per_statement),
            params[:full].reshape(-1, per_statement * width).tolist(),
        )
    if full < n:
        conn.execute(
            _upsert_sql(table_name, [name for name, _ in features], n - full),
            params[full:].ravel().tolist(),
        )
    return n


def _upsert_sql(table_name: str, features: Sequence[str], entities: int) -> str:
    """A multi-row upsert of ``entities`` entities: key and times bound once per entity."""
    width = 3 + 2 * len(features)
    literals = ["'" + name.replace("'", "''") + "'" for name in features]
    values = []
    for e in range(entities):
        base = e * width
        for j, literal in enumerate(literals):
            value = base + 4 + 2 * j
            values.append(
                f"(?{base + 1}, {literal}, ?{value}, ?{value + 1}, ?{base + 2}, ?{base + 3})"
            )
    return (
        f'INSERT INTO "{table_name}" '
        "(entity_key, feature_name, value, value_text, event_ts, created_ts) VALUES "
        + ", ".join(values)
        + " ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
        "value_text = excluded.value_text, event_ts = excluded.event_ts, "
        "created_ts = excluded.created_ts"
    )


def _sqlite_times(column: Any) -> Any:
    """Times as Feast's SQLite writer binds them: naive UTC, through the registered adapter.

    Feast's writer binds ``datetime`` objects, which sqlite3 adapts with the adapter Feast
    registers (Unix seconds); each distinct time is adapted once the same way here. Returns an
    object array, None for nulls.
    """
    import feast.infra.online_stores.sqlite  # noqa: F401 - registers Feast's adapters
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(array)
    distinct = [_naive(ts) for ts in encoded.dictionary.to_pylist()]
    lookup = np.empty(len(distinct) + 1, dtype=object)
    lookup[:-1] = [
        None if ts is None else sqlite3.adapt(ts, sqlite3.PrepareProtocol) for ts in distinct
    ]
    return lookup[pc.fill_null(encoded.indices, len(distinct)).to_numpy(zero_copy_only=False)]


def _entity_keys(columns: Sequence[tuple[str, Any, Any]], version: int) -> list[bytes]:
    """Feast's serialized entity key of each row: ``(join key, ValueType, Arrow column)``.

    One string join key (the platform's case) is serialized by concatenation around a prefix
    that Feast's own serializer produced; anything else goes through Feast's serializer.
    """
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    if len(columns) == 1 and columns[0][1] == ValueType.STRING:
        name, _, column = columns[0]
        prefix, pack = _string_key_prefix(name, version), _UINT32.pack
        return [
            prefix + pack(len(raw)) + raw
            for raw in (str(value).encode("utf8") for value in column.to_pylist())
        ]
    names = [name for name, _, _ in columns]
    values = [
        python_values_to_proto_values(column.to_numpy(zero_copy_only=False), kind)
        for _, kind, column in columns
    ]
    return [
        bytes(serialize_entity_key(EntityKey(join_keys=names, entity_values=list(row)), version))
        for row in zip(*values, strict=True)
    ]


def _encode_values(column: Any, value_type: Any) -> tuple[Any, Any]:
    """Feast's serialized ValueProto and ``value_text`` of each value, as object arrays.

    Nulls (and NaN, as Feast's converter treats it) become the empty ValueProto and no text.
    Doubles and floats are laid out directly in the protobuf wire format (one tag byte, then
    the little-endian value; the tag is cut from a message serialized by protobuf). Other
    scalars are converted once per distinct value with Feast's own converter and text
    extraction, then spread by index; types Arrow cannot dictionary-encode (lists) are
    converted value by value, by Feast's converter too.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    empty = Value().SerializeToString()
    missing = np.asarray(pc.is_null(array, nan_is_null=True).to_numpy(zero_copy_only=False))
    blobs = np.empty(n, dtype=object)
    texts = np.empty(n, dtype=object)
    numeric = pa.types.is_floating(array.type) or pa.types.is_integer(array.type)
    if value_type in (ValueType.DOUBLE, ValueType.FLOAT) and numeric:
        wide = value_type == ValueType.DOUBLE
        kind = np.dtype("<f8") if wide else np.dtype("<f4")
        sample = Value(double_val=1.0) if wide else Value(float_val=1.0)
        tag = sample.SerializeToString()[: -kind.itemsize]
        numbers = pc.fill_null(array, 0).to_numpy(zero_copy_only=False).astype(kind)
        layout = np.empty(n, dtype=[("tag", f"V{len(tag)}"), ("value", kind)])
        layout["tag"] = np.frombuffer(tag, dtype=f"V{len(tag)}")[0]
        layout["value"] = numbers
        blobs[:] = layout.view(f"V{layout.dtype.itemsize}").tolist()
        texts[:] = list(map(str, numbers.astype(np.float64).tolist()))
    else:
        try:
            encoded = pc.dictionary_encode(array)
        except pa.ArrowNotImplementedError:
            protos = python_values_to_proto_values(array.to_numpy(zero_copy_only=False), value_type)
            blobs[:] = [p.SerializeToString() for p in protos]
            texts[:] = [extract_text_and_num(p, False)[0] for p in protos]
        else:
            distinct = python_values_to_proto_values(encoded.dictionary.to_pylist(), value_type)
            lookup_blobs = np.array([p.SerializeToString() for p in distinct] + [empty], object)
            lookup_texts = np.array(
                [extract_text_and_num(p, False)[0] for p in distinct] + [None], object
            )
            index = pc.fill_null(encoded.indices, len(distinct)).to_numpy(zero_copy_only=False)
            blobs[:] = lookup_blobs[index]
            texts[:] = lookup_texts[index]
    blobs[missing] = empty
    texts[missing] = None
    return blobs, texts


def _sqlite_path_from_config(store: FeatureStore) -> str:
    path = Path(store.config.online_store.path)
    return str(path if path.is_absolute() else store.repo_path / path)


def _naive(ts: Any) -> datetime | None:
    if ts is None:
        return None
    if isinstance(ts, pd.Timestamp):
        ts = ts.to_pydatetime()
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


class OnlineFeatureReader:
    """Fast point reads of the service's features from Feast's SQLite online store.

    Built once (registry read, connection opened, statement prepared), then each
    :meth:`get` is one indexed query on Feast's tables with Feast's serialized entity key;
    values decode as Feast's ``get_online_features`` decodes them.
    """

    def __init__(self, settings: Settings, service: str = FEATURE_SERVICE) -> None:
        """Open the online store of ``settings`` for ``service``."""
        _sqlite_path(settings)
        store = feature_store(settings)
        fs = store.get_feature_service(service)
        self.feature_columns: list[str] = []
        parts: list[str] = []
        for projection in fs.feature_view_projections:
            view = store.get_feature_view(projection.name)
            wanted = [f.name for f in projection.features]
            self.feature_columns.extend(wanted)
            quoted = ", ".join(f"'{name}'" for name in wanted)
            parts.append(
                f'SELECT feature_name, value FROM "{_table_name(store, view)}" '
                f"WHERE entity_key = ?1 AND feature_name IN ({quoted})"
            )
        self._sql = " UNION ALL ".join(parts)
        self._conn = sqlite3.connect(
            _sqlite_path_from_config(store), check_same_thread=False, cached_statements=64
        )

    def get(self, customer_id: str) -> dict[str, Any]:
        """The feature values of one customer; every feature None when unknown."""
        from feast.protos.feast.types.Value_pb2 import Value

        out: dict[str, Any] = dict.fromkeys(self.feature_columns)
        for name, blob in self._conn.execute(self._sql, (_entity_key_bytes(customer_id),)):
            value = Value.FromString(blob)
            kind = value.WhichOneof("val")
            out[name] = getattr(value, kind) if kind else None
        return out

    def close(self) -> None:
        """Close the SQLite connection."""
        self._conn.close()


def online_features_fast(settings: Settings, customer_ids: Sequence[str]) -> pd.DataFrame:
    """:func:`online_features` through :class:`OnlineFeatureReader` (SQLite online store)."""
    if isinstance(customer_ids, str):
        raise TypeError("customer_ids must be a sequence of ids, not a single string")
    reader = OnlineFeatureReader(settings)
    try:
        rows = [{ENTITY_KEY: str(c), **reader.get(str(c))} for c in customer_ids]
    finally:
        reader.close()
    return pd.DataFrame(rows, columns=[ENTITY_KEY, *reader.feature_columns])


def online_row_counts(settings: Settings) -> dict[str, int]:
    """Entities held in the online store per feature view (SQLite store only)."""
    store = feature_store(settings)
    path = _sqlite_path_from_config(store)
    if settings.online_store != "sqlite" or not Path(path).exists():
        return {}
    conn = sqlite3.connect(path)
    try:
        counts = {}
        for view in store.list_feature_views():
            table = _table_name(store, view)
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            counts[view.name] = (
                int(conn.execute(f'SELECT count(DISTINCT entity_key) FROM "{table}"').fetchone()[0])
                if exists
                else 0
            )
        return counts
    finally:
        conn.close()
