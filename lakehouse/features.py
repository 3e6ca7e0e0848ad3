"""The Feast feature store over the gold Delta tables: apply, materialize, retrieve.

The declarative repository is ``feature_repo/`` (entity, Spark sources on the gold Delta tables,
feature views, the ``credit_risk_v1`` service). This module is the glue the platform calls:

* :func:`feature_store` builds a :class:`feast.FeatureStore` for a :class:`Settings` object; its
  configuration is rendered from the settings into ``settings.feast_dir/feature_store.yaml``
  (registry and SQLite online store under ``settings.feast_dir``, or Redis at
  ``settings.redis_url``; Spark offline store with the platform's Delta configuration).
* :func:`apply` registers the repository's definitions, with every source re-rooted at the
  settings' table root; :func:`materialize` loads the online store incrementally.
* :func:`build_training_set` and :func:`historical_features` run Feast's point-in-time join on
  the caller's SparkSession; :func:`online_features` reads the online store.

Feast's Spark offline store takes the active SparkSession of the calling thread, or builds one
with ``getOrCreate``. Functions that receive ``spark`` make it the active session first, so Feast
reads Delta through the platform's session rather than a session of its own.
"""

from __future__ import annotations

import importlib.util
import logging
import os
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
from pyspark.sql import functions as F

from lakehouse.catalog import GOLD_LABELS, TableCatalog
from lakehouse.jars import jar_paths
from lakehouse.settings import Settings
from lakehouse.spark import spark_conf

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
        "offline_store": {"type": "spark", "spark_conf": offline_spark_conf(settings)},
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
        bulk: write SQLite in bulk (same rows Feast writes, far faster) rather than through
            Feast's per-row writer; defaults to True for the SQLite online store.
    """
    end_utc = _utc(end)
    running = SparkSession.getActiveSession() or SparkSession._instantiatedSession
    if running is not None:
        use_session(running)
    store = feature_store(settings)
    if not store.list_feature_views():
        raise RuntimeError("no feature views registered: run `lakehouse features apply` first")
    for view in store.list_feature_views():
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
        if bulk is None:
            bulk = settings.online_store == "sqlite"
        if bulk:
            rows = _bulk_materialize_view(store, view, start, end_utc)
            store.registry.apply_materialization(view, store.project, start, end_utc)
            log.info("%s: %d rows from %s to %s", view.name, rows, start, end_utc)
        else:
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
    versions = {GOLD_LABELS: catalog.version(spark, GOLD_LABELS)}
    for projection in service.feature_view_projections:
        source = store.get_feature_view(projection.name).batch_source
        table = source.tags.get(TABLE_TAG) if source is not None else None
        if table:
            versions[table] = catalog.version(spark, table)
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
        if entity_df.isEmpty():
            # Feast cannot take an empty entity frame (no timestamp range): nothing to join.
            types = _feature_spark_types(store)
            return entity_df.select(
                *entity_df.columns, *[F.lit(None).cast(types[c]).alias(c) for c in feature_columns]
            )
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


_SPARK_TYPES = {
    "Int32": "int",
    "Int64": "bigint",
    "Float32": "float",
    "Float64": "double",
    "String": "string",
    "Bool": "boolean",
    "UnixTimestamp": "timestamp",
}


def _feature_spark_types(store: FeatureStore) -> dict[str, str]:
    """Spark SQL type of every feature of the service."""
    service = store.get_feature_service(FEATURE_SERVICE)
    types = {}
    for projection in service.feature_view_projections:
        for field in projection.features:
            types[field.name] = _SPARK_TYPES[str(field.dtype)]
    return types


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
_PROTO_FIELD = {
    "Int32": "int32_val",
    "Int64": "int64_val",
    "Float64": "double_val",
    "String": "string_val",
    "Bool": "bool_val",
}


def _entity_key_bytes(customer_id: str) -> bytes:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=customer_id)])
    return bytes(serialize_entity_key(key, entity_key_serialization_version=3))


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


def _bulk_materialize_view(
    store: FeatureStore, view: FeatureView, start: datetime, end: datetime
) -> int:
    """Write the latest row per entity in ``[start, end]`` of ``view``; return the rows."""
    import sqlite3

    from feast.protos.feast.types.Value_pb2 import Value

    source = view.batch_source
    assert source is not None
    names = [f.name for f in view.features]
    offline = store._get_provider().offline_store
    table = offline.pull_latest_from_table_or_query(
        config=store.config,
        data_source=source,
        join_key_columns=[ENTITY_KEY],
        feature_name_columns=names,
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        start_date=start,
        end_date=end,
    ).to_arrow()
    if table.num_rows == 0:
        return 0
    keys = [_entity_key_bytes(str(k)) for k in table.column(ENTITY_KEY).to_pylist()]
    event_ts = [_naive(t) for t in table.column(source.timestamp_field).to_pylist()]
    created_col = source.created_timestamp_column
    created_ts = (
        [_naive(t) for t in table.column(created_col).to_pylist()]
        if created_col and created_col in table.column_names
        else [None] * table.num_rows
    )
    empty = Value().SerializeToString()
    rows: list[tuple[Any, ...]] = []
    for feature in view.features:
        field = _PROTO_FIELD.get(str(feature.dtype))
        if field is None:
            raise ValueError(f"{view.name}.{feature.name}: type {feature.dtype} not supported")
        values = table.column(feature.name).to_pylist()
        for key, value, ts, cts in zip(keys, values, event_ts, created_ts, strict=True):
            blob = empty if value is None else Value(**{field: value}).SerializeToString()
            text = None if value is None else str(value)  # as Feast's extract_text_and_num
            rows.append((key, feature.name, blob, text, ts, cts))
    db = _sqlite_path_from_config(store)
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.executemany(
                f'INSERT INTO "{_table_name(store, view)}" '
                "(entity_key, feature_name, value, value_text, event_ts, created_ts) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                "value = excluded.value, value_text = excluded.value_text, "
                "event_ts = excluded.event_ts, created_ts = excluded.created_ts",
                rows,
            )
    finally:
        conn.close()
    return table.num_rows


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
        import sqlite3

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
    import sqlite3

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
