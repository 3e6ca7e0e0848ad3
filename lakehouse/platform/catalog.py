"""The catalog of table names and where each table lives.

The platform's tables are ``<schema>.<table>`` with the schemas ``bronze``, ``silver`` and
``gold``. Each table is a Delta table at ``<tables_root>/<schema>/<table>``. The folder layout
*is* the metastore, with no shared metastore process and no lock (Spark's embedded Derby
metastore admits one process at a time):

* with the persistent catalog (``lakehouse/platform/jvm``, configured by
  :func:`lakehouse.platform.spark.catalog_conf`), every Spark application's session catalog
  reads the layout on each lookup and writes it on each change, so any schema, table or view a
  user creates, alters or drops in one application is seen by every other at once;
* without it (a JVM lacking its jar), each application registers the tables it finds there in
  its own in-memory catalog when its session starts (:func:`register_all`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession

from lakehouse.platform.jars import CATALOG_CLASS

log = logging.getLogger(__name__)

SCHEMAS: tuple[str, ...] = ("bronze", "silver", "gold")

#: The catalog name of three-part names (``lakehouse.silver.customers``), as in Unity Catalog.
CATALOG_NAME = "lakehouse"
#: The Spark setting holding the persistent catalog's root.
ROOT_CONF = "spark.sql.catalog.spark_catalog.root"

# Bronze: raw records as they landed, plus ingest metadata.
BRONZE_CUSTOMERS = "bronze.customers_raw"
BRONZE_TRANSACTIONS = "bronze.transactions_raw"
BRONZE_LOAN_APPLICATIONS = "bronze.loan_applications_raw"
BRONZE_REPAYMENTS = "bronze.repayments_raw"

# Silver: typed, conformed, one row per business key.
SILVER_CUSTOMERS = "silver.customers"
SILVER_TRANSACTIONS = "silver.transactions"
SILVER_LOAN_APPLICATIONS = "silver.loan_applications"
SILVER_REPAYMENTS = "silver.repayments"
SILVER_QUARANTINE = "silver.quarantine"
SILVER_EXPECTATIONS = "silver.expectation_results"

# Gold: point-in-time ready features, labels, predictions.
GOLD_CUSTOMER_PROFILE = "gold.customer_profile_features"
GOLD_CUSTOMER_TRANSACTIONS = "gold.customer_transaction_features"
GOLD_LABELS = "gold.labels"
GOLD_PREDICTIONS = "gold.predictions"
GOLD_PREDICTION_OUTCOMES = "gold.prediction_outcomes"
GOLD_MODEL_GATE_AUDIT = "gold.model_gate_audit"

# Gold, from serving: every answered request per served entity, and every decision on an endpoint.
GOLD_INFERENCE_LOG = "gold.inference_log"
GOLD_SERVING_DECISIONS = "gold.serving_decisions"

#: The entities of the raw world, in the order the pipeline processes them.
ENTITIES: tuple[str, ...] = ("customers", "transactions", "loan_applications", "repayments")


def split_name(name: str) -> tuple[str, str]:
    """``"silver.customers"`` -> ``("silver", "customers")``; rejects anything else."""
    parts = name.split(".")
    if len(parts) != 2 or not all(parts) or parts[0] not in SCHEMAS:
        raise ValueError(f"table name must be <{'|'.join(SCHEMAS)}>.<table>, got {name!r}")
    return parts[0], parts[1]


@dataclass(frozen=True)
class TableCatalog:
    """Maps table names to Delta locations under one root (a folder or an object-store URI)."""

    root: str

    def path(self, name: str) -> str:
        """The Delta location of ``name``."""
        schema, table = split_name(name)
        return f"{self.root.rstrip('/')}/{schema}/{table}"

    def exists(self, spark: SparkSession, name: str) -> bool:
        """Whether a Delta table exists at the location of ``name``.

        Asks the file system for the ``_delta_log`` folder rather than Delta's cached log, so
        a table another application created since this one last looked is seen.
        """
        if is_remote(spark):
            return _remote_is_delta(spark, self.path(name))
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        log_dir = jvm.org.apache.hadoop.fs.Path(f"{self.path(name)}/_delta_log")
        fs = log_dir.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        return bool(fs.exists(log_dir))

    def read(self, spark: SparkSession, name: str, version: int | None = None) -> DataFrame:
        """Read ``name`` (optionally as of a Delta version) by its location."""
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.path(name))

    def version(self, spark: SparkSession, name: str) -> int:
        """The current Delta version of ``name``."""
        from delta.tables import DeltaTable

        row = DeltaTable.forPath(spark, self.path(name)).history(1).select("version").first()
        return int(row["version"]) if row else -1

    def list_tables(self, spark: SparkSession) -> list[str]:
        """The names of the Delta tables present under the root, sorted."""
        if is_remote(spark):
            return _remote_tables(spark)
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
        found: list[str] = []
        for schema in SCHEMAS:
            base = jvm.org.apache.hadoop.fs.Path(f"{self.root.rstrip('/')}/{schema}")
            fs = base.getFileSystem(hadoop_conf)
            if not fs.exists(base):
                continue
            for status in fs.listStatus(base):
                if not status.isDirectory():
                    continue
                table_dir = status.getPath()
                if fs.exists(jvm.org.apache.hadoop.fs.Path(table_dir, "_delta_log")):
                    found.append(f"{schema}.{table_dir.getName()}")
        return sorted(found)


def is_remote(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect client: no JVM in this process, so the platform's
    helpers ask the server in SQL instead of calling Hadoop's file system through py4j."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _remote_is_delta(spark: SparkSession, path: str) -> bool:
    """Whether the server finds a Delta table at ``path``."""
    from pyspark.errors import AnalysisException

    try:
        spark.sql(f"DESCRIBE DETAIL delta.`{path}`").collect()
    except AnalysisException:
        return False
    return True


def _remote_tables(spark: SparkSession) -> list[str]:
    """The platform schemas' managed tables, as the server's persistent catalog lists them (a
    managed table is a Delta folder under the root, as :meth:`TableCatalog.list_tables` finds)."""
    found = [
        f"{schema}.{table.name}"
        for schema in SCHEMAS
        if spark.catalog.databaseExists(schema)
        for table in spark.catalog.listTables(schema)
        if not table.isTemporary and table.tableType == "MANAGED"
    ]
    return sorted(found)


def persistent_root(spark: SparkSession) -> str | None:
    """The root of the session's persistent catalog, or None when it keeps Delta's in memory.

    Asks the catalog itself: its root is fixed when the session first uses it, and a later
    ``getOrCreate`` with other settings changes :data:`ROOT_CONF` but not the catalog.
    """
    if spark.conf.get("spark.sql.catalog.spark_catalog", None) != CATALOG_CLASS:
        return None
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    root = jvm.io.lakehouse.catalog.LakehouseCatalog.rootOf(spark._jsparkSession)
    return str(root).rstrip("/") if root else None


def _same_root(a: str, b: str) -> bool:
    """Whether two roots (folders, ``file:`` URIs or other URIs) name the same place."""

    def normalized(root: str) -> str:
        return (urlparse(root).path if root.startswith("file:") else root).rstrip("/")

    return normalized(a) == normalized(b)


def register_table(spark: SparkSession, catalog: TableCatalog, name: str) -> None:
    """Make ``name`` resolve in this Spark application's SQL catalog.

    Idempotent: a name already registered at the same location is left alone; one registered
    at another location (another root) is re-pointed. Under the persistent catalog a table of
    its own root resolves already; one of another root is registered as an external table,
    which every application then sees, and a managed table of the catalog is never replaced.
    """
    schema, table = split_name(name)
    location = catalog.path(name)
    registered: dict[str, str] = spark.__dict__.setdefault("_lakehouse_registered", {})
    if registered.get(name) == location:
        return
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {schema}")
    root = persistent_root(spark)
    if root is not None:
        if _same_root(root, catalog.root):
            registered[name] = location
            return
        if TableCatalog(root).exists(spark, name):
            raise ValueError(
                f"{name} is a managed table of the catalog at {root}; "
                f"not re-pointing it to {location}"
            )
    if name in registered or spark.catalog.tableExists(name):
        spark.sql(f"DROP TABLE IF EXISTS {schema}.{table}")
    spark.sql(f"CREATE TABLE {name} USING delta LOCATION '{location}'")
    registered[name] = location


def register_all(spark: SparkSession, catalog: TableCatalog) -> list[str]:
    """Register every Delta table found under the catalog's root; return their names."""
    for schema in SCHEMAS:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {schema}")
    names = catalog.list_tables(spark)
    for name in names:
        register_table(spark, catalog, name)
    log.debug("registered %d tables under %s", len(names), catalog.root)
    return names
