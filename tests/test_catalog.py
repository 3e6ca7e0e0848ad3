import pytest
from pyspark.sql import SparkSession

from lakehouse.catalog import TableCatalog, register_all, register_table, split_name


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
