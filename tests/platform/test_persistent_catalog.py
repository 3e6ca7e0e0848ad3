"""The persistent catalog: what one Spark application creates, every other sees at once.

The shared session of the test run is one application (it runs for the whole run, as a
long-lived server would); a second application is a Python subprocess with its own JVM over
the same state folder. Each subprocess costs a JVM start, so each test starts one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakehouse.platform.catalog import (
    CATALOG_NAME,
    ROOT_CONF,
    TableCatalog,
    persistent_root,
    register_table,
)
from lakehouse.platform.jars import CATALOG_CLASS
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.platform.spark import catalog_conf

#: The second application: runs each statement of argv, prints one JSON line per statement.
OTHER_APP = """
import json, sys
from lakehouse.platform.settings import load_settings
from lakehouse.platform.spark import get_spark

spark = get_spark(load_settings(), app_name="other-app", register_tables=False)
for statement in sys.argv[1:]:
    try:
        rows = [[None if v is None else str(v) for v in r] for r in spark.sql(statement).collect()]
        print(json.dumps({"sql": statement, "rows": rows}), flush=True)
    except Exception as exc:
        print(json.dumps({"sql": statement, "error": str(exc)[:300]}), flush=True)
spark.stop()
"""


def other_app_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "LAKEHOUSE_HOME": str(settings.home),
            "LAKEHOUSE_SPARK_MASTER": "local[1]",
            "LAKEHOUSE_SHUFFLE_PARTITIONS": "1",
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        }
    )
    return env


def start_other_app(settings: Settings, statements: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", OTHER_APP, *statements],
        env=other_app_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def results(app: subprocess.Popen[str]) -> dict[str, list[list[str | None]]]:
    """Wait for the other application; its rows by statement (failing on any error)."""
    out, err = app.communicate(timeout=600)
    assert app.returncode == 0, err[-3000:]
    answers = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    failed = [a for a in answers if "error" in a]
    assert not failed, failed
    return {a["sql"]: a["rows"] for a in answers}


def tables_in(spark: SparkSession, schema: str) -> set[str]:
    """The schema's tables and views; ``SHOW TABLES`` also lists the session's temporary views
    (Feast's retrievals leave some in the shared session), which are no one else's."""
    rows = spark.sql(f"SHOW TABLES IN {schema}").collect()
    return {r["tableName"] for r in rows if not r["isTemporary"]}


def test_catalog_conf_names_the_catalog_root_and_the_three_part_name(tmp_path: Path) -> None:
    settings = load_settings("local", env={"LAKEHOUSE_HOME": str(tmp_path)})
    conf = catalog_conf(settings)
    assert conf["spark.sql.catalog.spark_catalog"] == CATALOG_CLASS
    assert conf[f"spark.sql.catalog.{CATALOG_NAME}"] == CATALOG_CLASS
    assert conf[ROOT_CONF] == settings.tables_root
    assert conf["spark.sql.extensions"].split(",")[0] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.sql.sources.default"] == "delta"


def test_what_one_application_creates_another_sees_and_back(
    spark: SparkSession, base_settings: Settings, tmp_path: Path
) -> None:
    root = TableCatalog(base_settings.tables_root)
    assert persistent_root(spark) == f"file:{root.root.rstrip('/')}"
    external = tmp_path / "external_events"

    spark.sql("CREATE SCHEMA pc_sandbox")
    spark.range(5).write.saveAsTable("pc_sandbox.saved")  # no format: Delta, as on Databricks
    spark.sql("CREATE TABLE pc_sandbox.typed (a INT) USING delta")
    spark.sql("INSERT INTO pc_sandbox.typed VALUES (1), (2)")
    spark.sql("CREATE TABLE pc_sandbox.ctas AS SELECT id * 10 AS x FROM pc_sandbox.saved")
    spark.sql("COMMENT ON TABLE pc_sandbox.typed IS 'typed by hand'")
    spark.sql("ALTER TABLE pc_sandbox.typed SET TBLPROPERTIES ('owner_team' = 'risk')")
    spark.sql("CREATE VIEW pc_sandbox.doubled AS SELECT a * 2 AS b FROM pc_sandbox.typed")
    spark.sql(f"CREATE TABLE pc_sandbox.events (e STRING) USING delta LOCATION '{external}'")
    spark.sql("INSERT INTO pc_sandbox.events VALUES ('x')")
    spark.sql("CREATE SCHEMA pc_doomed")
    spark.sql("CREATE TABLE pc_doomed.t (a INT)")

    # Managed tables live in the layout; the external one where it was put, named in the registry.
    tables = Path(root.root)
    assert (tables / "pc_sandbox" / "saved" / "_delta_log").is_dir()
    assert (tables / "pc_sandbox" / "ctas" / "_delta_log").is_dir()
    assert (external / "_delta_log").is_dir()
    assert not (tables / "pc_sandbox" / "events").exists()

    other = start_other_app(
        base_settings,
        [
            "SHOW SCHEMAS",
            "SHOW TABLES IN pc_sandbox",
            "SELECT count(*) FROM pc_sandbox.saved",
            "SELECT sum(x) FROM pc_sandbox.ctas",
            "SELECT b FROM pc_sandbox.doubled ORDER BY b",
            "SELECT e FROM pc_sandbox.events",
            f"SELECT count(*) FROM {CATALOG_NAME}.pc_sandbox.typed",
            f"SELECT b FROM {CATALOG_NAME}.pc_sandbox.doubled ORDER BY b",
            "DESCRIBE TABLE EXTENDED pc_sandbox.typed",
            "DESCRIBE TABLE EXTENDED pc_sandbox.events",
            # And the other way round: changes the first application must see.
            "CREATE TABLE pc_sandbox.from_other AS SELECT 7 AS seven",
            "CREATE VIEW pc_sandbox.tripled AS SELECT a * 3 AS c FROM pc_sandbox.typed",
            "DROP TABLE pc_sandbox.ctas",
            "ALTER TABLE pc_sandbox.saved SET TBLPROPERTIES ('stage' = 'gold')",
            "DROP SCHEMA pc_doomed CASCADE",
        ],
    )
    seen = results(other)

    assert {"pc_sandbox", "pc_doomed", "default"} <= {r[0] for r in seen["SHOW SCHEMAS"]}
    assert {r[1] for r in seen["SHOW TABLES IN pc_sandbox"]} == {
        "saved",
        "typed",
        "ctas",
        "doubled",
        "events",
    }
    assert seen["SELECT count(*) FROM pc_sandbox.saved"] == [["5"]]
    assert seen["SELECT sum(x) FROM pc_sandbox.ctas"] == [["100"]]
    assert seen["SELECT b FROM pc_sandbox.doubled ORDER BY b"] == [["2"], ["4"]]
    assert seen["SELECT e FROM pc_sandbox.events"] == [["x"]]
    assert seen[f"SELECT count(*) FROM {CATALOG_NAME}.pc_sandbox.typed"] == [["2"]]
    assert seen[f"SELECT b FROM {CATALOG_NAME}.pc_sandbox.doubled ORDER BY b"] == [["2"], ["4"]]
    typed = {r[0]: r[1] for r in seen["DESCRIBE TABLE EXTENDED pc_sandbox.typed"]}
    assert (typed["Table"], typed["Type"], typed["Comment"]) == (
        "typed",
        "MANAGED",
        "typed by hand",
    )
    assert "owner_team=risk" in typed["Table Properties"]
    assert typed["Location"].endswith("/tables/pc_sandbox/typed")
    events = {r[0]: r[1] for r in seen["DESCRIBE TABLE EXTENDED pc_sandbox.events"]}
    assert events["Type"] == "EXTERNAL"
    assert events["Location"].rstrip("/").endswith(str(external))

    # This application has been running all along: it sees the other's changes at once.
    assert spark.sql("SELECT seven FROM pc_sandbox.from_other").first()["seven"] == 7
    assert [r["c"] for r in spark.sql("SELECT c FROM pc_sandbox.tripled ORDER BY c").collect()] == [
        3,
        6,
    ]
    assert tables_in(spark, "pc_sandbox") == {
        "saved",
        "typed",
        "doubled",
        "events",
        "from_other",
        "tripled",
    }
    assert not spark.catalog.tableExists("pc_sandbox.ctas")
    assert not (tables / "pc_sandbox" / "ctas").exists()
    props = {
        r["key"]: r["value"] for r in spark.sql("SHOW TBLPROPERTIES pc_sandbox.saved").collect()
    }
    assert props["stage"] == "gold"
    assert not spark.catalog.databaseExists("pc_doomed")
    assert not (tables / "pc_doomed").exists()
    with pytest.raises(Exception, match="TABLE_OR_VIEW_NOT_FOUND"):
        spark.sql("SELECT * FROM pc_doomed.t")

    # A name dropped here may be created again, of another kind.
    spark.sql("DROP VIEW pc_sandbox.tripled")
    spark.sql("DROP TABLE pc_sandbox.events")
    assert (external / "_delta_log").is_dir()  # an external table's data stays
    spark.sql("CREATE TABLE pc_sandbox.tripled AS SELECT 1 AS one")
    assert spark.table("pc_sandbox.tripled").columns == ["one"]


def test_two_applications_create_tables_in_one_schema_at_once(
    spark: SparkSession, base_settings: Settings
) -> None:
    spark.sql("CREATE SCHEMA IF NOT EXISTS pc_shared")
    theirs = [f"theirs_{i}" for i in range(4)]
    other = start_other_app(
        base_settings,
        [
            *(f"CREATE TABLE pc_shared.{name} AS SELECT {i} AS n" for i, name in enumerate(theirs)),
            *(
                f"CREATE VIEW pc_shared.v_{name} AS SELECT n FROM pc_shared.{name}"
                for name in theirs
            ),
            "SHOW TABLES IN pc_shared",
        ],
    )
    ours: list[str] = []
    # Keep creating until the other application is done, so both create at the same time.
    while other.poll() is None or len(ours) < 3:
        name = f"ours_{len(ours)}"
        spark.sql(f"CREATE TABLE pc_shared.{name} AS SELECT {len(ours)} AS n")
        spark.sql(f"CREATE VIEW pc_shared.v_{name} AS SELECT n FROM pc_shared.{name}")
        ours.append(name)
        time.sleep(0.2)
    seen = results(other)

    expected = {*theirs, *ours, *(f"v_{n}" for n in (*theirs, *ours))}
    assert tables_in(spark, "pc_shared") == expected
    listed = {r[1] for r in seen["SHOW TABLES IN pc_shared"]}
    assert {*theirs, *(f"v_{n}" for n in theirs)} <= listed <= expected
    for i, name in enumerate(theirs):
        assert spark.sql(f"SELECT n FROM pc_shared.v_{name}").first()["n"] == i


def test_create_of_an_existing_name_fails_even_if_another_application_made_it(
    spark: SparkSession, base_settings: Settings
) -> None:
    """A stale cache cannot hide a table: CREATE VIEW and CREATE TABLE check the disk first."""
    spark.sql("CREATE SCHEMA IF NOT EXISTS pc_names")
    tables = Path(base_settings.tables_root)
    spark.range(1).write.format("delta").save(str(tables / "pc_names" / "written_by_path"))
    with pytest.raises(Exception, match=r"already exists|ALREADY_EXISTS"):
        spark.sql("CREATE VIEW pc_names.written_by_path AS SELECT 1 AS one")
    with pytest.raises(Exception, match=r"already exists|ALREADY_EXISTS"):
        spark.sql("CREATE TABLE pc_names.written_by_path (a INT)")
    assert spark.table("pc_names.written_by_path").count() == 1


def test_register_table_of_another_root_is_external_and_never_replaces_a_managed_table(
    spark: SparkSession, base_settings: Settings, catalog: TableCatalog
) -> None:
    spark.range(3).write.format("delta").save(catalog.path("silver.pc_elsewhere"))
    register_table(spark, catalog, "silver.pc_elsewhere")
    assert spark.table("silver.pc_elsewhere").count() == 3
    assert not TableCatalog(base_settings.tables_root).exists(spark, "silver.pc_elsewhere")

    spark.sql("CREATE TABLE silver.pc_managed AS SELECT 1 AS one")
    spark.range(9).write.format("delta").save(catalog.path("silver.pc_managed"))
    with pytest.raises(ValueError, match="managed table of the catalog"):
        register_table(spark, catalog, "silver.pc_managed")
    assert spark.table("silver.pc_managed").count() == 1
