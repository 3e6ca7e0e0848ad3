"""The Feast feature store over hand-built gold tables: point in time, online, CLI, serve."""

from __future__ import annotations

import json
import math
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from feast import Entity, FeatureView, Field, FileSource
from feast.infra.compute_engines.local.compute import LocalComputeEngine
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    SparkOfflineStore,
    SparkRetrievalJob,
    get_spark_session_or_start_new_with_repoconfig,
)
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import (
    RepoConfig,
    get_batch_engine_config_from_type,
    get_offline_config_from_type,
    get_online_config_from_type,
)
from feast.type_map import python_values_to_proto_values
from feast.types import Array, Bool, Float32, Float64, Int32, Int64, String
from feast.value_type import ValueType
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse.cli import main
from lakehouse.features import online
from lakehouse.features import store as features
from lakehouse.features.engine import (
    ENGINE_TYPE,
    LakehouseComputeEngine,
    LakehouseComputeEngineConfig,
)
from lakehouse.features.offline import (
    STORE_TYPE,
    DataFrameRetrievalJob,
    LakehouseSparkOfflineStoreConfig,
)
from lakehouse.features.online import LakehouseSqliteOnlineStore, LakehouseSqliteOnlineStoreConfig
from lakehouse.medallion.contracts import (
    GOLD_CUSTOMER_PROFILE_SCHEMA,
    GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
    GOLD_LABELS_SCHEMA,
)
from lakehouse.platform.catalog import (
    GOLD_CUSTOMER_PROFILE,
    GOLD_CUSTOMER_TRANSACTIONS,
    GOLD_LABELS,
    TableCatalog,
)
from lakehouse.platform.settings import Settings
from lakehouse.platform.spark import spark_conf
from lakehouse.platform.tables import overwrite
from tests.conftest import copy_tables, written_once

REPO_ROOT = Path(__file__).resolve().parents[2]
FEAST = str(REPO_ROOT / ".venv" / "bin" / "feast")
D = datetime

PROFILE_FEATURES = [
    "age",
    "annual_income",
    "employment_years",
    "credit_score",
    "home_ownership",
    "region",
]
TXN_FEATURES = [
    "txn_count_7d",
    "txn_amount_sum_7d",
    "txn_amount_avg_7d",
    "txn_count_30d",
    "txn_amount_sum_30d",
    "txn_amount_avg_30d",
    "txn_count_90d",
    "txn_amount_sum_90d",
    "txn_amount_avg_90d",
    "txn_amount_max_30d",
    "gambling_share_30d",
    "online_share_30d",
]
#: The end of every materialization in these tests.
MAT_END = D(2026, 3, 12)


def _profile(cid: str, ts: datetime, score: int, created: datetime, income: float) -> tuple:
    return (cid, ts, 30, income, 4.0, score, "RENT", "NORTH", created)


def _txn(cid: str, ts: datetime, count: int) -> tuple:
    n = float(count)
    return (
        cid,
        ts,
        *(count, 10.0 * n, 10.0, 2 * count, 20.0 * n, 10.0, 3 * count, 30.0 * n, 10.0),
        15.0 * n,
        0.25,
        0.5,
        ts,
    )


PROFILE_ROWS = [
    _profile("C1", D(2026, 1, 1), 600, D(2026, 1, 1, 1), 50_000.0),
    # Two rows for the same instant: the later created_at wins.
    _profile("C1", D(2026, 3, 1), 640, D(2026, 3, 1, 1), 55_000.0),
    _profile("C1", D(2026, 3, 1), 650, D(2026, 3, 1, 2), 56_000.0),
    # More than 365 days before every application: expired.
    _profile("C2", D(2025, 1, 1), 700, D(2025, 1, 1, 1), 70_000.0),
]
TXN_ROWS = [
    _txn("C1", D(2026, 3, 9), 3),
    _txn("C1", D(2026, 3, 10), 5),
    _txn("C1", D(2026, 3, 11), 9),
    _txn("C2", D(2025, 9, 1), 7),  # more than 180 days before 2026-03-10: expired
]
LABEL_ROWS = [
    ("A1", "C1", D(2026, 3, 10, 12), 1000.0, 12, "CAR", 0, D(2026, 5, 1)),
    ("A2", "C1", D(2026, 3, 10), 2000.0, 24, "OTHER", 1, D(2026, 5, 1)),  # at a stamp
    ("A3", "C1", D(2026, 2, 15), 3000.0, 36, "CAR", 0, D(2026, 5, 1)),  # before any txn row
    ("A4", "C2", D(2026, 3, 10), 4000.0, 48, None, 1, D(2026, 5, 1)),  # all expired
    ("A5", "C3", D(2026, 3, 10), 5000.0, 60, "EDUCATION", 0, D(2026, 5, 1)),  # unknown
    ("A6", "C1", D(2026, 3, 11, 23), 6000.0, 12, "CAR", 0, D(2026, 5, 1)),
    ("A7", "C1", D(2026, 9, 8, 1), 7000.0, 12, "CAR", 1, D(2026, 11, 1)),  # txn 180d1h old
]


def _profile_values(score: int | None, income: float | None) -> dict[str, Any]:
    if score is None:
        return dict.fromkeys(PROFILE_FEATURES)
    return {
        "age": 30,
        "annual_income": income,
        "employment_years": 4.0,
        "credit_score": score,
        "home_ownership": "RENT",
        "region": "NORTH",
    }


def _txn_values(count: int | None) -> dict[str, Any]:
    if count is None:
        return dict.fromkeys(TXN_FEATURES)
    row = _txn("C", D(2026, 1, 1), count)
    return dict(zip(TXN_FEATURES, row[2:-1], strict=True))


def _expected(profile: tuple[int | None, float | None], count: int | None) -> dict[str, Any]:
    return {**_profile_values(*profile), **_txn_values(count)}


#: Known answers of the point-in-time join, per application.
EXPECTED_TRAINING = {
    "A1": _expected((650, 56_000.0), 5),
    "A2": _expected((650, 56_000.0), 5),
    "A3": _expected((600, 50_000.0), None),
    "A4": _expected((None, None), None),
    "A5": _expected((None, None), None),
    "A6": _expected((650, 56_000.0), 9),
    "A7": _expected((650, 56_000.0), None),
}
#: Known online values after materializing up to MAT_END.
EXPECTED_ONLINE = {
    "C1": _expected((650, 56_000.0), 9),
    "C2": _expected((None, None), None),
    "C3": _expected((None, None), None),
}


def _clean(value: Any) -> Any:
    """Nulls as None and numpy scalars as Python values, so that rows compare exactly."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if pd.isna(value) if not isinstance(value, (list, dict, str)) else False:
        return None
    return value.item() if hasattr(value, "item") else value


def _records(frame: pd.DataFrame, key: str) -> dict[str, dict[str, Any]]:
    out = {}
    for row in frame.to_dict(orient="records"):
        out[row[key]] = {k: _clean(v) for k, v in row.items() if k != key}
    return out


def write_gold(spark: SparkSession, catalog: TableCatalog) -> None:
    """Write the three hand-built gold tables."""
    for name, schema, rows in (
        (GOLD_CUSTOMER_PROFILE, GOLD_CUSTOMER_PROFILE_SCHEMA, PROFILE_ROWS),
        (GOLD_CUSTOMER_TRANSACTIONS, GOLD_CUSTOMER_TRANSACTIONS_SCHEMA, TXN_ROWS),
        (GOLD_LABELS, GOLD_LABELS_SCHEMA, LABEL_ROWS),
    ):
        overwrite(spark, catalog, name, spark.createDataFrame(rows, schema))


GOLD_TABLES = [GOLD_CUSTOMER_PROFILE, GOLD_CUSTOMER_TRANSACTIONS, GOLD_LABELS]


@pytest.fixture(scope="module")
def gold_tables(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> TableCatalog:
    """The hand-built gold tables, written once for the module (tests get copies)."""
    return written_once(tmp_path_factory, "gold-tables", lambda c: write_gold(spark, c))


@pytest.fixture
def gold(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, gold_tables: TableCatalog
) -> Settings:
    """Gold tables (copies of :func:`write_gold`'s) and the Feast repository applied."""
    copy_tables(gold_tables, catalog, GOLD_TABLES)
    features.use_session(spark)
    features.apply(settings)
    return settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private redis-server on a free port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- Definitions and configuration ----------------------------------------------------------
def test_committed_yaml_has_the_platform_delta_configuration(settings: Settings) -> None:
    text = (REPO_ROOT / "feature_repo" / "feature_store.yaml").read_text()
    config = features.feature_store_config(settings)
    committed = __import__("yaml").safe_load(text)
    assert committed["project"] == "lakehouse" == config["project"]
    assert committed["provider"] == "local"
    # The platform's online store and batch engine, also by type names Feast resolves.
    assert committed["online_store"]["type"] == online.STORE_TYPE == config["online_store"]["type"]
    assert get_online_config_from_type(online.STORE_TYPE) is LakehouseSqliteOnlineStoreConfig
    assert committed["batch_engine"] == {"type": ENGINE_TYPE} == config["batch_engine"]
    assert get_batch_engine_config_from_type(ENGINE_TYPE) is LakehouseComputeEngineConfig
    assert committed["registry"]["path"] == "${LAKEHOUSE_HOME}/feast/registry.db"
    assert committed["online_store"]["path"] == "${LAKEHOUSE_HOME}/feast/online_store.db"
    # The platform's offline store, under a type name Feast resolves (the `feast` CLI too).
    assert committed["offline_store"]["type"] == STORE_TYPE == config["offline_store"]["type"]
    assert get_offline_config_from_type(STORE_TYPE) is LakehouseSparkOfflineStoreConfig
    platform = spark_conf(settings)
    for key in (
        "spark.sql.extensions",
        "spark.sql.catalog.spark_catalog",
        "spark.sql.catalogImplementation",
        "spark.sql.session.timeZone",
    ):
        assert committed["offline_store"]["spark_conf"][key] == platform[key]
        assert config["offline_store"]["spark_conf"][key] == platform[key]
    assert "/" + "root" not in text and "/home/" not in text


def test_generated_config_follows_settings(settings: Settings) -> None:
    sqlite = features.feature_store_config(settings)
    assert sqlite["registry"]["path"] == str(settings.home / "feast" / "registry.db")
    assert sqlite["online_store"] == {
        "type": online.STORE_TYPE,
        "path": str(settings.home / "feast" / "online_store.db"),
    }
    assert sqlite["batch_engine"] == {"type": ENGINE_TYPE}
    redis = features.feature_store_config(
        replace(settings, online_store="redis", redis_url="redis.example:6380")
    )
    assert redis["online_store"] == {"type": "redis", "connection_string": "redis.example:6380"}
    assert "batch_engine" not in redis  # Feast's local engine
    # The switch back to Feast's own SQLite store: same file, Feast's store and engine.
    stock = features.feature_store_config(replace(settings, online_store="feast-sqlite"))
    assert stock["online_store"] == {"type": "sqlite", "path": sqlite["online_store"]["path"]}
    assert "batch_engine" not in stock


def test_feature_store_uses_the_platform_online_store(gold: Settings) -> None:
    provider = features.feature_store(gold)._get_provider()
    assert type(provider.online_store) is LakehouseSqliteOnlineStore
    assert type(provider.batch_engine) is LakehouseComputeEngine
    provider = features.feature_store(replace(gold, online_store="feast-sqlite"))._get_provider()
    assert type(provider.online_store) is SqliteOnlineStore
    assert type(provider.batch_engine) is LocalComputeEngine


def test_definitions_follow_the_settings_table_root(settings: Settings) -> None:
    module = features.load_definitions(settings)
    catalog = TableCatalog(settings.tables_root)
    assert module.customer_profile_source.path == catalog.path(GOLD_CUSTOMER_PROFILE)
    assert module.customer_transactions_source.path == catalog.path(GOLD_CUSTOMER_TRANSACTIONS)
    assert [f.name for f in module.CUSTOMER_PROFILE_FIELDS] == PROFILE_FEATURES
    assert [f.name for f in module.CUSTOMER_TRANSACTIONS_FIELDS] == TXN_FEATURES
    assert module.customer.join_key == "customer_id"
    assert module.credit_risk_v1.name == features.FEATURE_SERVICE


def test_apply_registers_views_and_service(gold: Settings) -> None:
    assert features.list_views(gold) == {
        "customer_profile_fv": [
            ("age", "Int32"),
            ("annual_income", "Float64"),
            ("employment_years", "Float64"),
            ("credit_score", "Int32"),
            ("home_ownership", "String"),
            ("region", "String"),
        ],
        "customer_transactions_fv": [
            (name, "Int64" if name.startswith("txn_count") else "Float64") for name in TXN_FEATURES
        ],
    }
    features.apply(gold)  # idempotent
    store = features.feature_store(gold)
    assert features.service_feature_columns(store) == PROFILE_FEATURES + TXN_FEATURES
    assert {v.name: v.ttl.days for v in store.list_feature_views()} == {
        "customer_profile_fv": 365,
        "customer_transactions_fv": 180,
    }


# --- Offline: point in time -----------------------------------------------------------------
def test_training_set_is_point_in_time_correct(
    spark: SparkSession, gold: Settings, catalog: TableCatalog
) -> None:
    ts = features.build_training_set(spark, gold, catalog)
    assert ts.feature_service == "credit_risk_v1"
    assert ts.feature_columns == PROFILE_FEATURES + TXN_FEATURES
    assert list(ts.frame.columns) == [*features.LABEL_COLUMNS, *ts.feature_columns]
    assert ts.table_versions == {
        GOLD_LABELS: 1,
        GOLD_CUSTOMER_PROFILE: 1,
        GOLD_CUSTOMER_TRANSACTIONS: 1,
    }
    assert list(ts.frame["application_id"]) == ["A1", "A2", "A3", "A4", "A5", "A6", "A7"]
    assert list(ts.frame["application_timestamp"]) == [pd.Timestamp(r[2]) for r in LABEL_ROWS]
    assert list(ts.frame["defaulted"]) == [0, 1, 0, 1, 0, 0, 1]
    got = _records(ts.frame[["application_id", *ts.feature_columns]], "application_id")
    assert got == EXPECTED_TRAINING


def test_training_set_reads_pinned_versions(
    spark: SparkSession, gold: Settings, catalog: TableCatalog
) -> None:
    first = features.build_training_set(spark, gold, catalog)
    # A later gold build moves every transaction feature and adds a label.
    txn = catalog.read(spark, GOLD_CUSTOMER_TRANSACTIONS)
    overwrite(
        spark,
        catalog,
        GOLD_CUSTOMER_TRANSACTIONS,
        txn.withColumn("txn_count_7d", txn["txn_count_7d"] + 100),
    )
    extra = [("A8", "C1", D(2026, 3, 10, 13), 800.0, 12, "CAR", 0, D(2026, 5, 1))]
    schema = catalog.read(spark, GOLD_LABELS).schema
    spark.createDataFrame(extra, schema).write.format("delta").mode("append").save(
        catalog.path(GOLD_LABELS)
    )

    latest = features.build_training_set(spark, gold, catalog)
    assert latest.table_versions[GOLD_CUSTOMER_TRANSACTIONS] == 2
    assert len(latest.frame) == 8
    assert latest.frame.loc[0, "txn_count_7d"] == first.frame.loc[0, "txn_count_7d"] + 100

    again = features.build_training_set(spark, gold, catalog, table_versions=first.table_versions)
    assert again.table_versions == first.table_versions
    pd.testing.assert_frame_equal(again.frame, first.frame)
    # The platform's own registry is untouched by the pinned read.
    assert features.build_training_set(spark, gold, catalog).table_versions == (
        latest.table_versions
    )


def test_pinned_versions_must_name_tables_the_service_reads(
    spark: SparkSession, gold: Settings, catalog: TableCatalog
) -> None:
    with pytest.raises(ValueError, match=r"does not read: \['gold.nope'\]"):
        features.build_training_set(spark, gold, catalog, table_versions={"gold.nope": 0})


def test_historical_features_of_no_rows_is_an_empty_typed_frame(
    spark: SparkSession, gold: Settings
) -> None:
    entity = spark.createDataFrame([], "customer_id string, event_timestamp timestamp")
    out = features.historical_features(spark, gold, entity)
    assert out.count() == 0
    types = dict(out.dtypes)
    assert out.columns == ["customer_id", "event_timestamp", *PROFILE_FEATURES, *TXN_FEATURES]
    assert (types["age"], types["txn_count_7d"], types["region"]) == ("int", "bigint", "string")
    assert types["txn_amount_sum_30d"] == "double"


def test_feast_reuses_the_platform_session(spark: SparkSession, gold: Settings) -> None:
    store = features.feature_store(gold)
    features.use_session(spark)
    assert get_spark_session_or_start_new_with_repoconfig(store.config.offline_store) is spark
    assert SparkSession.getActiveSession() is spark
    assert spark.sparkContext.appName == "lakehouse-tests"


@pytest.mark.parametrize("as_spark", [False, True], ids=["pandas", "spark"])
def test_historical_features_keep_rows_and_order(
    spark: SparkSession, gold: Settings, as_spark: bool
) -> None:
    entity = pd.DataFrame(
        {
            "request": ["r1", "r2", "r3", "r4"],
            "customer_id": ["C3", "C1", "C1", "C1"],
            "event_timestamp": [
                D(2026, 3, 10),
                D(2026, 3, 11, 23),
                D(2026, 2, 15),
                D(2026, 3, 11, 23),
            ],
        }
    )
    entity_in = spark.createDataFrame(entity) if as_spark else entity
    out = features.historical_features(spark, gold, entity_in)
    frame = out.toPandas() if as_spark else out
    assert list(frame.columns) == [
        "request",
        "customer_id",
        "event_timestamp",
        *PROFILE_FEATURES,
        *TXN_FEATURES,
    ]
    if not as_spark:
        assert list(frame["request"]) == ["r1", "r2", "r3", "r4"]
    got = _records(frame.drop(columns=["customer_id", "event_timestamp"]), "request")
    assert got == {
        "r1": EXPECTED_TRAINING["A5"],
        "r2": EXPECTED_TRAINING["A6"],
        "r3": EXPECTED_TRAINING["A3"],
        "r4": EXPECTED_TRAINING["A6"],
    }


def test_historical_features_reject_missing_columns(spark: SparkSession, gold: Settings) -> None:
    with pytest.raises(ValueError, match="event_timestamp"):
        features.historical_features(spark, gold, pd.DataFrame({"customer_id": ["C1"]}))


def test_one_pass_join_gives_feasts_answer(spark: SparkSession, gold: Settings) -> None:
    ttl_edge = D(2026, 3, 11) + timedelta(days=180)  # C1's last transaction row exactly TTL old
    entity = spark.createDataFrame(
        [
            ("r1", "C1", D(2026, 3, 10)),  # exactly at a stamp
            ("r2", "C1", D(2026, 3, 10)),  # the same entity row twice
            ("r3", "C1", ttl_edge),
            ("r4", "C1", ttl_edge + timedelta(seconds=1)),
            ("r5", "C2", D(2026, 3, 10)),  # everything expired
            ("r6", "C3", D(2026, 3, 10)),  # unknown customer
            ("r7", "C1", D(2025, 12, 31)),  # before every row
        ],
        "request string, customer_id string, event_timestamp timestamp",
    )
    store = features.feature_store(gold)
    service = store.get_feature_service(features.FEATURE_SERVICE)
    features.use_session(spark)
    ours = store.get_historical_features(
        entity_df=entity, features=service, full_feature_names=True
    )
    assert isinstance(ours, DataFrameRetrievalJob)
    stock = SparkOfflineStore.get_historical_features(
        config=store.config,
        feature_views=[store.get_feature_view(p.name) for p in service.feature_view_projections],
        feature_refs=[
            f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features
        ],
        entity_df=entity,
        registry=store.registry,
        project=store.project,
        full_feature_names=True,
    )
    ours_meta, stock_meta = ours.metadata, stock.metadata
    assert ours_meta is not None and stock_meta is not None
    assert ours_meta.features == stock_meta.features
    assert sorted(ours_meta.keys) == sorted(stock_meta.keys) == ["customer_id", "request"]
    assert (ours_meta.min_event_timestamp, ours_meta.max_event_timestamp) == (
        stock_meta.min_event_timestamp,
        stock_meta.max_event_timestamp,
    )
    frame = ours.to_df().sort_values("request", kind="stable").reset_index(drop=True)
    expected = stock.to_df().sort_values("request", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(frame, expected)
    got = _records(frame, "request")
    score, count = "customer_profile_fv__credit_score", "customer_transactions_fv__txn_count_7d"
    assert {r: (v[score], v[count]) for r, v in got.items()} == {
        "r1": (650, 5),
        "r2": (650, 5),
        "r3": (650, 9),
        "r4": (650, None),
        "r5": (None, None),
        "r6": (None, None),
        "r7": (None, None),
    }
    # Outside what the one-pass join covers, Feast's own join answers.
    created_filter = store.get_historical_features(
        entity_df=entity, features=service, filter_by_created_timestamp=True
    )
    assert type(created_filter) is SparkRetrievalJob


# --- Online ---------------------------------------------------------------------------------
@pytest.mark.parametrize("store_type", ["sqlite", "redis"])
def test_online_equals_historical_at_materialization_time(
    spark: SparkSession, gold: Settings, store_type: str, request: pytest.FixtureRequest
) -> None:
    settings = gold
    if store_type == "redis":
        url = request.getfixturevalue("redis_url")
        settings = replace(gold, online_store="redis", redis_url=url)
        features.apply(settings)
    end = features.materialize(settings, end=MAT_END)
    assert end == pd.Timestamp(MAT_END, tz="UTC")
    ids = ["C1", "C2", "C3"]
    online = features.online_features(settings, ids)
    assert list(online.columns) == ["customer_id", *PROFILE_FEATURES, *TXN_FEATURES]
    assert _records(online, "customer_id") == EXPECTED_ONLINE
    entity = pd.DataFrame({"customer_id": ids, "event_timestamp": [MAT_END] * 3})
    historical = features.historical_features(spark, settings, entity)
    assert _records(historical.drop(columns=["event_timestamp"]), "customer_id") == _records(
        online, "customer_id"
    )


def test_unknown_entity_gives_nulls(spark: SparkSession, gold: Settings) -> None:
    features.materialize(gold, end=MAT_END)
    online = features.online_features(gold, ["NO_SUCH_CUSTOMER"])
    assert _records(online, "customer_id") == {"NO_SUCH_CUSTOMER": _expected((None, None), None)}


def test_online_rejects_a_single_string(gold: Settings) -> None:
    with pytest.raises(TypeError, match="sequence of ids"):
        features.online_features(gold, "C1")


def _online_rows(settings: Settings) -> list[tuple]:
    with sqlite3.connect(settings.feast_dir / "online_store.db") as conn:
        names = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY 1")
        ]
        return [
            (name, *row)
            for name in names
            for row in conn.execute(f'SELECT * FROM "{name}" ORDER BY 1, 2').fetchall()
        ]


def test_materializing_twice_changes_nothing(spark: SparkSession, gold: Settings) -> None:
    features.materialize(gold, end=MAT_END)
    first = _online_rows(gold)
    assert len(first) == len(PROFILE_FEATURES) + len(TXN_FEATURES)  # C1 only
    features.materialize(gold, end=MAT_END)
    assert _online_rows(gold) == first
    assert _records(features.online_features(gold, ["C1"]), "customer_id") == {
        "C1": EXPECTED_ONLINE["C1"]
    }


def test_bulk_materialize_writes_exactly_what_feast_writes(
    spark: SparkSession,
    gold: Settings,
    catalog: TableCatalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # More customers, a null and a NaN, and statements of a few entities each (plus a rest).
    extra = [f"C{i}" for i in range(4, 9)]
    for name, schema, rows in (
        (
            GOLD_CUSTOMER_PROFILE,
            GOLD_CUSTOMER_PROFILE_SCHEMA,
            [
                _profile(c, D(2026, 3, 5), 700 + i, D(2026, 3, 5, 1), 1e5 + i)
                for i, c in enumerate(extra)
            ],
        ),
        (
            GOLD_CUSTOMER_TRANSACTIONS,
            GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
            [_txn(c, D(2026, 3, 11), i) for i, c in enumerate(extra)],
        ),
    ):
        frame = spark.createDataFrame(rows, schema)
        frame.write.format("delta").mode("append").save(catalog.path(name))
    nulls = (
        catalog.read(spark, GOLD_CUSTOMER_TRANSACTIONS)
        .withColumn(
            "gambling_share_30d", F.when(F.col("customer_id") != "C5", F.col("gambling_share_30d"))
        )
        .withColumn(
            "online_share_30d",
            F.when(F.col("customer_id") == "C6", F.lit(float("nan"))).otherwise(
                F.col("online_share_30d")
            ),
        )
    )
    overwrite(spark, catalog, GOLD_CUSTOMER_TRANSACTIONS, nulls)
    monkeypatch.setattr(online, "_ROWS_PER_STATEMENT", 24)
    other = replace(gold.with_home(tmp_path / "other"), tables_uri=gold.tables_root)
    features.apply(other)
    features.materialize(gold, end=MAT_END, bulk=False)  # Feast's own writer
    features.materialize(other, end=MAT_END, bulk=True)
    assert len(_online_rows(gold)) == 6 * len(PROFILE_FEATURES) + 6 * len(TXN_FEATURES)
    assert _online_rows(other) == _online_rows(gold)
    ends = {
        s.home: {
            v.name: v.most_recent_end_time for v in features.feature_store(s).list_feature_views()
        }
        for s in (gold, other)
    }
    assert ends[gold.home] == ends[other.home]
    assert set(ends[gold.home].values()) == {pd.Timestamp(MAT_END, tz="UTC")}


@pytest.mark.parametrize(
    ("kind", "arrow_type", "values"),
    [
        ("DOUBLE", "float64", [0.0, -0.0, 1.5, None, math.nan, 1e300, -2.5e-308, math.inf, 5.6e4]),
        ("FLOAT", "float32", [0.0, 0.1, None, 3.0]),
        ("INT32", "int32", [0, -1, 2**31 - 1, -(2**31), None, 7]),
        ("INT64", "int64", [0, -1, 2**63 - 1, -(2**63), None, 300]),
        ("STRING", "string", ["", "RENT", None, "ünïcødé €", "RENT"]),
        ("BOOL", "bool", [True, False, None]),
    ],
)
def test_bulk_values_serialize_as_feast_serializes(
    kind: str, arrow_type: str, values: list[Any]
) -> None:
    value_type = ValueType[kind]
    blobs, texts = online._encode_values(pa.array(values, arrow_type), value_type)
    protos = python_values_to_proto_values(values, value_type)  # Feast's own converter
    assert list(blobs) == [p.SerializeToString() for p in protos]
    assert list(texts) == [extract_text_and_num(p, False)[0] for p in protos]


def test_bulk_entity_keys_are_feasts() -> None:
    ids = ["C1", "", "ü€", "C000001"]
    keys = online._entity_keys([("customer_id", ValueType.STRING, pa.array(ids))], 3)
    assert keys == [
        serialize_entity_key(
            EntityKeyProto(join_keys=["customer_id"], entity_values=[ValueProto(string_val=i)]), 3
        )
        for i in ids
    ]


# --- The online store class against Feast's SQLite store ------------------------------------
def _contract_view(name: str, keys: list[Field]) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[
            Entity(name=f"{name}_{k.name}", join_keys=[k.name], value_type=k.dtype.to_value_type())
            for k in keys
        ],
        schema=[
            *keys,
            Field(name="i32", dtype=Int32),
            Field(name="i64", dtype=Int64),
            Field(name="f64", dtype=Float64),
            Field(name="f32", dtype=Float32),
            Field(name="text", dtype=String),
            Field(name="flag", dtype=Bool),
            Field(name="scores", dtype=Array(Float64)),
        ],
        source=FileSource(name=f"{name}_source", path="unused.parquet", timestamp_field="ts"),
        ttl=timedelta(days=1),
    )


def _contract_rows(view: FeatureView) -> list[tuple]:
    """Rows as Feast's engine hands them over: several types, nulls, times naive and aware,
    no created time, and a key written twice in one batch (the later row wins)."""
    keys = [f.name for f in view.entity_columns]

    def key(i: int) -> EntityKeyProto:
        values = [ValueProto(string_val=f"C{i}ü"), ValueProto(int64_val=i * 10)]
        return EntityKeyProto(join_keys=keys, entity_values=values[: len(keys)])

    def values(i: int) -> dict[str, ValueProto]:
        return {
            "i32": ValueProto(int32_val=-i),
            "i64": ValueProto(int64_val=2**40 + i),
            "f64": ValueProto(double_val=i / 3) if i % 3 else ValueProto(),
            "f32": ValueProto(float_val=i + 0.25),
            "text": ValueProto(string_val="RENT" if i % 2 else "é'\"x"),
            "flag": ValueProto(bool_val=bool(i % 2)),
            "scores": ValueProto(double_list_val={"val": [i, 0.5]}),
        }

    rows = [
        (key(i), values(i), D(2026, 3, 1, i), D(2026, 3, 1, i, 5, tzinfo=UTC) if i % 2 else None)
        for i in range(6)
    ]
    rows.append((key(2), values(7), D(2026, 3, 2, tzinfo=UTC), D(2026, 3, 2, 1)))
    return rows


def _contract_config(path: Path, store_type: str) -> RepoConfig:
    return RepoConfig(
        project="contract",
        provider="local",
        registry=str(path.parent / "registry.db"),
        online_store={"type": store_type, "path": str(path)},
        entity_key_serialization_version=3,
        repo_path=path.parent,
    )


def _table_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY 1")
        ]
        return [
            (t, *row) for t in tables for row in conn.execute(f'SELECT * FROM "{t}" ORDER BY 1, 2')
        ]


@pytest.mark.parametrize(
    "keys",
    [
        [Field(name="customer_id", dtype=String)],
        [Field(name="k", dtype=String), Field(name="n", dtype=Int64)],
    ],
    ids=["one-string-key", "two-keys"],
)
def test_online_store_class_keeps_feasts_storage_format(tmp_path: Path, keys: list[Field]) -> None:
    view = _contract_view("contract_fv", keys)
    rows = _contract_rows(view)
    ours, theirs = LakehouseSqliteOnlineStore(), SqliteOnlineStore()
    ours_config = _contract_config(tmp_path / "ours" / "online.db", online.STORE_TYPE)
    theirs_config = _contract_config(tmp_path / "theirs" / "online.db", "sqlite")
    for store, config in ((ours, ours_config), (theirs, theirs_config)):
        store.update(config, [], [view], [], [], partial=False)
        store.online_write_batch(config, view, rows, None)
    # Written: byte for byte the same rows (keys, ValueProtos, text, times).
    written = _table_rows(tmp_path / "ours" / "online.db")
    assert len(written) == 6 * 7
    assert written == _table_rows(tmp_path / "theirs" / "online.db")
    # Read, both directions: each class reads the other's file as the other reads it.
    requested = [key for key, *_ in rows] + [
        EntityKeyProto(
            join_keys=[k.name for k in keys],
            entity_values=[ValueProto(string_val="NO_SUCH"), ValueProto(int64_val=1)][: len(keys)],
        )
    ]
    expected = theirs.online_read(theirs_config, view, requested)
    assert expected[2][1] == rows[-1][1] and expected[-1] == (None, None)
    assert ours.online_read(ours_config, view, requested) == expected
    cross_ours = LakehouseSqliteOnlineStore().online_read(theirs_config, view, requested)
    cross_theirs = SqliteOnlineStore().online_read(ours_config, view, requested)
    assert cross_ours == expected == cross_theirs
    assert ours.online_read(ours_config, view, []) == theirs.online_read(theirs_config, view, [])
    # A batch whose entities carry different features takes the row-by-row path. An entity's
    # rows then differ in time, and Feast reports the time of whichever row its query returns
    # last, which depends on the file's layout: reads are compared on the same file.
    partial = [
        (rows[1][0], {"i32": ValueProto(int32_val=99)}, D(2026, 3, 3), None),
        (
            rows[3][0],
            {"text": ValueProto(), "f64": ValueProto(double_val=0.5)},
            D(2026, 3, 4),
            None,
        ),
    ]
    for store, config in ((ours, ours_config), (theirs, theirs_config)):
        store.online_write_batch(config, view, partial, None)
    assert _table_rows(tmp_path / "ours" / "online.db") == _table_rows(
        tmp_path / "theirs" / "online.db"
    )
    for config in (ours_config, theirs_config):
        read = SqliteOnlineStore().online_read(config, view, requested)
        assert LakehouseSqliteOnlineStore().online_read(config, view, requested) == read
        assert read[1][1] is not None and read[1][1]["i32"] == ValueProto(int32_val=99)
    assert ours.entity_count(ours_config, view) == 6


def test_fast_online_read_returns_what_feast_returns(spark: SparkSession, gold: Settings) -> None:
    features.materialize(gold, end=MAT_END)
    ids = ["C1", "C2", "C3", "NO_SUCH_CUSTOMER", "C1"]
    fast = features.online_features_fast(gold, ids)
    slow = features.online_features(gold, ids)
    assert list(fast.columns) == list(slow.columns)
    assert [{k: _clean(v) for k, v in row.items()} for row in fast.to_dict(orient="records")] == [
        {k: _clean(v) for k, v in row.items()} for row in slow.to_dict(orient="records")
    ]
    reader = features.OnlineFeatureReader(gold)
    try:
        assert reader.get("C1") == EXPECTED_ONLINE["C1"]
        assert type(reader.get("C1")["credit_score"]) is int
        assert reader.get("C3") == EXPECTED_ONLINE["C3"]
    finally:
        reader.close()


def test_fast_paths_reject_redis(gold: Settings) -> None:
    with pytest.raises(ValueError, match="sqlite online store"):
        features.online_features_fast(replace(gold, online_store="redis"), ["C1"])


def test_lakehouse_features_list_and_online(
    spark: SparkSession,
    gold: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    features.materialize(gold, end=MAT_END)
    monkeypatch.setenv("LAKEHOUSE_HOME", str(gold.home))
    monkeypatch.delenv("LAKEHOUSE_TABLES_URI", raising=False)
    monkeypatch.delenv("LAKEHOUSE_ONLINE_STORE", raising=False)
    assert main(["features", "list"]) == 0
    listing = capsys.readouterr().out
    assert "customer_profile_fv" in listing and "txn_amount_avg_90d" in listing
    assert main(["features", "online", "C1", "NO_SUCH_CUSTOMER"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["customer_id", "age", "annual_income"]
    assert lines[2].split()[:7] == ["C1", "30", "56000", "4", "650", "RENT", "NORTH"]
    assert lines[3].split()[0] == "NO_SUCH_CUSTOMER"


def test_lakehouse_features_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["features", "materialize", "--end", "not-a-time"])
    assert "not an ISO-8601 time" in capsys.readouterr().err


# --- The plain feast CLI and feast serve -----------------------------------------------------
@pytest.mark.slow
def test_feast_cli_apply_and_materialize_incremental(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, subprocess_env: dict[str, str]
) -> None:
    # `feast materialize-incremental` starts its first window ttl before *now*, so this test's
    # feature rows are stamped relative to today.
    today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    end = today + timedelta(hours=1)
    profile = [_profile("C1", today - timedelta(days=10), 650, today, 56_000.0)]
    txn = [_txn("C1", today - timedelta(days=1), 4), _txn("C1", today, 9)]
    for name, schema, rows in (
        (GOLD_CUSTOMER_PROFILE, GOLD_CUSTOMER_PROFILE_SCHEMA, profile),
        (GOLD_CUSTOMER_TRANSACTIONS, GOLD_CUSTOMER_TRANSACTIONS_SCHEMA, txn),
    ):
        overwrite(spark, catalog, name, spark.createDataFrame(rows, schema))
    repo = REPO_ROOT / "feature_repo"

    def feast(*args: str) -> str:
        proc = subprocess.run(
            [FEAST, *args],
            cwd=repo,
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    # Each `feast` command is slow to start (its imports): the views `apply` registered are
    # listed from the registry in this process rather than by `feast feature-views list`.
    feast("apply")
    registered = {v.name for v in features.feature_store(settings).list_feature_views()}
    assert registered == {"customer_profile_fv", "customer_transactions_fv"}
    feast("materialize-incremental", end.isoformat())
    assert (settings.feast_dir / "registry.db").is_file()
    assert _records(features.online_features(settings, ["C1"]), "customer_id") == {
        "C1": EXPECTED_ONLINE["C1"]
    }
    store = features.feature_store(settings)
    assert {v.name: v.most_recent_end_time for v in store.list_feature_views()} == {
        "customer_profile_fv": end.replace(tzinfo=UTC),
        "customer_transactions_fv": end.replace(tzinfo=UTC),
    }


@pytest.mark.service
def test_feast_serve_returns_values(
    spark: SparkSession, gold: Settings, subprocess_env: dict[str, str]
) -> None:
    features.materialize(gold, end=MAT_END)
    port = _free_port()
    proc = subprocess.Popen(
        [FEAST, "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO_ROOT / "feature_repo",
        env=subprocess_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    body = json.dumps(
        {"feature_service": "credit_risk_v1", "entities": {"customer_id": ["C1", "C3"]}}
    ).encode()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert proc.poll() is None, (
                    proc.stderr.read().decode()[-3000:] if proc.stderr else ""
                )
                assert time.monotonic() < deadline, "feast serve did not become ready"
                time.sleep(0.5)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/get-online-features",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            payload = json.loads(resp.read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    names = payload["metadata"]["feature_names"]
    values = {name: r["values"] for name, r in zip(names, payload["results"], strict=True)}
    assert values["customer_id"] == ["C1", "C3"]
    assert values["credit_score"] == [650, None]
    assert values["txn_count_7d"] == [9, None]
    assert values["home_ownership"] == ["RENT", None]
