"""The Feast feature store over the gold Delta tables: apply, materialize, retrieve.

The declarative repository is ``feature_repo/`` (entity, Spark sources on the gold Delta tables,
feature views, the ``credit_risk_v1`` service). This module is the glue the platform calls:

* :func:`feature_store` builds a :class:`feast.FeatureStore` for a :class:`Settings` object; its
  configuration is rendered from the settings into ``settings.feast_dir/feature_store.yaml``:
  the registry a file under ``settings.feast_dir``, or Feast's SQL registry at
  ``settings.feast_registry`` (a SQLAlchemy URL, PostgreSQL for a team); the offline store of
  :mod:`lakehouse.features.offline` with the platform's Delta configuration; the SQLite
  online store of :mod:`lakehouse.features.online` (Feast's format, faster hooks) with the
  batch engine of :mod:`lakehouse.features.engine`; Feast's own SQLite store (the same file) when
  ``settings.online_store`` is ``feast-sqlite``; or Redis at ``settings.redis_url``.
* :func:`apply` registers the repository's definitions, with every source re-rooted at the
  settings' table root; :func:`materialize` loads the online store incrementally through
  Feast's ``FeatureStore.materialize``.
* :func:`build_training_set` and :func:`historical_features` run Feast's historical retrieval
  on the caller's SparkSession; :func:`online_features` reads the online store through Feast,
  :class:`OnlineFeatureReader` through a prepared query of the online store class.

Feast's Spark offline store takes the active SparkSession of the calling thread, or builds one
with ``getOrCreate``. Functions that receive ``spark`` make it the active session first, so Feast
reads Delta through the platform's session rather than a session of its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
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
from feast import Entity, FeatureService, FeatureStore, FeatureView
from feast.data_source import DataSource
from feast.repo_config import RepoConfig
from feast.table_format import DeltaFormat
from pyspark.sql import DataFrame, SparkSession

from lakehouse.features import offline, online
from lakehouse.features.engine import ENGINE_TYPE
from lakehouse.features.online import LakehouseSqliteOnlineStore
from lakehouse.platform.catalog import GOLD_LABELS, TableCatalog
from lakehouse.platform.jars import jar_paths, log_store_jar, object_store_jar_paths
from lakehouse.platform.settings import Settings
from lakehouse.platform.spark import LOG_STORE_CONF, spark_conf
from lakehouse.platform.tables import delta_version

log = logging.getLogger(__name__)

#: The feature service the model trains and scores with.
FEATURE_SERVICE = "credit_risk_v1"
#: Feast project name (``project`` in ``feature_store.yaml``).
PROJECT = online.PROJECT
#: Overrides where the declarative Feast repository lives.
FEATURE_REPO_ENV = "LAKEHOUSE_FEATURE_REPO"
#: ``feast`` switches the SQLite online store back to Feast's own (store and batch engine);
#: Tag on each source and view naming its gold table (see ``feature_repo/definitions.py``).
TABLE_TAG = "lakehouse_table"
#: Entity join key of every feature view.
ENTITY_KEY = online.ENTITY_KEY
#: How long a process trusts its cached copy of a SQL registry before reading it again: another
#: process's ``apply`` is seen within this time (a process's own writes refresh it at once).
SQL_REGISTRY_CACHE_TTL_SECONDS = 60
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
    path = Path(override) if override else Path(__file__).resolve().parents[2] / "feature_repo"
    if not (path / "definitions.py").is_file():
        raise FileNotFoundError(
            f"no Feast repository at {path} (definitions.py missing); set {FEATURE_REPO_ENV}"
        )
    return path


def offline_spark_conf(settings: Settings) -> dict[str, str]:
    """Spark configuration of Feast's offline store: the platform's, with master and jars.

    Used only when Feast itself has to start a session (the ``feast`` CLI, ``feast serve``).
    With tables on an object store, :func:`spark_conf` carries S3A's options and the jars add
    S3A's and the platform's LogStore for S3 (in ``spark.jars``, so that a cluster's executors
    get them too).
    """
    conf = spark_conf(settings)
    conf.pop("spark.driver.extraJavaOptions", None)
    conf["spark.master"] = settings.spark_master
    conf["spark.app.name"] = "lakehouse-feast"
    jars = jar_paths()
    if settings.tables_on_object_store:
        jars = [*jars, *object_store_jar_paths()]
        log_store = log_store_jar()
        if log_store is not None:
            jars.append(log_store)
        else:
            conf.pop(LOG_STORE_CONF, None)
    conf["spark.jars"] = ",".join(str(p) for p in jars)
    return conf


def registry_config(settings: Settings) -> dict[str, Any]:
    """The ``registry`` mapping of ``feature_store.yaml``: a file, or Feast's SQL registry.

    The SQL registry's connections are checked before use (``pool_pre_ping``), so a process
    outlives a restart of the database between two calls.
    """
    if not settings.feast_registry:
        return {"registry_type": "file", "path": str(settings.feast_dir / "registry.db")}
    return {
        "registry_type": "sql",
        "path": settings.feast_registry,
        "cache_ttl_seconds": SQL_REGISTRY_CACHE_TTL_SECONDS,
        "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
    }


def registry_location(settings: Settings) -> str:
    """Where the registry lives, for messages: the file, or the SQL URL without its password."""
    if not settings.feast_registry:
        return str(settings.feast_dir / "registry.db")
    from sqlalchemy.engine import make_url  # Feast's dependency; only the SQL registry needs it

    return make_url(settings.feast_registry).render_as_string(hide_password=True)


def feature_store_config(settings: Settings, feast_sqlite: bool | None = None) -> dict[str, Any]:
    """The ``feature_store.yaml`` mapping for ``settings``.

    ``feast_sqlite`` picks Feast's own SQLite store and batch engine over the platform's (same
    file and format); by default ``settings.online_store == "feast-sqlite"`` decides.
    """
    feast_dir = settings.feast_dir
    if feast_sqlite is None:
        feast_sqlite = settings.online_store == "feast-sqlite"
    online_store: dict[str, Any]
    engine: dict[str, Any] = {}
    if settings.online_store == "redis":
        online_store = {"type": "redis", "connection_string": settings.redis_url}
    else:
        kind = "sqlite" if feast_sqlite else online.STORE_TYPE
        online_store = {"type": kind, "path": str(feast_dir / "online_store.db")}
        if not feast_sqlite:
            engine = {"batch_engine": {"type": ENGINE_TYPE}}
    return {
        "project": PROJECT,
        "provider": "local",
        "registry": registry_config(settings),
        "online_store": online_store,
        "offline_store": {"type": offline.STORE_TYPE, "spark_conf": offline_spark_conf(settings)},
        **engine,
        "entity_key_serialization_version": 3,
    }


def write_feature_store_yaml(settings: Settings) -> Path:
    """Write ``settings.feast_dir/feature_store.yaml`` (for ``feast -f``); return its path."""
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    path = settings.feast_dir / "feature_store.yaml"
    text = yaml.safe_dump(feature_store_config(settings), sort_keys=False)
    # Feast reads the SQL registry's URL, password included, from this file: then only its
    # owner may read it, from its creation on.
    private = _registry_password(settings)
    if private and path.is_file():
        path.chmod(0o600)
    if not path.is_file() or path.read_text() != text:
        descriptor = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666
        )
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
    return path


def _registry_password(settings: Settings) -> bool:
    if not settings.feast_registry:
        return False
    from sqlalchemy.engine import make_url

    return bool(make_url(settings.feast_registry).password)


def feature_store(settings: Settings) -> FeatureStore:
    """A FeatureStore configured from ``settings`` over the declarative repository."""
    fs_yaml = write_feature_store_yaml(settings)
    return FeatureStore(repo_path=str(feature_repo_dir()), fs_yaml_file=fs_yaml)


def _feature_store_with(settings: Settings, feast_sqlite: bool) -> FeatureStore:
    """:func:`feature_store` with the SQLite store chosen here, configured in memory only."""
    repo = feature_repo_dir()
    config = RepoConfig(repo_path=repo, **feature_store_config(settings, feast_sqlite))
    return FeatureStore(repo_path=str(repo), config=config)


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
    module = load_definitions(settings, table_versions)
    objects: list[Any] = []
    for kind in (Entity, DataSource, FeatureView, FeatureService):
        objects.extend(_module_objects(module, kind))
    store = feature_store(settings)
    store.apply(objects)
    names = sorted(v.name for v in _module_objects(module, FeatureView))
    log.info("applied %d feature views to %s", len(names), registry_location(settings))
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
        bulk: True loads SQLite through the platform's store and engine
            (:mod:`lakehouse.features.online`, :mod:`lakehouse.features.engine`: the rows Feast's
            writer writes, far faster), False through Feast's own store and per-row writer;
            None (the default) through the configured store. Asking Redis for ``bulk=True`` is
            an error.
    """
    end_utc = _utc(end)
    running = SparkSession.getActiveSession() or SparkSession._instantiatedSession
    if running is not None:
        use_session(running)
    if bulk and not settings.sqlite_online_store:
        raise ValueError(
            f"bulk materialization needs the sqlite online store, not {settings.online_store}"
        )
    store = feature_store(settings) if bulk is None else _feature_store_with(settings, not bulk)
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
    # One Feast call per window start, so that views resuming together are read and written
    # by one engine call (Spark reads the next view while the previous one is written).
    starts: dict[datetime, list[str]] = {}
    for view, start in windows:
        starts.setdefault(start, []).append(view.name)
    for start, names in starts.items():
        with contextlib.redirect_stdout(io.StringIO()) as printed:  # Feast prints progress
            store.materialize(start_date=start, end_date=end_utc, feature_views=names)
        log.debug("%s", printed.getvalue())
        log.info("materialized %s from %s to %s", ", ".join(names), start, end_utc)
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
    sources time-travel, so the frame is the one that run trained on. That registry is always a
    file, so a shared SQL registry never sees the pinned sources.
    """
    if table_versions:
        with tempfile.TemporaryDirectory(prefix="lakehouse-pinned-") as tmp:
            pinned = replace(
                settings, home=Path(tmp), tables_uri=settings.tables_root, feast_registry=None
            )
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


# --- Point reads -----------------------------------------------------------------------------
class OnlineFeatureReader(online.OnlineFeatureReader):
    """:class:`lakehouse.features.online.OnlineFeatureReader` on the store of ``settings``."""

    def __init__(self, settings: Settings, service: str = FEATURE_SERVICE) -> None:
        """Open the SQLite online store of ``settings`` for ``service``."""
        _require_sqlite(settings)
        super().__init__(feature_store(settings), service)


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
    if not settings.sqlite_online_store:
        return {}
    store = feature_store(settings)
    sqlite_store = LakehouseSqliteOnlineStore()
    if not Path(sqlite_store.db_path(store.config)).exists():
        return {}
    try:
        return {
            view.name: sqlite_store.entity_count(store.config, view)
            for view in store.list_feature_views()
        }
    finally:
        sqlite_store.close_connection()


def _require_sqlite(settings: Settings) -> None:
    if not settings.sqlite_online_store:
        raise ValueError(
            f"the fast paths need the sqlite online store, not {settings.online_store}"
        )
