"""The platform's Feast online store: Feast's SQLite store with columnar writes and lean reads.

``feature_store.yaml`` names it by class path, as it names the offline store::

    online_store:
      type: lakehouse.features.online.LakehouseSqliteOnlineStore
      path: ${LAKEHOUSE_HOME}/feast/online_store.db

:class:`LakehouseSqliteOnlineStore` is Feast's :class:`SqliteOnlineStore` (same file, tables,
serialized entity keys, ValueProtos, ``value_text`` and times, so either class reads what the
other wrote) with faster implementations of Feast's hooks, which ``feast serve``,
``FeatureStore.get_online_features`` and materialization call:

* :meth:`~LakehouseSqliteOnlineStore.online_write_batch` writes Feast's rows with one prepared
  statement per batch instead of one statement per value;
* :meth:`~LakehouseSqliteOnlineStore.write_arrow` writes a whole Arrow table of latest rows,
  serialized a column at a time; :class:`lakehouse.features.engine.LakehouseComputeEngine`
  materializes through it;
* :meth:`~LakehouseSqliteOnlineStore.online_read` serializes keys without protobuf round trips;
  :meth:`~LakehouseSqliteOnlineStore.point_reader` prepares one query over several views for
  the platform's point reads.

:class:`OnlineFeatureReader` reads one feature service's values a customer at a time through
that prepared query; :func:`online_feature_store` builds a Feast store of the registry and the
online store alone, for a process that must not start Spark (the serving process).

Stores that use the vector or ``value_num`` columns take Feast's own code paths.
"""

from __future__ import annotations

import functools
import sqlite3
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureStore, FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    _quote_id,
    _table_id,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.type_map import python_values_to_proto_values
from feast.utils import to_naive_utc
from feast.value_type import ValueType

from lakehouse.platform.settings import Settings

#: The ``online_store.type`` of ``feature_store.yaml`` that selects this store.
STORE_TYPE = "lakehouse.features.online.LakehouseSqliteOnlineStore"
#: Feast project name (``project`` in ``feature_store.yaml``).
PROJECT = "lakehouse"
#: Entity join key of every feature view.
ENTITY_KEY = "customer_id"

#: Entities of one multi-row upsert of :meth:`LakehouseSqliteOnlineStore.write_arrow`, at most
#: this many values (bounds the statement's size; SQLite's parser takes far more).
_ROWS_PER_STATEMENT = 600
#: SQLite page cache during :meth:`LakehouseSqliteOnlineStore.write_arrow`, KiB (default 2 MiB):
#: upserts into a large table touch many index pages.
_BULK_CACHE_KIB = 131_072
_UINT32 = struct.Struct("<I")
_EMPTY_VALUE = ValueProto().SerializeToString()


class LakehouseSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """Configuration of :class:`LakehouseSqliteOnlineStore`: Feast's SQLite store's own."""

    type: Literal["lakehouse.features.online.LakehouseSqliteOnlineStore"] = STORE_TYPE  # type: ignore[assignment]
    """Online store type selector."""


def table_name(config: RepoConfig, view: FeatureView) -> str:
    """The SQLite table of ``view``, as Feast's SQLite store names it."""
    return _table_id(config.project, view, config.registry.enable_online_feature_view_versioning)


def plain_layout(config: RepoConfig) -> bool:
    """Whether the store uses Feast's plain layout (no vector or ``value_num`` columns)."""
    online = config.online_store
    return not getattr(online, "vector_enabled", False) and not getattr(
        online, "enable_openai_compatible_store", False
    )


class LakehouseSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite online store, storage format unchanged, with faster reads and writes."""

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Upsert Feast's rows (one per entity and feature), the same rows Feast's store writes.

        When every entity carries the same features (materialization's case), by the multi-row
        upserts of :meth:`write_arrow`; otherwise one ``executemany`` of single-row upserts.
        """
        if not plain_layout(config):
            super().online_write_batch(config, table, data, progress)
            return
        version = config.entity_key_serialization_version
        features = sorted(data[0][1]) if data else []
        if features and all(
            len(v) == len(features) and v.keys() >= set(features) for _, v, _, _ in data
        ):
            params = np.empty((len(data), 3 + 2 * len(features)), dtype=object)
            for i, (entity_key, values, event_ts, created_ts) in enumerate(data):
                row: list[Any] = [
                    _serialize_key(entity_key, version),
                    _adapt_time(event_ts),
                    _adapt_time(created_ts),
                ]
                for name in features:
                    value = values[name]
                    row += (value.SerializeToString(), extract_text_and_num(value, False)[0])
                params[i] = row
            self._upsert_entities(config, table, features, params)
        else:
            rows = []
            for entity_key, values, event_ts, created_ts in data:
                key = _serialize_key(entity_key, version)
                event, created = _adapt_time(event_ts), _adapt_time(created_ts)
                for name, value in values.items():
                    text = extract_text_and_num(value, False)[0]
                    rows.append((key, name, value.SerializeToString(), text, event, created))
            conn = self._get_conn(config)
            with conn:
                conn.executemany(_upsert_sql(table_name(config, table), None, 1), rows)
        if progress:
            progress(len(data))

    def write_arrow(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: pa.Table,
        timestamp_column: str,
        created_column: str | None,
    ) -> int:
        """Upsert the rows of ``data``, at most one per entity, as Feast's writer would; the rows.

        ``data`` holds the view's join keys and features under their Feast names, the event
        time in ``timestamp_column`` and the created time, if any, in ``created_column``. Keys
        and values are serialized a column at a time; rows go in primary-key order, by
        multi-row upserts that bind each entity's key and times once, in one transaction.
        """
        n = data.num_rows
        features = sorted(f.name for f in table.features)
        if n == 0 or not features:  # Feast writes one row per feature
            return n
        if not plain_layout(config):
            raise ValueError("write_arrow writes the plain layout (no vector or value_num)")
        keys = _entity_keys(
            [(f.name, f.dtype.to_value_type(), data.column(f.name)) for f in table.entity_columns],
            config.entity_key_serialization_version,
        )
        types = {f.name: f.dtype.to_value_type() for f in table.features}
        width = 3 + 2 * len(features)  # key, event time, created time, (value, text) per feature
        params = np.empty((n, width), dtype=object)
        params[:, 0] = keys
        params[:, 1] = _sqlite_times(data.column(timestamp_column))
        params[:, 2] = _sqlite_times(data.column(created_column)) if created_column else None
        for j, name in enumerate(features):
            blobs, texts = _encode_values(data.column(name), types[name])
            params[:, 3 + 2 * j] = blobs
            params[:, 4 + 2 * j] = texts
        self._upsert_entities(config, table, features, params)
        return n

    def _upsert_entities(
        self, config: RepoConfig, table: FeatureView, features: list[str], params: Any
    ) -> None:
        """Upsert one row per entity and feature from ``params`` (an object array, a row per
        entity: key, event and created times, then value and text of each of ``features``)."""
        n, width = params.shape
        # Primary-key order (stable: of one key written twice, the later row still wins).
        params = params[sorted(range(n), key=params[:, 0].__getitem__)]
        conn = self._get_conn(config)
        name = table_name(config, table)
        variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        per_statement = max(1, min(_ROWS_PER_STATEMENT // len(features), variables // width))
        full = n - n % per_statement
        cache = conn.execute("PRAGMA cache_size").fetchone()[0]
        conn.execute(f"PRAGMA cache_size = -{_BULK_CACHE_KIB}")
        try:
            with conn:
                if full:
                    conn.executemany(
                        _upsert_sql(name, features, per_statement),
                        params[:full].reshape(-1, per_statement * width).tolist(),
                    )
                if full < n:
                    conn.execute(
                        _upsert_sql(name, features, n - full), params[full:].ravel().tolist()
                    )
        finally:
            conn.execute(f"PRAGMA cache_size = {int(cache)}")

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """Feast's ``online_read``: the same query and answer, keys serialized directly."""
        version = config.entity_key_serialization_version
        keys = [_serialize_key(k, version) for k in entity_keys]
        found: dict[bytes, tuple[datetime | None, dict[str, ValueProto]]] = {}
        sql = (
            f"SELECT entity_key, feature_name, value, event_ts "
            f"FROM {_quote_id(table_name(config, table))} "
            f"WHERE entity_key IN ({','.join('?' * len(keys))}) ORDER BY entity_key"
        )
        for key, feature, blob, ts in self._get_conn(config).execute(sql, keys):
            _, values = found.get(key) or (None, {})
            values[feature] = ValueProto.FromString(blob)
            # Feast reports the event time of the entity's last row.
            found[key] = (_utc(ts), values)
        return [found.get(key, (None, None)) for key in keys]

    def point_reader(
        self, config: RepoConfig, views: Sequence[tuple[FeatureView, Sequence[str]]]
    ) -> PointReader:
        """A prepared read of the given features of several views for one entity at a time."""
        parts = []
        for view, wanted in views:
            names = ", ".join("'" + name.replace("'", "''") + "'" for name in wanted)
            parts.append(
                f"SELECT feature_name, value FROM {_quote_id(table_name(config, view))} "
                f"WHERE entity_key = ?1 AND feature_name IN ({names})"
            )
        return PointReader(
            self._get_conn(config),
            " UNION ALL ".join(parts),
            config.entity_key_serialization_version,
        )

    def entity_count(self, config: RepoConfig, view: FeatureView) -> int:
        """Entities stored for ``view`` (0 when its table does not exist)."""
        conn = self._get_conn(config)
        name = table_name(config, view)
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        if not exists:
            return 0
        return int(
            conn.execute(f"SELECT count(DISTINCT entity_key) FROM {_quote_id(name)}").fetchone()[0]
        )

    def db_path(self, config: RepoConfig) -> str:
        """The SQLite file of ``config`` (relative paths from the repository, as Feast does)."""
        return self._get_db_path(config)

    def close_connection(self) -> None:
        """Close the SQLite connection (reopened on next use); the file stays."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def online_store_config(settings: Settings) -> dict[str, Any]:
    """The ``online_store`` mapping of ``feature_store.yaml`` for ``settings``."""
    if settings.online_store == "redis":
        return {"type": "redis", "connection_string": settings.redis_url}
    kind = "sqlite" if settings.online_store == "feast-sqlite" else STORE_TYPE
    return {"type": kind, "path": str(settings.feast_dir / "online_store.db")}


def online_feature_store(settings: Settings) -> FeatureStore:
    """A Feast store of the settings' registry and online store, without an offline store.

    For readers of the online store only: its offline store is Feast's file store, never
    used, so building it neither needs Spark nor imports it.
    """
    config = RepoConfig(
        repo_path=settings.feast_dir,
        project=PROJECT,
        provider="local",
        registry={"registry_type": "file", "path": str(settings.feast_dir / "registry.db")},
        online_store=online_store_config(settings),
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
    )
    return FeatureStore(repo_path=str(settings.feast_dir), config=config)


class OnlineFeatureReader:
    """Point reads of a feature service's features for the platform's low-latency callers.

    Resolves the service once (registry read, one prepared query over the views' SQLite tables
    through :meth:`LakehouseSqliteOnlineStore.point_reader`), then each :meth:`get` is one
    indexed query; values decode as ``get_online_features`` decodes them. It skips the SDK's
    per-call registry lookups and response building, so it stays several times faster. The
    store must be a SQLite online store (either store class: the format is the same).
    """

    def __init__(self, store: FeatureStore, service: str) -> None:
        """Open the SQLite online store of ``store`` for ``service``."""
        fs = store.get_feature_service(service)
        self.feature_columns: list[str] = []
        views: list[tuple[FeatureView, list[str]]] = []
        for projection in fs.feature_view_projections:
            wanted = [f.name for f in projection.features]
            views.append((store.get_feature_view(projection.name), wanted))
            self.feature_columns.extend(wanted)
        self._online = LakehouseSqliteOnlineStore()
        self._reader = self._online.point_reader(store.config, views)

    def get(self, customer_id: str) -> dict[str, Any]:
        """The feature values of one customer; every feature None when unknown."""
        out: dict[str, Any] = dict.fromkeys(self.feature_columns)
        for name, blob in self._reader.rows(ENTITY_KEY, customer_id):
            value = ValueProto.FromString(blob)
            kind = value.WhichOneof("val")
            out[name] = getattr(value, kind) if kind else None
        return out

    def close(self) -> None:
        """Close the SQLite connection."""
        self._online.close_connection()


class PointReader:
    """A prepared point read of one entity's features over several views (see
    :meth:`LakehouseSqliteOnlineStore.point_reader`): one indexed query, values still encoded."""

    def __init__(self, conn: sqlite3.Connection, sql: str, version: int) -> None:
        """Read through ``conn`` with ``sql`` (entity key bound as ``?1``)."""
        self._conn = conn
        self._sql = sql
        self._version = version

    def rows(self, join_key: str, value: str) -> list[tuple[str, bytes]]:
        """``(feature, serialized ValueProto)`` pairs of the entity with string key ``value``."""
        raw = value.encode("utf8")
        key = _string_key_prefix(join_key, self._version) + _UINT32.pack(len(raw)) + raw
        rows: list[tuple[str, bytes]] = self._conn.execute(self._sql, (key,)).fetchall()
        return rows


# --- Feast's serialization, a column at a time -----------------------------------------------
@functools.cache
def _string_key_prefix(join_key: str, version: int) -> bytes:
    """Feast's serialized entity key of one string join key, up to the value's length.

    Feast lays the key out as its header and join-key name, the value's type, then the value's
    length (4 bytes, little-endian) and UTF-8 bytes; the prefix is cut from Feast's own
    serialization of an empty value, so only the value's part is added per key.
    """
    empty = EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(string_val="")])
    return bytes(serialize_entity_key(empty, entity_key_serialization_version=version))[:-4]


def _serialize_key(entity_key: EntityKeyProto, version: int) -> bytes:
    """Feast's serialized entity key; one string join key without going through Feast's code."""
    if len(entity_key.join_keys) == 1 and entity_key.entity_values[0].HasField("string_val"):
        raw = entity_key.entity_values[0].string_val.encode("utf8")
        return _string_key_prefix(entity_key.join_keys[0], version) + _UINT32.pack(len(raw)) + raw
    return bytes(serialize_entity_key(entity_key, entity_key_serialization_version=version))


def _entity_keys(columns: Sequence[tuple[str, Any, Any]], version: int) -> list[bytes]:
    """Feast's serialized entity key of each row: ``(join key, ValueType, Arrow column)``."""
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
        bytes(
            serialize_entity_key(EntityKeyProto(join_keys=names, entity_values=list(row)), version)
        )
        for row in zip(*values, strict=True)
    ]


def _encode_values(column: Any, value_type: Any) -> tuple[Any, Any]:
    """Feast's serialized ValueProto and ``value_text`` of each value, as object arrays.

    Nulls (and NaN, as Feast's converter treats it) become the empty ValueProto and no text.
    Doubles and floats are laid out in the protobuf wire format directly (the tag byte cut from
    a message protobuf serialized, then the little-endian value); other scalars go through
    Feast's converter once per distinct value, lists value by value.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    missing = np.asarray(pc.is_null(array, nan_is_null=True).to_numpy(zero_copy_only=False))
    blobs = np.empty(n, dtype=object)
    texts = np.empty(n, dtype=object)
    numeric = pa.types.is_floating(array.type) or pa.types.is_integer(array.type)
    if value_type in (ValueType.DOUBLE, ValueType.FLOAT) and numeric:
        wide = value_type == ValueType.DOUBLE
        kind = np.dtype("<f8") if wide else np.dtype("<f4")
        sample = ValueProto(double_val=1.0) if wide else ValueProto(float_val=1.0)
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
            lookup_blobs = np.array(
                [p.SerializeToString() for p in distinct] + [_EMPTY_VALUE], object
            )
            lookup_texts = np.array(
                [extract_text_and_num(p, False)[0] for p in distinct] + [None], object
            )
            index = pc.fill_null(encoded.indices, len(distinct)).to_numpy(zero_copy_only=False)
            blobs[:] = lookup_blobs[index]
            texts[:] = lookup_texts[index]
    blobs[missing] = _EMPTY_VALUE
    texts[missing] = None
    return blobs, texts


def _sqlite_times(column: Any) -> Any:
    """Times as Feast's writer binds them: naive UTC ``datetime`` through Feast's adapter.

    Each distinct time is adapted once (Feast's module registers the adapter on import); an
    object array, None for nulls.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(array)
    distinct = [_naive(ts) for ts in encoded.dictionary.to_pylist()]
    lookup = np.empty(len(distinct) + 1, dtype=object)
    lookup[:-1] = [
        None if ts is None else sqlite3.adapt(ts, sqlite3.PrepareProtocol) for ts in distinct
    ]
    return lookup[pc.fill_null(encoded.indices, len(distinct)).to_numpy(zero_copy_only=False)]


def _naive(ts: Any) -> datetime | None:
    if ts is None:
        return None
    if isinstance(ts, pd.Timestamp):
        ts = ts.to_pydatetime()
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


def _adapt_time(ts: datetime | None) -> Any:
    """A time as Feast's writer binds it: naive UTC through Feast's registered adapter."""
    return None if ts is None else sqlite3.adapt(to_naive_utc(ts), sqlite3.PrepareProtocol)


def _utc(ts: Any) -> datetime | None:
    """An event time as Feast's ``online_read`` returns it: aware UTC."""
    if not isinstance(ts, datetime):
        return None
    return ts.astimezone(UTC) if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _upsert_sql(table: str, features: Sequence[str] | None, entities: int) -> str:
    """An upsert into Feast's table ``table``.

    With ``features``, ``entities`` entities per statement, each entity's key and times bound
    once (parameters: key, event, created, then value and text per feature); without, one row
    per statement, parameters in column order.
    """
    columns = "(entity_key, feature_name, value, value_text, event_ts, created_ts)"
    if features is None:
        values = "(?, ?, ?, ?, ?, ?)"
    else:
        width = 3 + 2 * len(features)
        literals = ["'" + name.replace("'", "''") + "'" for name in features]
        rows = []
        for e in range(entities):
            base = e * width
            for j, literal in enumerate(literals):
                v = base + 4 + 2 * j
                rows.append(f"(?{base + 1}, {literal}, ?{v}, ?{v + 1}, ?{base + 2}, ?{base + 3})")
        values = ", ".join(rows)
    return (
        f"INSERT INTO {_quote_id(table)} {columns} VALUES {values} "
        "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
        "value_text = excluded.value_text, event_ts = excluded.event_ts, "
        "created_ts = excluded.created_ts"
    )
