import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakehouse.platform.catalog import TableCatalog, register_all, register_table, split_name


@pytest.mark.parametrize("name", ["customers", "platinum.x", "silver.", "silver.a.b", ".customers"])
def test_split_name_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="table name must be"):
        split_name(name)


def test_path_follows_schema_and_table() -> None:
    assert TableCatalog("/data/tables/").path("gold.labels") == "/data/tables/gold/labels"


def test_register_all_makes_names_resolve(spark: SparkSession, catalog: TableCatalog) -> None:
    spark.range(3).write.format("delta").save(catalog.path("silver.reg_a"))
    spark.range(5).write.format("delta").save(catalog.path("gold.reg_b"))
    (spark.range(1).write.format("parquet").save(catalog.path("gold.not_delta")))

    assert register_all(spark, catalog) == ["gold.reg_b", "silver.reg_a"]
    assert spark.sql("SELECT count(*) AS n FROM silver.reg_a").first()["n"] == 3
    assert spark.sql("SELECT count(*) AS n FROM gold.reg_b").first()["n"] == 5


def test_register_repoints_a_name_to_a_new_root(spark: SparkSession, tmp_path) -> None:
    first, second = TableCatalog(str(tmp_path / "a")), TableCatalog(str(tmp_path / "b"))
    spark.range(2).write.format("delta").save(first.path("silver.moving"))
    spark.range(7).write.format("delta").save(second.path("silver.moving"))
    register_table(spark, first, "silver.moving")
    assert spark.table("silver.moving").count() == 2
    register_table(spark, second, "silver.moving")
    assert spark.table("silver.moving").count() == 7
    # The first table's data survives the re-pointing (the registration is external).
    assert first.read(spark, "silver.moving").count() == 2


def test_time_travel_by_name(spark: SparkSession, catalog: TableCatalog) -> None:
    path = catalog.path("silver.travel")
    spark.range(2).write.format("delta").save(path)
    spark.range(10).write.format("delta").mode("overwrite").save(path)
    register_table(spark, catalog, "silver.travel")
    assert spark.sql("SELECT count(*) n FROM silver.travel VERSION AS OF 0").first()["n"] == 2
    assert spark.sql("SELECT count(*) n FROM silver.travel").first()["n"] == 10
    assert catalog.version(spark, "silver.travel") == 1


def test_statistics_cover_every_entitys_event_time() -> None:
    from lakehouse.medallion.contracts import EVENT_TIME
    from lakehouse.platform.tables import STATS_COLUMNS

    assert set(EVENT_TIME.values()) <= STATS_COLUMNS


def test_each_table_keeps_statistics_on_its_own_time_columns(
    spark: SparkSession, catalog: TableCatalog
) -> None:
    """A table lists only the statistics columns it has, so tables of any shape can be created."""
    from lakehouse.platform.tables import create_if_missing, overwrite

    def properties(name: str) -> dict[str, str]:
        rows = spark.sql(f"SHOW TBLPROPERTIES delta.`{catalog.path(name)}`").collect()
        return {r["key"]: r["value"] for r in rows}

    timed = spark.sql(
        "SELECT 'T1' AS transaction_id, current_timestamp() AS transaction_ts, 1.0 AS x"
    )
    create_if_missing(spark, catalog, "silver.timed", timed)
    assert properties("silver.timed")["delta.dataSkippingStatsColumns"] == "transaction_ts"

    plain = spark.sql("SELECT 'a' AS customer_id, 2.0 AS score")
    overwrite(spark, catalog, "gold.plain", plain)
    assert "delta.dataSkippingStatsColumns" not in properties("gold.plain")
    assert catalog.read(spark, "gold.plain").count() == 1

    timed.write.format("delta").mode("append").save(catalog.path("silver.timed"))
    (stats,) = [
        json.loads(r["stats"])
        for r in spark.read.json(f"{catalog.path('silver.timed')}/_delta_log/*.json")
        .where("add IS NOT NULL")
        .select("add.stats")
        .collect()
    ]
    assert stats["numRecords"] == 1
    assert set(stats["minValues"]) == {"transaction_ts"}


def test_latest_user_metadata_reads_the_newest_commit_that_carries_it(
    spark: SparkSession, catalog: TableCatalog
) -> None:
    from lakehouse.platform.tables import latest_user_metadata

    path = catalog.path("gold.noted")
    df = spark.range(3)
    df.write.format("delta").save(path)
    assert latest_user_metadata(spark, catalog, "gold.noted", "inputs") is None
    for n in (1, 2):
        df.write.format("delta").mode("append").option("userMetadata", f'{{"inputs": {n}}}').save(
            path
        )
    df.write.format("delta").mode("append").save(path)  # a later commit without metadata
    df.write.format("delta").mode("append").option("userMetadata", "other").save(path)
    assert latest_user_metadata(spark, catalog, "gold.noted", "inputs") == '{"inputs": 2}'
    assert latest_user_metadata(spark, catalog, "gold.missing", "inputs") is None


def test_append_batch_writes_each_batch_of_a_writer_once(
    spark: SparkSession, catalog: TableCatalog
) -> None:
    from lakehouse.platform.tables import append_batch, committed_batch, delta_version

    name = "silver.batches"
    df = spark.range(2)
    df.write.format("delta").save(catalog.path(name))
    assert committed_batch(spark, catalog, name, "a") == -1

    assert append_batch(df, catalog, name, "a", 0, replayed=None)
    assert append_batch(df, catalog, name, "b", 0, replayed=None)  # another writer, own batches
    assert append_batch(df, catalog, name, "a", 1, replayed=None)
    df.write.format("delta").mode("append").save(catalog.path(name))  # a commit of nobody's
    assert committed_batch(spark, catalog, name, "a") == 1
    assert committed_batch(spark, catalog, name, "b") == 0
    assert committed_batch(spark, catalog, name, "c") == -1

    version = delta_version(spark, catalog, name)
    # Replays of batches "a" committed already: nothing written.
    assert not append_batch(df, catalog, name, "a", 1, replayed=1)
    assert not append_batch(df, catalog, name, "a", 0, replayed=0)
    assert delta_version(spark, catalog, name) == version
    # A replayed batch that had not been committed is written, and so is every new batch.
    assert append_batch(df, catalog, name, "b", 1, replayed=1)
    assert append_batch(df, catalog, name, "a", 2, replayed=1)
    assert delta_version(spark, catalog, name) == version + 2
    assert catalog.read(spark, name).count() == 2 * 7  # the first write and six appends


def test_local_tables_have_no_checksum_sidecars(spark: SparkSession, catalog: TableCatalog) -> None:
    """Local paths go through Hadoop's raw local file system: no ``.crc`` beside each file."""
    path = catalog.path("silver.sidecars")
    spark.range(5).write.format("delta").save(path)
    spark.range(5).write.format("delta").mode("append").save(path)
    assert spark.read.format("delta").load(path).count() == 10
    files = [p.name for p in Path(path).rglob("*")]
    assert any(name.endswith(".parquet") for name in files)
    assert [name for name in files if name.endswith(".crc")] == []


def test_a_written_commit_is_never_replaced(spark: SparkSession, catalog: TableCatalog) -> None:
    """Commits to local tables go through Delta's local log store, which refuses an overwrite."""
    path = catalog.path("silver.commits")
    spark.range(3).write.format("delta").save(path)
    first = Path(path) / "_delta_log" / "00000000000000000000.json"
    before = first.read_text()
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    actions = jvm.java.util.ArrayList()
    actions.add('{"commitInfo":{}}')
    with pytest.raises(Exception, match="FileAlreadyExistsException") as raised:
        log.store().write(
            jvm.org.apache.hadoop.fs.Path(first.as_uri()),
            jvm.scala.jdk.javaapi.CollectionConverters.asScala(actions.iterator()),
            False,
            log.newDeltaHadoopConf(),
        )
    assert "io.delta.storage.LocalLogStore" in str(raised.value)
    assert first.read_text() == before
    assert sorted(p.name for p in first.parent.iterdir() if p.is_file()) == [first.name]
    assert spark.read.format("delta").load(path).count() == 3


def test_local_files_get_their_permissions_without_a_fork(
    spark: SparkSession, catalog: TableCatalog
) -> None:
    """A local session writes through the platform's local file system, permissions intact."""
    from lakehouse.platform.jars import LOCAL_FS_CLASS

    jvm = spark.sparkContext._jvm
    assert jvm is not None
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    fs = jvm.org.apache.hadoop.fs.FileSystem.get(jvm.java.net.URI("file:///"), conf)
    assert fs.getClass().getName() == LOCAL_FS_CLASS
    path = Path(catalog.path("silver.permissions"))
    spark.range(5).write.format("delta").save(str(path))
    permission = jvm.org.apache.hadoop.fs.permission.FsPermission
    umask = permission.getUMask(conf).toShort()  # Hadoop's own, fs.permissions.umask-mode
    written = [*path.glob("*.parquet"), *path.glob("_delta_log/*.json")]
    assert len(written) >= 2
    for item in written:  # created with Hadoop's file default, rw-rw-rw- less the umask
        assert stat.S_IMODE(item.stat().st_mode) == 0o666 & ~umask, item
    assert spark.read.format("delta").load(str(path)).count() == 5
    # Any mode Hadoop asks for, the sticky bit (left to Hadoop's own way) included.
    for target, mode in ((written[-1], 0o640), (path / "_delta_log", 0o1750)):
        fs.setPermission(jvm.org.apache.hadoop.fs.Path(target.as_uri()), permission(mode))
        assert stat.S_IMODE(target.stat().st_mode) == mode
    absent = jvm.org.apache.hadoop.fs.Path((path / "absent").as_uri())
    with pytest.raises(Exception, match="NoSuchFileException"):
        fs.setPermission(absent, permission(0o644))


def test_describe_reads_what_history_says(spark: SparkSession, catalog: TableCatalog) -> None:
    from delta.tables import DeltaTable

    from lakehouse.platform.tables import describe

    path = catalog.path("silver.described")
    spark.range(4).write.format("delta").save(path)
    spark.range(2).write.format("delta").mode("append").save(path)
    source = spark.range(3, 6).withColumnRenamed("id", "sid")
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(source.alias("s"), "t.id = s.sid")
        .whenNotMatchedInsert(values={"id": "s.sid"})
        .execute()
    )
    info = describe(spark, catalog, "silver.described")
    last = DeltaTable.forPath(spark, path).history(1).first()
    assert (info.name, info.location, info.rows) == ("silver.described", path, 8)
    assert (info.version, info.last_operation) == (2, "MERGE") == (last.version, last.operation)
    written = last.timestamp.replace(tzinfo=UTC)  # the session's time zone is UTC
    assert abs(datetime.fromisoformat(info.last_modified) - written).total_seconds() < 1
