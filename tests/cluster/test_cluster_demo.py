"""``LAKEHOUSE_PROFILE=cluster lakehouse demo`` on real services, against the local demo.

Every service runs natively, started here: a Spark standalone master with two one-core workers
(``lakehouse cluster start``), SeaweedFS as the object store (the tables and the streams'
checkpoints under ``s3a://``), PostgreSQL behind ``mlflow server`` (its artifacts on the same
store) and holding Feast's SQL registry, Redis as Feast's online store. The cluster demo and the
local demo (embedded defaults) run at the same time, each in its own process, on the same small
world and seed; then every table of the one is compared with the same table of the other: row
count and an order-independent hash of its content.

What differs by nature is left out of the hash (:data:`VOLATILE`): the times a row was
ingested, built, scored or judged, the ids of runs, paths that name where the state lives, and
digests over those. Every value of every other column is hashed exactly, except the floats of
the monitors' metrics (:data:`AGGREGATE_TABLES`), compared within a relative tolerance.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, Row, SparkSession

from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.cluster import master_state
from lakehouse.platform.settings import ObjectStore
from lakehouse.platform.spark import s3a_options
from tests.conftest import REPO_ROOT, platform_env
from tests.object_store import SeaweedFS, running_seaweedfs
from tests.services import (  # noqa: F401 (fixtures)
    MlflowServer,
    Postgres,
    free_port,
    postgres_fixture,
    redis_fixture,
    running_mlflow_server,
)

pytestmark = [pytest.mark.slow, pytest.mark.service, pytest.mark.cluster]

LAKEHOUSE = str(Path(sys.executable).with_name("lakehouse"))
BUCKET = "lakehouse"
#: A small world whose model still passes the gate, so that both demos score.
WORLD = ("--customers", "400", "--days", "60", "--seed", "7")
DEMO_TIMEOUT = 1800

#: Columns left out of the content hash, by name, in every table that has them, and why.
VOLATILE: dict[str, str] = {
    "_ingested_at": "when bronze read the file (bronze, silver, in quarantine's raw_record)",
    "_source_file": "the landing file's URI, under each run's own home folder (idem)",
    "created_at": "when gold built the feature row",
    "scored_at": "when the prediction was made (predictions, outcomes, monitored rows)",
    "evaluated_at": "when silver evaluated the expectations",
    "quarantined_at": "when silver quarantined the row",
    "decided_at": "when the gate decided",
    "raised_at": "when the monitor raised the alert",
    "run_id": "a pipeline run's or an MLflow run's id (expectations, quarantine, predictions, "
    "the monitor's baseline)",
    "candidate_run_id": "the MLflow run of the gated model",
    "input_fingerprint": "the monitor's digest of its input rows, scored_at and run_id included",
}
#: Columns holding a JSON object whose :data:`VOLATILE` keys are left out of the hash.
JSON_COLUMNS = ("raw_record",)
#: The monitors' metrics: means, deviations and distances summed over rows in whatever order a
#: shuffle delivers them, which no two runs share, local or not; so their last digits differ.
#: Their floats are compared within :data:`REL_TOL`, the rest of each row by the hash.
AGGREGATE_TABLES = frozenset(
    {"gold.monitored_predictions_profile_metrics", "gold.monitored_predictions_drift_metrics"}
)
REL_TOL = 1e-9


@dataclass(frozen=True)
class Demos:
    """The two demos once both have run."""

    cluster_home: Path
    local_home: Path
    cluster_out: str
    local_out: str
    master_webui: str
    workers_dir: Path


def lakehouse(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    """``lakehouse ARGS`` in ``env``; its output, or a failure with its error output."""
    done = subprocess.run(
        [LAKEHOUSE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"lakehouse {' '.join(args)}:\n{done.stderr[-4000:]}"
    return done.stdout


def base_env(home: Path) -> dict[str, str]:
    """A driver's environment rooted at ``home``, free of the caller's Spark settings."""
    env = platform_env(
        LAKEHOUSE_HOME=str(home),
        LAKEHOUSE_SHUFFLE_PARTITIONS="2",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
    )
    for name in ("LAKEHOUSE_PROFILE", "LAKEHOUSE_SPARK_MASTER", "LAKEHOUSE_SPARK_REMOTE"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS server for the module, with the demo's bucket."""
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def mlflow_on_store(
    postgres: Postgres, store: SeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """``mlflow server`` on PostgreSQL, serving artifacts from ``s3://<bucket>/mlflow``."""
    keys = {
        "MLFLOW_S3_ENDPOINT_URL": store.endpoint,
        "AWS_ACCESS_KEY_ID": store.access_key,
        "AWS_SECRET_ACCESS_KEY": store.secret_key,
    }
    folder = tmp_path_factory.mktemp("mlflow-server")
    with running_mlflow_server(postgres, folder, f"s3://{BUCKET}/mlflow", keys) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A master and two one-core workers of 1g: (master URL, web UI, the workers' folder)."""
    home = tmp_path_factory.mktemp("cluster-home")
    env = base_env(home)
    port, webui = free_port(), free_port()
    lakehouse(
        env, "cluster", "start", "--workers", "2", "--port", str(port),
        "--webui-port", str(webui), timeout=180,
    )  # fmt: skip
    try:
        yield f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{webui}", home / "cluster"
    finally:
        lakehouse(env, "cluster", "stop", timeout=180)


@pytest.fixture(scope="module")
def demos(
    tmp_path_factory: pytest.TempPathFactory,
    store: SeaweedFS,
    postgres: Postgres,
    mlflow_on_store: MlflowServer,
    redis_url: str,
    cluster: tuple[str, str, Path],
) -> Demos:
    """The cluster demo and the local demo, run at the same time on the same world."""
    master, webui, workers_dir = cluster
    postgres.create_database("feast")
    cluster_home = tmp_path_factory.mktemp("cluster-demo")
    local_home = tmp_path_factory.mktemp("local-demo")
    cluster_env = {
        **base_env(cluster_home),
        **store.env(),
        "LAKEHOUSE_PROFILE": "cluster",
        "LAKEHOUSE_SPARK_MASTER": master,
        "LAKEHOUSE_TABLES_URI": f"s3a://{BUCKET}/tables",
        "LAKEHOUSE_CHECKPOINTS_URI": f"s3a://{BUCKET}/checkpoints",
        "MLFLOW_TRACKING_URI": mlflow_on_store.uri,
        "LAKEHOUSE_FEAST_REGISTRY": postgres.url("feast"),
        "LAKEHOUSE_ONLINE_STORE": "redis",
        "LAKEHOUSE_REDIS_URL": redis_url,
    }
    runs = {
        name: subprocess.Popen(
            [LAKEHOUSE, "demo", *WORLD],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, env in (("cluster", cluster_env), ("local", base_env(local_home)))
    }
    outputs = {}
    for name, process in runs.items():
        try:
            out, err = process.communicate(timeout=DEMO_TIMEOUT)
        except subprocess.TimeoutExpired:
            for other in runs.values():
                other.kill()
            raise
        assert process.returncode == 0, f"{name} demo failed:\n{out[-3000:]}\n{err[-4000:]}"
        outputs[name] = out
    return Demos(cluster_home, local_home, outputs["cluster"], outputs["local"], webui, workers_dir)


@pytest.fixture(scope="module")
def reader(spark: SparkSession, store: SeaweedFS) -> Iterator[SparkSession]:
    """The shared session, able to read the demo's bucket on the store."""
    keys = ObjectStore(
        endpoint=store.endpoint, access_key=store.access_key, secret_key=store.secret_key
    )
    options = s3a_options(keys, bucket=BUCKET)
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in options.items():
        hadoop_conf.set(key, value)
    yield spark
    for key in options:
        hadoop_conf.unset(key)


FLOAT = "<float>"


def canonical(value: Any, floats: list[float] | None = None) -> Any:
    """``value`` as plain JSON data, dates and timestamps as text.

    With ``floats``, every float is appended there, in column order, and stands as
    :data:`FLOAT` in the result.
    """
    if isinstance(value, Row):
        return {k: canonical(v, floats) for k, v in value.asDict().items()}
    if isinstance(value, dict):
        return {str(k): canonical(v, floats) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [canonical(v, floats) for v in value]
    if isinstance(value, float):
        if floats is None:
            return value + 0.0  # -0.0 is 0.0
        floats.append(value)
        return FLOAT
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


@dataclass(frozen=True)
class Content:
    """What is compared of a table.

    Attributes:
        rows: the row count.
        digest: SHA-256 over the sorted SHA-256 of each row's canonical JSON, without the
            :data:`VOLATILE` columns (floats masked in :data:`AGGREGATE_TABLES`).
        floats: for :data:`AGGREGATE_TABLES`, each masked row's float values, sorted.
    """

    rows: int
    digest: str
    floats: dict[str, list[list[float]]]

    def floats_close_to(self, other: Content) -> bool:
        """Whether every float is within :data:`REL_TOL` of the other's (NaN matches NaN)."""
        if self.floats.keys() != other.floats.keys():
            return False
        for key, ours in self.floats.items():
            theirs = other.floats[key]
            if len(ours) != len(theirs):
                return False
            rows = zip(ours, theirs, strict=True)
            for a, b in (pair for u, v in rows for pair in zip(u, v, strict=True)):
                if not (
                    math.isclose(a, b, rel_tol=REL_TOL, abs_tol=REL_TOL)
                    or (math.isnan(a) and math.isnan(b))
                ):
                    return False
        return True


def table_content(frame: DataFrame, aggregates: bool) -> Content:
    """The :class:`Content` of ``frame``, independent of row order."""
    columns = sorted(c for c in frame.columns if c not in VOLATILE)
    hashes = []
    floats: dict[str, list[list[float]]] = {}
    for row in frame.select(*columns).collect():
        values: list[float] | None = [] if aggregates else None
        data = canonical(row, values)
        for name in JSON_COLUMNS:
            if data.get(name):
                record = json.loads(data[name])
                data[name] = {k: v for k, v in record.items() if k not in VOLATILE}
        text = json.dumps(data, sort_keys=True)
        hashes.append(hashlib.sha256(text.encode()).hexdigest())
        if values is not None:
            floats.setdefault(text, []).append(values)
    digest = hashlib.sha256("".join(sorted(hashes)).encode()).hexdigest()
    return Content(len(hashes), digest, {k: sorted(v) for k, v in floats.items()})


def test_both_demos_run_every_step(demos: Demos) -> None:
    for out in (demos.cluster_out, demos.local_out):
        for step in ("data", "pipeline", "feature store", "training", "scoring", "monitoring"):
            assert f"/7] {step}:" in out, step
        assert "(aliases: champion; stage: Production; gate: promoted)" in out


def test_the_cluster_demo_ran_on_the_cluster(demos: Demos) -> None:
    """The master lists the demo's application; each worker ran one of its executors, which
    received the champion for the scoring UDF."""
    state = master_state(demos.master_webui)
    assert state is not None
    apps = [a for a in (*state.active_apps, *state.completed_apps) if a.name == "lakehouse-demo"]
    assert [a.state for a in apps] == ["FINISHED"]
    app_id = apps[0].id
    for worker in ("worker-1", "worker-2"):
        executors = list((demos.workers_dir / worker / app_id).iterdir())
        assert executors, worker
        models = [
            z
            for e in executors
            for z in e.glob("*.zip")
            if "MLmodel" in zipfile.ZipFile(z).namelist()
        ]
        assert models, f"no model reached the executor of {worker}"


def test_the_cluster_demo_keeps_its_state_on_the_services(
    demos: Demos, store: SeaweedFS, postgres: Postgres
) -> None:
    """Tables, checkpoints and model artifacts on the store, Feast's registry in PostgreSQL;
    the local home holds the landing files only."""
    assert not (demos.cluster_home / "tables").exists()
    assert not (demos.cluster_home / "mlflow").exists()
    assert not [p for p in (demos.cluster_home / "checkpoints").rglob("*") if p.is_file()]
    keys = store.keys(BUCKET)
    assert "tables/silver/customers/_delta_log/00000000000000000000.json" in keys
    assert "tables/gold/predictions/_delta_log/00000000000000000000.json" in keys
    for stream in ("bronze/customers", "silver/loan_applications", "scoring"):
        assert any(k.startswith(f"checkpoints/{stream}/commits/") for k in keys), stream
    assert any(k.startswith("mlflow/") and k.endswith("/MLmodel") for k in keys)
    assert postgres.query("feast", "SELECT count(*) FROM feature_views")[0][0] == 2


def test_every_table_holds_what_the_local_demo_built(reader: SparkSession, demos: Demos) -> None:
    local = TableCatalog(str(demos.local_home / "tables"))
    remote = TableCatalog(f"s3a://{BUCKET}/tables")
    names = local.list_tables(reader)
    assert remote.list_tables(reader) == names
    assert {"silver.customers", "gold.labels", "gold.predictions"} <= set(names)
    differ = {}
    for name in names:
        aggregates = name in AGGREGATE_TABLES
        ours = table_content(remote.read(reader, name), aggregates)
        theirs = table_content(local.read(reader, name), aggregates)
        if (ours.rows, ours.digest) != (theirs.rows, theirs.digest):
            differ[name] = f"{ours.rows} {ours.digest[:12]} != {theirs.rows} {theirs.digest[:12]}"
        elif not ours.floats_close_to(theirs):
            differ[name] = "floats differ"
    assert differ == {}
