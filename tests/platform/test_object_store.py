"""Delta tables, streaming checkpoints and concurrent writers on an S3-compatible store.

The store is a real SeaweedFS server storing to a temporary folder (:mod:`tests.object_store`),
reached through Hadoop's S3A connector at ``s3a://<bucket>/...``. The Spark tests use the shared
session, with S3A's options set for this module's bucket alone; the concurrent writers are two
applications of their own, each in its own process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.jars import LOG_STORE_CLASS
from lakehouse.platform.settings import ObjectStore, load_settings
from lakehouse.platform.spark import LOG_STORE_CONF, s3a_options, spark_conf
from tests.conftest import REPO_ROOT, platform_env
from tests.object_store import SeaweedFS, running_seaweedfs

# Run by `make test-cluster` with the cluster demo: the shared services' stage of CI.
pytestmark = pytest.mark.cluster

SCHEMA = "id int, name string"


# --- settings and configuration (no store, no JVM) -------------------------------------------


def test_object_store_settings_come_from_the_profile_and_the_environment(tmp_path: Path) -> None:
    profile = tmp_path / "team.yaml"
    profile.write_text(
        "storage:\n"
        "  tables_uri: s3a://lake/tables\n"
        "  object_store:\n"
        "    endpoint: http://store:8333\n"
        "    region: eu-west-1\n"
        "    access_key: from-yaml\n"
    )
    env = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}
    s = load_settings(str(profile), env=env)
    assert s.tables_on_object_store
    store = s.object_store
    assert (store.endpoint, store.region, store.path_style_access) == (
        "http://store:8333",
        "eu-west-1",
        True,
    )
    assert (store.access_key, store.secret_key) == ("id", "secret")  # never the YAML's
    assert "secret" not in repr(s)
    s = load_settings(str(profile), env={"LAKEHOUSE_S3_PATH_STYLE": "false"})
    assert not s.object_store.path_style_access and not s.object_store.has_credentials


def test_bad_flag_is_rejected() -> None:
    with pytest.raises(ValueError, match="conditional_writes must be true or false, got 'maybe'"):
        load_settings("local", env={"LAKEHOUSE_S3_CONDITIONAL_WRITES": "maybe"})


def test_tables_on_s3a_configure_s3a_and_the_log_store(tmp_path: Path) -> None:
    env = {
        "LAKEHOUSE_HOME": str(tmp_path),
        "LAKEHOUSE_TABLES_URI": "s3a://lake/tables",
        "LAKEHOUSE_S3_ENDPOINT": "http://127.0.0.1:8333",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    conf = spark_conf(load_settings("local", env=env))
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:8333"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith(
        "SimpleAWSCredentialsProvider"
    )
    assert conf["spark.hadoop.fs.s3a.secret.key"] == "secret"
    assert conf["spark.hadoop.fs.s3a.create.conditional.enabled"] == "true"
    assert conf[LOG_STORE_CONF] == LOG_STORE_CLASS

    env["LAKEHOUSE_S3_CONDITIONAL_WRITES"] = "false"
    conf = spark_conf(load_settings("local", env=env))
    assert LOG_STORE_CONF not in conf  # Delta's own S3SingleDriverLogStore
    assert conf["spark.hadoop.fs.s3a.create.conditional.enabled"] == "false"
    local = spark_conf(load_settings("local", env={"LAKEHOUSE_HOME": str(tmp_path)}))
    assert not any(key.startswith("spark.hadoop.fs.s3a.") for key in local)


def test_per_bucket_options_name_the_bucket() -> None:
    options = s3a_options(ObjectStore(endpoint="https://s3.example:443"), bucket="lake")
    assert options["fs.s3a.bucket.lake.endpoint"] == "https://s3.example:443"
    assert options["fs.s3a.bucket.lake.connection.ssl.enabled"] == "true"
    assert "fs.s3a.bucket.lake.access.key" not in options  # AWS's own provider chain


# --- a real store ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS server for this module, storing under a temporary folder."""
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="module")
def bucket(store: SeaweedFS) -> str:
    return store.create_bucket("lakehouse-tests")


@pytest.fixture(scope="module")
def s3(spark: SparkSession, store: SeaweedFS, bucket: str) -> Iterator[SparkSession]:
    """The shared session, with S3A's options for this module's bucket (and no other)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    try:
        jvm.java.lang.Class.forName(
            "org.apache.hadoop.fs.s3a.S3AFileSystem",
            False,
            jvm.java.lang.Thread.currentThread().getContextClassLoader(),
        )
    except Exception:  # py4j raises a generic Py4JJavaError
        pytest.fail("S3A's jars are not on the session's class path: run `make setup`")
    options = s3a_options(
        ObjectStore(
            endpoint=store.endpoint, access_key=store.access_key, secret_key=store.secret_key
        ),
        bucket=bucket,
    )
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in options.items():
        hadoop_conf.set(key, value)
    yield spark
    for key in options:
        hadoop_conf.unset(key)


def test_delta_table_written_merged_and_time_travelled(
    s3: SparkSession, store: SeaweedFS, bucket: str
) -> None:
    from delta.tables import DeltaTable

    catalog = TableCatalog(f"s3a://{bucket}/tables")
    path = catalog.path("silver.customers")
    first = s3.createDataFrame([(1, "ann"), (2, "bob"), (3, "cy")], SCHEMA)
    first.write.format("delta").save(path)
    assertDataFrameEqual(catalog.read(s3, "silver.customers"), first)

    updates = s3.createDataFrame([(2, "bobby"), (4, "dee")], SCHEMA)
    (
        DeltaTable.forPath(s3, path)
        .alias("t")
        .merge(updates.alias("u"), "t.id = u.id")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )
    merged = s3.createDataFrame([(1, "ann"), (2, "bobby"), (3, "cy"), (4, "dee")], SCHEMA)
    assertDataFrameEqual(catalog.read(s3, "silver.customers"), merged)
    assertDataFrameEqual(catalog.read(s3, "silver.customers", version=0), first)
    assert catalog.version(s3, "silver.customers") == 1
    # The table's folder layout is the catalog's, whatever the root: found by listing the store.
    assert catalog.exists(s3, "silver.customers")
    assert "silver.customers" in catalog.list_tables(s3)
    log = store.keys(bucket, "tables/silver/customers/_delta_log/")
    assert {f"tables/silver/customers/_delta_log/{v:020d}.json" for v in (0, 1)} <= set(log)


def test_streaming_checkpoint_on_the_store_processes_each_row_once(
    s3: SparkSession, store: SeaweedFS, bucket: str
) -> None:
    source = f"s3a://{bucket}/stream/bronze"
    target = f"s3a://{bucket}/stream/silver"
    checkpoint = f"s3a://{bucket}/checkpoints/silver"

    def run() -> None:
        query = (
            s3.readStream.format("delta")
            .load(source)
            .writeStream.format("delta")
            .option("checkpointLocation", checkpoint)
            .trigger(availableNow=True)
            .start(target)
        )
        query.awaitTermination(300)
        assert query.exception() is None

    s3.createDataFrame([(1, "a"), (2, "b")], SCHEMA).write.format("delta").save(source)
    run()
    s3.createDataFrame([(3, "c")], SCHEMA).write.format("delta").mode("append").save(source)
    run()
    expected = s3.createDataFrame([(1, "a"), (2, "b"), (3, "c")], SCHEMA)
    assertDataFrameEqual(s3.read.format("delta").load(target), expected)
    keys = set(store.keys(bucket, "checkpoints/silver/"))
    assert {"checkpoints/silver/offsets/0", "checkpoints/silver/commits/1"} <= keys


def test_store_restart_between_two_writes_loses_nothing(
    s3: SparkSession, store: SeaweedFS, bucket: str
) -> None:
    path = f"s3a://{bucket}/restart/table"
    before = s3.createDataFrame([(1, "before")], SCHEMA)
    before.write.format("delta").save(path)
    store.restart()  # stopped (killed if still up after a grace period), started on its disk
    assertDataFrameEqual(s3.read.format("delta").load(path), before)
    after = s3.createDataFrame([(2, "after")], SCHEMA)  # the same session: S3A reconnects
    after.write.format("delta").mode("append").save(path)
    assertDataFrameEqual(s3.read.format("delta").load(path), before.union(after))
    assertDataFrameEqual(s3.read.format("delta").option("versionAsOf", 0).load(path), before)
    assert len(store.keys(bucket, "restart/table/_delta_log/0")) == 2


@pytest.mark.slow
def test_two_applications_appending_at_once_both_land(
    s3: SparkSession, store: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    """Each commit is created only if absent (the platform's LogStore): none is lost.

    With Delta's default for S3 (``S3SingleDriverLogStore``) the two applications can both
    write the same version, one overwriting the other; here a refused create makes Delta check
    for conflicts and commit at the next version instead.
    """
    from delta.tables import DeltaTable

    path = f"s3a://{bucket}/concurrent/appends"
    s3.createDataFrame([], "writer string, n int").write.format("delta").save(path)
    writers, count = ("a", "b"), 3
    env = platform_env(
        **store.env(),
        LAKEHOUSE_HOME=str(tmp_path / "home"),
        LAKEHOUSE_TABLES_URI=f"s3a://{bucket}/concurrent",
        LAKEHOUSE_SPARK_MASTER="local[1]",
        LAKEHOUSE_SHUFFLE_PARTITIONS="1",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
    )
    barrier = tmp_path / "ready"
    barrier.mkdir()
    command = [sys.executable, "-m", "tests.object_store", path, str(count), str(barrier)]
    procs = [
        subprocess.Popen(
            [*command, writer, *writers],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for writer in writers
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results == [{"writer": w, "committed": count} for w in writers], results

    rows = s3.read.format("delta").load(path)
    expected = s3.createDataFrame(
        [(w, n) for w in writers for n in range(count)], "writer string, n int"
    )
    assertDataFrameEqual(rows, expected)
    versions = [r.version for r in DeltaTable.forPath(s3, path).history().collect()]
    assert sorted(versions) == list(range(len(writers) * count + 1))
