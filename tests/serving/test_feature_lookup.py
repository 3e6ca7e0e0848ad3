"""An application sent with only its own fields is scored on the online store's features, and
the served probability equals the batch prediction in ``gold.predictions``: with the default
SQLite online store, and with Redis (Debian's ``redis-server``, materialized from the same
registry)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark.sql import SparkSession

from lakehouse.models.config import REQUEST_COLUMNS, TrainConfig
from lakehouse.platform.catalog import (
    GOLD_CUSTOMER_PROFILE,
    GOLD_PREDICTIONS,
    SILVER_LOAN_APPLICATIONS,
    TableCatalog,
)
from lakehouse.platform.settings import Settings
from lakehouse.serving.process import ServerProcess, free_port
from tests.serving.conftest import start_server

pytestmark = [pytest.mark.jvm, pytest.mark.mlflow]


@dataclass
class World:
    settings: Settings
    version: int
    #: application id -> (customer, loan amount, term, purpose, batch score)
    applications: dict[str, tuple[str, float, int, str | None, float]]


def register_champion(settings: Settings, training_set: Any) -> int:
    """Fit the platform's pipeline on the whole training set (a world this small leaves too
    few defaults for training's holdout), log it as training does, make it the champion."""
    import mlflow
    from mlflow.models import infer_signature

    from lakehouse.models.registry import promote
    from lakehouse.models.training import (
        build_pipeline,
        labels,
        model_columns,
        prepare_inputs,
        split_columns,
    )

    frame = training_set.frame
    numeric, categorical = split_columns(frame, model_columns(training_set))
    X = prepare_inputs(frame, numeric, categorical)
    y = labels(frame)
    assert set(y.tolist()) == {0, 1}
    model = build_pipeline(TrainConfig(n_estimators=25, max_depth=5), numeric, categorical)
    model.fit(X, y)
    with mlflow.start_run():
        mlflow.set_tag("lakehouse.feature_service", training_set.feature_service)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict_proba(X.head(5))),
            pyfunc_predict_fn="predict_proba",
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "cloudpickle"],
            registered_model_name=settings.model_name,
        )
    version = int(info.registered_model_version)
    promote(settings, version, force=True)
    return version


def silver_world(now: datetime, customers: int = 60, seed: int = 11) -> dict[str, list[tuple]]:
    """Rows of the four silver tables: ``customers`` profiles, their transactions over the 60
    days before ``now``, two applications each and their outcomes (a low credit score
    defaults more often, so both classes are there to train on)."""
    rng = np.random.default_rng(seed)
    start = now - timedelta(days=60)
    source = "landing/serving-test.json"
    tables: dict[str, list[tuple]] = {
        "customers": [],
        "transactions": [],
        "loan_applications": [],
        "repayments": [],
    }
    for i in range(customers):
        customer = f"C{i:05d}"
        score = int(rng.integers(300, 850))
        tables["customers"].append(
            (
                customer,
                f"Customer {i}",
                (start - timedelta(days=int(rng.integers(8000, 25000)))).date(),
                float(rng.uniform(15_000, 120_000)),
                float(rng.uniform(0, 20)),
                ("RENT", "OWN", "MORTGAGE")[i % 3],
                "NORTH",
                score,
                start,
                source,
                now,
            )
        )
        for k in range(int(rng.integers(5, 30))):
            tables["transactions"].append(
                (
                    f"T{i:05d}{k:03d}",
                    customer,
                    round(float(rng.uniform(5, 500)), 2),
                    ("GROCERY", "TRAVEL", "GAMBLING")[k % 3],
                    ("ONLINE", "POS")[k % 2],
                    start + timedelta(seconds=int(rng.integers(0, 59 * 86400))),
                    source,
                    now,
                )
            )
        for k in range(2):
            application = f"A{i:05d}{k}"
            applied = start + timedelta(days=int(rng.integers(1, 25)))
            tables["loan_applications"].append(
                (
                    application,
                    customer,
                    applied,
                    float(rng.uniform(1000, 30000)),
                    (12, 24, 36, 60)[(i + k) % 4],
                    ("CAR", "EDUCATION", None)[i % 3],
                    source,
                    now,
                )
            )
            defaulted = (score < 550) != (rng.random() < 0.15)
            tables["repayments"].append(
                (application, customer, applied + timedelta(days=30), defaulted, 0, source, now)
            )
    return tables


@pytest.fixture(scope="module")
def world(
    spark: SparkSession, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> World:
    """A small world written straight into silver (the pipeline's own tests cover bronze and
    silver), gold built from it, the feature store (materialized now), a trained champion, and
    applications landing after that, batch-scored."""
    from lakehouse.features import store as features
    from lakehouse.medallion.contracts import SILVER_SCHEMAS
    from lakehouse.medallion.pipeline import run_pipeline
    from lakehouse.models.tracking import connect
    from lakehouse.scoring.batch import score_batch

    settings = base_settings.with_home(tmp_path_factory.mktemp("lookup-home"))
    catalog = TableCatalog(settings.tables_root)
    started = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    for entity, rows in silver_world(started).items():
        frame = spark.createDataFrame(rows, SILVER_SCHEMAS[entity])
        frame.write.format("delta").save(catalog.path(f"silver.{entity}"))
    run_pipeline(spark, settings, catalog, stages=["gold"])
    features.use_session(spark)
    features.apply(settings)
    features.materialize(settings, datetime.now(UTC))
    connect(settings)
    training_set = features.build_training_set(spark, settings, catalog)
    version = register_champion(settings, training_set)
    customers = [
        r.customer_id
        for r in catalog.read(spark, GOLD_CUSTOMER_PROFILE)
        .select("customer_id")
        .distinct()
        .orderBy("customer_id")
        .limit(12)
        .collect()
    ]
    # Applications after every feature row: their point-in-time features are the online ones.
    now = datetime.now(UTC).replace(tzinfo=None)
    purposes = ["CAR", "EDUCATION", None, "HOME_IMPROVEMENT"]
    new = {
        f"SRV{i:03d}": (c, 2500.0 + 1750.0 * i, (12, 24, 36, 60)[i % 4], purposes[i % 4])
        for i, c in enumerate(customers)
    }
    rows = [
        (a, c, now, amt, term, p, "landing/serving-test.json", now)
        for a, (c, amt, term, p) in new.items()
    ]
    frame = spark.createDataFrame(rows, SILVER_SCHEMAS["loan_applications"])
    frame.write.format("delta").mode("append").save(catalog.path(SILVER_LOAN_APPLICATIONS))
    score_batch(spark, settings, catalog)
    scores = {
        r.application_id: r.score
        for r in catalog.read(spark, GOLD_PREDICTIONS)
        .where(f"model_version = {version}")
        .where("application_id LIKE 'SRV%'")
        .collect()
    }
    assert set(scores) == set(new)
    return World(
        settings,
        version,
        {a: (*new[a], scores[a]) for a in new},  # type: ignore[misc]
    )


@pytest.fixture(scope="module")
def server(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "LAKEHOUSE_HOME": str(world.settings.home),
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
    }
    process = start_server(env, Path(tmp_path_factory.mktemp("lookup-logs")))
    yield process
    process.stop()


def application_rows(world: World) -> tuple[list[dict[str, Any]], list[float]]:
    """The test applications as a client sends them (no stored feature), and their batch
    scores."""
    ids = sorted(world.applications)
    rows = [
        dict(zip(("customer_id", *REQUEST_COLUMNS), world.applications[a][:4], strict=True))
        for a in ids
    ]
    return rows, [world.applications[a][4] for a in ids]


def create_champion_endpoint(world: World, server: ServerProcess, name: str) -> str:
    """An endpoint following the champion; its invocations path."""
    config = {
        "served_entities": [
            {
                "name": "champion",
                "entity_name": world.settings.model_name,
                "entity_version": "champion",
            }
        ]
    }
    status, body = server.request(
        "POST", "/api/2.0/serving-endpoints", {"name": name, "config": config}
    )
    assert status == 200, body
    shown = server.wait_ready(name)
    assert shown["config"]["served_entities"][0]["entity_version"] == str(world.version)
    return f"/serving-endpoints/{name}/invocations"


def test_online_lookup_equals_the_batch_prediction(world: World, server: ServerProcess) -> None:
    path = create_champion_endpoint(world, server, "credit")
    rows, batch_scores = application_rows(world)
    status, answer = server.request("POST", path, {"dataframe_records": rows})
    assert status == 200, answer
    assert answer["predictions"] == batch_scores
    # One application alone gets the same answer as in the batch.
    status, single = server.request("POST", path, {"dataframe_records": rows[:1]})
    assert single["predictions"] == answer["predictions"][:1]
    _, text = server.request("GET", "/serving-endpoints/credit/metrics")
    assert 'lakehouse_serving_feature_lookup_seconds_count{endpoint="credit"}' in text
    # The request as logged is what the client sent.
    lines = [
        json.loads(line)
        for path in (world.settings.home / "landing" / "inference_log").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    logged = [line for line in lines if line["endpoint_name"] == "credit"]
    assert json.loads(logged[0]["request"]) == {"dataframe_records": rows}


@pytest.fixture
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private ``redis-server`` on a free port, without persistence: its ``host:port``."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
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
                assert proc.poll() is None and time.monotonic() < deadline, "no redis-server"
                time.sleep(0.05)
        yield f"127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_online_lookup_on_redis_equals_the_batch_prediction(
    spark: SparkSession,
    world: World,
    redis_server: tuple[str, subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    from lakehouse.features import store as features

    url, redis_process = redis_server
    on_redis = replace(world.settings, online_store="redis", redis_url=url)
    # Every latest feature row into Redis, through Feast's own materialization (the registry
    # already records the SQLite store's window, which an incremental run would skip).
    features.use_session(spark)
    store = features.feature_store(on_redis)
    store.materialize(start_date=datetime(2000, 1, 1, tzinfo=UTC), end_date=datetime.now(UTC))
    features.write_feature_store_yaml(world.settings)
    env = {
        "LAKEHOUSE_HOME": str(world.settings.home),
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
        "LAKEHOUSE_ONLINE_STORE": "redis",
        "LAKEHOUSE_REDIS_URL": url,
    }
    server = start_server(env, tmp_path / "logs")
    try:
        path = create_champion_endpoint(world, server, "credit-redis")
        rows, batch_scores = application_rows(world)
        status, answer = server.request("POST", path, {"dataframe_records": rows})
        assert status == 200, answer
        assert answer["predictions"] == batch_scores
        # The features came from Redis: without it the lookup fails (503), nothing else does.
        redis_process.terminate()
        redis_process.wait(timeout=10)
        status, answer = server.request("POST", path, {"dataframe_records": rows[:1]})
        assert (status, answer["error_code"]) == (503, "TEMPORARILY_UNAVAILABLE"), answer
        assert "online feature store" in answer["message"]
        assert server.request("GET", "/health")[0] == 200
    finally:
        server.stop()
