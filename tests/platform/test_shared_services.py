"""The services a team shares: MLflow on PostgreSQL, Feast's SQL registry, Redis; a restart.

One PostgreSQL server holds MLflow's tracking store and model registry (behind ``mlflow
server``, which also serves the artifacts) and Feast's SQL registry; Redis is the online store.
The gold tables are hand-built from the synthetic applications of the training tests, written
once on the shared session (the tests that start the services are marked slow and service; the
configuration tests need none); everything else runs through the ``lakehouse`` command in its own
process, as a team member's would: ``features apply``, ``features materialize``, ``train``.

The fault: the MLflow server is killed while ``lakehouse train`` runs. Killed as the run starts
logging and restarted at once, the command finishes through MLflow's retries with one gated
version. Killed as the version is registered and left down, the command fails with one line;
the version stays READY and loadable but unjudged, without alias or stage (the gate's failure
could not withdraw it while the server was down). Either way no alias or stage points at a
version the gate did not judge.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from pyspark.sql import SparkSession

from lakehouse.features import store as features
from lakehouse.medallion.contracts import (
    GOLD_CUSTOMER_PROFILE_SCHEMA,
    GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
    GOLD_LABELS_SCHEMA,
)
from lakehouse.models.registry import (
    ARCHIVED,
    CHALLENGER,
    CHAMPION,
    GATE_TAG_PREFIX,
    PRODUCTION,
    STAGING,
    ModelRegistry,
)
from lakehouse.platform.catalog import (
    GOLD_CUSTOMER_PROFILE,
    GOLD_CUSTOMER_TRANSACTIONS,
    GOLD_LABELS,
    TableCatalog,
)
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.platform.tables import overwrite
from tests.conftest import environ, platform_env
from tests.models.test_gate_file import SMALL_FLAGS
from tests.models.test_training import synthetic_frame
from tests.services import (  # noqa: F401 (fixtures)
    MlflowServer,
    Postgres,
    mlflow_server_fixture,
    postgres_fixture,
    redis_fixture,
)

# Run by `make test-cluster` with the cluster demo: the shared services' stage of CI.
pytestmark = pytest.mark.cluster

LAKEHOUSE = str(Path(sys.executable).with_name("lakehouse"))
#: The end of the materialization: a day after the last synthetic application.
MAT_END = "2026-02-21T00:00:00"
#: How long before its application each feature row is stamped.
STAMP_LEAD = timedelta(hours=1)


# --- The world -------------------------------------------------------------------------------
def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def gold_rows(frame: pd.DataFrame) -> dict[str, list[tuple[Any, ...]]]:
    """Gold rows that give every application of ``frame`` its own features back.

    Each application's profile and transaction features are stamped an hour before it (a
    customer's applications are 450 hours apart), so the point-in-time join finds exactly them.
    """
    profiles, transactions, labels = [], [], []
    for row in frame.itertuples(index=False):
        ts = row.application_timestamp.to_pydatetime()
        stamp = ts - STAMP_LEAD
        age = _none(row.age)
        profiles.append(
            (
                row.customer_id,
                stamp,
                None if age is None else int(age),
                float(row.annual_income),
                float(row.employment_years),
                int(row.credit_score),
                _none(row.home_ownership),
                row.region,
                stamp,
            )
        )
        count7, sum30 = int(row.txn_count_7d), float(row.txn_amount_sum_30d)
        windows = [(count7, sum30 / 4), (4 * count7, sum30), (12 * count7, 3 * sum30)]
        aggregates = [v for n, total in windows for v in (n, total, total / n if n else None)]
        transactions.append(
            (
                row.customer_id,
                stamp,
                *aggregates,
                sum30 / 2,
                float(row.gambling_share_30d),
                float(row.online_share_30d),
                stamp,
            )
        )
        labels.append(
            (
                row.application_id,
                row.customer_id,
                ts,
                float(row.loan_amount),
                int(row.term_months),
                row.purpose,
                int(row.defaulted),
                ts + timedelta(days=60),
            )
        )
    return {
        GOLD_CUSTOMER_PROFILE: profiles,
        GOLD_CUSTOMER_TRANSACTIONS: transactions,
        GOLD_LABELS: labels,
    }


SCHEMAS = {
    GOLD_CUSTOMER_PROFILE: GOLD_CUSTOMER_PROFILE_SCHEMA,
    GOLD_CUSTOMER_TRANSACTIONS: GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
    GOLD_LABELS: GOLD_LABELS_SCHEMA,
}


def model_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """The applications of ``frame`` with every feature the gold rows give them, as the model
    reads them: numbers as float64, categories as strings or None."""
    txn = pd.DataFrame(
        gold_rows(frame)[GOLD_CUSTOMER_TRANSACTIONS],
        columns=GOLD_CUSTOMER_TRANSACTIONS_SCHEMA.fieldNames(),
    )
    extra = [c for c in txn.columns if c not in frame.columns]
    out = pd.concat([frame.reset_index(drop=True), txn[extra]], axis=1)
    categorical = ["purpose", "home_ownership", "region"]
    numeric = [c for c in out.columns if c not in categorical and out[c].dtype.kind in "biuf"]
    out[numeric] = out[numeric].astype("float64")
    out[categorical] = out[categorical].astype(object).where(out[categorical].notna(), None)
    return out


@dataclass(frozen=True)
class Shared:
    """The platform on shared services: settings, the environment of its commands, servers."""

    settings: Settings
    env: dict[str, str]
    postgres: Postgres
    server: MlflowServer
    frame: pd.DataFrame
    cwd: Path


def lakehouse(shared: Shared, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the ``lakehouse`` command in its own process on the shared services."""
    return subprocess.run(
        [LAKEHOUSE, *argv],
        env={**shared.env, **env},
        cwd=shared.cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def shared(
    spark: SparkSession,
    base_settings: Settings,
    postgres: Postgres,
    mlflow_server: MlflowServer,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Shared:
    """Gold tables written once, the Feast repository applied by ``lakehouse features apply``."""
    postgres.create_database("feast")
    home = tmp_path_factory.mktemp("shared-home")
    settings = replace(
        base_settings.with_home(home),
        mlflow_tracking_uri=mlflow_server.uri,
        feast_registry=postgres.url("feast"),
        online_store="redis",
        redis_url=redis_url,
    )
    catalog = TableCatalog(settings.tables_root)
    frame = synthetic_frame()
    for name, rows in gold_rows(frame).items():
        overwrite(spark, catalog, name, spark.createDataFrame(rows, SCHEMAS[name]))
    env = platform_env(
        LAKEHOUSE_HOME=str(home),
        LAKEHOUSE_SPARK_MASTER="local[1]",
        LAKEHOUSE_SHUFFLE_PARTITIONS="2",
        MLFLOW_TRACKING_URI=mlflow_server.uri,
        LAKEHOUSE_FEAST_REGISTRY=postgres.url("feast"),
        LAKEHOUSE_ONLINE_STORE="redis",
        LAKEHOUSE_REDIS_URL=redis_url,
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
    )
    cwd = tmp_path_factory.mktemp("shared-cwd")  # no ml_gate.yaml: the built-in gate
    world = Shared(settings, env, postgres, mlflow_server, frame, cwd)
    done = lakehouse(world, "features", "apply")
    assert done.returncode == 0, done.stderr[-3000:]
    return world


# --- The registry's invariants ---------------------------------------------------------------
def client_of(shared: Shared) -> MlflowClient:
    return MlflowClient(tracking_uri=shared.server.uri, registry_uri=shared.server.uri)


def load(shared: Shared, uri: str) -> Any:
    """``mlflow.pyfunc.load_model(uri)`` from the server, MLflow's URIs restored after."""
    with environ({"MLFLOW_TRACKING_URI": shared.server.uri}):
        mlflow.set_tracking_uri(shared.server.uri)
        mlflow.set_registry_uri(shared.server.uri)
        try:
            return mlflow.pyfunc.load_model(uri)
        finally:
            mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
            mlflow.set_registry_uri(None)  # type: ignore[arg-type]


def registry_of(shared: Shared) -> ModelRegistry:
    return ModelRegistry(client_of(shared), shared.settings.model_name)


def interrupted_versions(shared: Shared) -> list[int]:
    """The versions whose training stopped between registering them and the gate."""
    registry = registry_of(shared)
    versions = client_of(shared).search_model_versions(f"name = '{registry.name}'")
    return sorted(int(mv.version) for mv in versions if registry.interrupted(int(mv.version)))


def registry_consistent(shared: Shared) -> dict[str, int]:
    """Assert that no version is half-registered; return the aliases.

    Every version is READY and loads from the server; aliases and stages are in step (the
    champion alone in Production, the challenger alone in Staging); a version without a gate
    verdict holds no alias and no stage.
    """
    client = client_of(shared)
    name = shared.settings.model_name
    versions = client.search_model_versions(f"name = '{name}'")
    models = client.search_registered_models(f"name = '{name}'")
    aliases = {a: int(v) for m in models for a, v in (m.aliases or {}).items()}
    for mv in versions:
        assert mv.status == "READY", (mv.version, mv.status)
        assert load(shared, f"models:/{name}/{mv.version}") is not None
        if f"{GATE_TAG_PREFIX}verdict" not in (mv.tags or {}):
            assert (mv.aliases, mv.current_stage) == ([], "None"), mv
    stages = {int(mv.version): mv.current_stage for mv in versions}
    for alias, stage in ((CHAMPION, PRODUCTION), (CHALLENGER, STAGING)):
        expected = [aliases[alias]] if alias in aliases else []
        assert [v for v, s in stages.items() if s == stage] == expected, (alias, stages)
    assert set(stages.values()) <= {PRODUCTION, STAGING, ARCHIVED, "None"}
    return aliases


def summary(out: str) -> str:
    """The first line of the training summary (MLflow prints a link to the run before it)."""
    return next(line for line in out.splitlines() if line.startswith("run "))


def version_count(shared: Shared) -> int:
    return int(shared.postgres.query("mlflow", "SELECT count(*) FROM model_versions")[0][0])


# --- Configuration ---------------------------------------------------------------------------
TEAM_REGISTRY = "postgresql+psycopg2://team:s3cret@db.example:5432/feast"


def test_the_feast_registry_setting_renders_feasts_sql_registry(tmp_path: Path) -> None:
    env = {"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_FEAST_REGISTRY": TEAM_REGISTRY}
    settings = load_settings("local", env=env)

    assert settings.feast_registry == TEAM_REGISTRY
    assert features.feature_store_config(settings)["registry"] == {
        "registry_type": "sql",
        "path": TEAM_REGISTRY,
        "cache_ttl_seconds": 60,
        "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
    }
    # Messages name the database, never its password.
    assert features.registry_location(settings) == (
        "postgresql+psycopg2://team:***@db.example:5432/feast"
    )
    # The generated configuration holds it, for `feast -f`: readable by its owner only.
    written = features.write_feature_store_yaml(settings)
    assert "s3cret" in written.read_text()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


@pytest.mark.parametrize("value", [None, ""])
def test_without_the_setting_the_registry_is_a_file(tmp_path: Path, value: str | None) -> None:
    env = {"LAKEHOUSE_HOME": str(tmp_path)}
    if value is not None:
        env["LAKEHOUSE_FEAST_REGISTRY"] = value
    settings = load_settings("local", env=env)

    assert settings.feast_registry is None
    registry = str(tmp_path.resolve() / "feast" / "registry.db")
    assert features.feature_store_config(settings)["registry"] == {
        "registry_type": "file",
        "path": registry,
    }
    assert features.registry_location(settings) == registry
    written = features.write_feature_store_yaml(settings)
    assert stat.S_IMODE(written.stat().st_mode) & 0o044 == 0o044


# --- Feast: SQL registry, Redis --------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.service
def test_feature_registry_in_postgres_and_online_features_from_redis(shared: Shared) -> None:
    views = shared.postgres.query("feast", "SELECT feature_view_name FROM feature_views")
    assert sorted(v for (v,) in views) == ["customer_profile_fv", "customer_transactions_fv"]
    assert not (shared.settings.feast_dir / "registry.db").exists()

    done = lakehouse(shared, "features", "materialize", "--end", MAT_END)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "into the redis online store" in done.stdout
    # Read back through Feast in this process: the registry from PostgreSQL, values from Redis.
    online = features.online_features(shared.settings, ["C000000", "C000149", "C999999"])
    rows = online.set_index("customer_id")
    frame = shared.frame
    for customer in ("C000000", "C000149"):
        last = frame[frame["customer_id"] == customer].iloc[-1]  # the latest application
        assert rows.loc[customer, "credit_score"] == last["credit_score"]
        assert rows.loc[customer, "annual_income"] == pytest.approx(last["annual_income"])
        assert rows.loc[customer, "txn_count_7d"] == last["txn_count_7d"]
        assert rows.loc[customer, "region"] == last["region"]
    assert rows.loc["C999999"].isna().all()


# --- MLflow on PostgreSQL --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.service
def test_training_registers_on_the_server_and_the_champion_loads_by_alias(shared: Shared) -> None:
    done = lakehouse(shared, "train", *SMALL_FLAGS)

    assert done.returncode == 0, done.stderr[-3000:]
    assert summary(done.stdout).endswith(f"{shared.settings.model_name} version 1"), done.stdout
    assert "gate: promoted" in done.stdout
    rows = shared.postgres.query(
        "mlflow", "SELECT name, version, status FROM model_versions ORDER BY version"
    )
    assert rows == [(shared.settings.model_name, 1, "READY")]
    assert registry_consistent(shared) == {CHAMPION: 1}
    champion = load(shared, f"models:/{shared.settings.model_name}@{CHAMPION}")
    inputs = champion.metadata.get_input_schema().input_names()
    proba = np.asarray(champion.predict(model_inputs(shared.frame.head(3))[inputs]))
    assert proba.shape == (3, 2) and np.allclose(proba.sum(axis=1), 1.0)
    # Nothing went to a local store: the server keeps runs, versions and artifacts.
    assert not (shared.settings.mlflow_dir / "mlflow.db").exists()
    assert any(Path(shared.server.artifacts_destination).rglob("MLmodel"))


# --- The MLflow server restarted during training ---------------------------------------------
def kill_when(
    shared: Shared, process: subprocess.Popen[str], condition: Callable[[], bool]
) -> bool:
    """Kill the MLflow server as soon as ``condition()`` holds; False if the command ended first."""
    while process.poll() is None:
        if condition():
            shared.server.kill()
            return True
        time.sleep(0.05)
    return False


def start_training(shared: Shared, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [LAKEHOUSE, "train", *SMALL_FLAGS],
        env={**shared.env, **env},
        cwd=shared.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def running_runs(shared: Shared) -> int:
    query = "SELECT count(*) FROM runs WHERE status = 'RUNNING'"
    return int(shared.postgres.query("mlflow", query)[0][0])


@pytest.mark.slow
@pytest.mark.service
def test_a_server_restarted_during_training_is_retried_to_a_gated_champion(
    shared: Shared,
) -> None:
    before = version_count(shared)
    process = start_training(shared)
    try:
        # Killed the moment the run starts logging; back on the same port and stores at once.
        assert kill_when(shared, process, lambda: running_runs(shared) > 0)
        shared.server.start()
        out, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
        if shared.server.process is None:
            shared.server.start()

    assert process.returncode == 0, err[-3000:]
    assert "Retrying" in err  # MLflow's client waited for the server
    new = before + 1
    assert summary(out).endswith(f"version {new}"), out
    assert "gate: promoted" in out
    assert version_count(shared) == new  # no retried request registered it twice
    assert registry_consistent(shared) == {CHAMPION: new}
    assert not interrupted_versions(shared)


@pytest.mark.slow
@pytest.mark.service
def test_a_server_lost_after_registration_fails_in_one_line_and_the_version_stays_unjudged(
    shared: Shared,
) -> None:
    before = version_count(shared)
    aliases = registry_consistent(shared)
    # Two quick retries: the server stays down for longer than they last.
    process = start_training(
        shared, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1"
    )
    try:
        # Killed the moment the new version is registered, before the gate judges it.
        assert kill_when(shared, process, lambda: version_count(shared) > before)
        out, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
        shared.server.start()

    assert process.returncode == 1, (out, err[-3000:])
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: lakehouse train failed: MlflowException: "), err[-3000:]
    assert f"API request to {shared.server.uri}/api/" in last, last
    assert "Traceback" not in err
    new = before + 1
    assert version_count(shared) == new
    # READY and loadable, but unjudged (the server was down when the gate's failure tried to
    # withdraw it): no alias, no stage, reported as interrupted; the champion is untouched.
    assert registry_consistent(shared) == aliases
    assert interrupted_versions(shared) == [new]
    mv = client_of(shared).get_model_version(shared.settings.model_name, str(new))
    assert (mv.aliases, mv.current_stage) == ([], "None")
