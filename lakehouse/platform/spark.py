"""The one SparkSession factory.

Only jobs, notebooks, the CLI, benchmarks and ``tests/conftest.py`` call :func:`get_spark`;
every other function takes ``spark`` as a parameter.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from pyspark.sql import SparkSession

from lakehouse.platform import logs
from lakehouse.platform.catalog import CATALOG_NAME, ROOT_CONF, TableCatalog, register_all
from lakehouse.platform.jars import (
    CATALOG_CLASS,
    CATALOG_EXTENSION,
    LOCAL_FS_CLASS,
    LOG_STORE_CLASS,
    catalog_jar,
    local_fs_jar,
    object_store_jar_paths,
    resolve_jars,
    resolve_object_store_jars,
)
from lakehouse.platform.settings import ObjectStore, Settings, load_settings

log = logging.getLogger(__name__)

#: A Spark Connect URL (``sc://localhost:15002``) that makes :func:`get_spark` return a client
#: of that server, for notebooks and scripts; the platform's commands and jobs ignore it.
REMOTE_ENV = "LAKEHOUSE_SPARK_REMOTE"


def table_catalog(settings: Settings) -> TableCatalog:
    """The table catalog rooted where the settings keep tables."""
    return TableCatalog(settings.tables_root)


def spark_conf(settings: Settings, launches_jvm: bool = True) -> dict[str, str]:
    """The Spark configuration the platform needs, as a plain mapping.

    Delta's SQL extension and catalog, an in-memory session catalog (tables are registered from
    the folder layout, see :mod:`lakehouse.platform.catalog`; :func:`get_spark` puts the
    persistent catalog of :func:`catalog_conf` over it) and defaults for a small machine.
    ``launches_jvm`` is False under ``spark-submit``, where the driver's class path is fixed.

    Local paths avoid the process forks Hadoop makes without its native library: the raw local
    file system (no ``.crc`` sidecars, as on object stores), Delta's ``LocalLogStore`` and
    Spark's file-system checkpoint manager (``FileSystem`` renames instead of ``FileContext``
    ones, which fork ``readlink``; a commit once written is still never replaced), and, when
    this process launches the JVM with a local master, the platform's own local file system
    (:data:`lakehouse.platform.jars.LOCAL_FS_CLASS`), which sets permissions without forking
    ``chmod``. Executors and ``spark-submit`` drivers lack its jar and keep Hadoop's class.

    Tables on an object store (``tables_uri`` ``s3a://...``) add :func:`object_store_conf`.
    """
    conf = {
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.catalogImplementation": "in-memory",
        "spark.sql.warehouse.dir": str(settings.warehouse_dir),
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.default.parallelism": str(max(2, settings.shuffle_partitions)),
        "spark.ui.enabled": str(settings.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": settings.driver_memory,
        "spark.databricks.delta.snapshotPartitions": str(max(1, settings.shuffle_partitions)),
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.adaptive.enabled": "true",
        # Cached data (a micro-batch held while silver processes it) is stored uncompressed:
        # compressing a large batch takes longer than computing it, and memory is not short.
        "spark.sql.inMemoryColumnarStorage.compressed": "false",
        "spark.driver.extraJavaOptions": "-Dderby.system.home=" + str(settings.home),
        "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.file.impl": "org.apache.hadoop.fs.local.RawLocalFs",
        "spark.delta.logStore.file.impl": "io.delta.storage.LocalLogStore",
        "spark.sql.streaming.checkpointFileManagerClass": (
            "org.apache.spark.sql.execution.streaming.checkpointing."
            "FileSystemBasedCheckpointFileManager"
        ),
        **delta_write_conf(),
    }
    if settings.tables_on_object_store:
        conf.update(object_store_conf(settings.object_store))
    if settings.spark_master.startswith("local"):
        # Past 32 paths Spark lists a micro-batch's files with a job of one task per file;
        # locally those tasks share the driver's cores, so listing on the driver is cheaper.
        conf["spark.sql.sources.parallelPartitionDiscovery.threshold"] = "100000"
        jar = local_fs_jar() if launches_jvm else None
        if jar is not None:
            conf["spark.driver.extraClassPath"] = str(jar)
            conf["spark.hadoop.fs.file.impl"] = LOCAL_FS_CLASS
    return conf


DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"


#: S3A's provider of the keys in ``fs.s3a.access.key`` and ``fs.s3a.secret.key``.
SIMPLE_CREDENTIALS = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
#: The Spark setting that names Delta's LogStore for ``s3a://`` paths.
LOG_STORE_CONF = "spark.delta.logStore.s3a.impl"


def s3a_options(store: ObjectStore, bucket: str | None = None) -> dict[str, str]:
    """Hadoop's S3A options for ``store``: ``fs.s3a.<option>``, or per bucket with ``bucket``.

    Per-bucket options (``fs.s3a.bucket.<bucket>.<option>``) apply to that bucket alone, so one
    application can reach several stores. The keys come from the environment only
    (:class:`ObjectStore`); without them S3A keeps AWS's default chain of credential providers.
    """
    prefix = f"fs.s3a.bucket.{bucket}." if bucket else "fs.s3a."
    options = {
        "path.style.access": str(store.path_style_access).lower(),
        "endpoint.region": store.region,
        "connection.ssl.enabled": str(store.ssl_enabled).lower(),
        "create.conditional.enabled": str(store.conditional_writes).lower(),
        # Uploads are buffered in memory: S3A's default buffers on disk through Hadoop's
        # checksummed local file system, which the platform replaces with the raw one.
        "fast.upload.buffer": "bytebuffer",
    }
    if store.endpoint:
        options["endpoint"] = store.endpoint
    if store.has_credentials:
        options["aws.credentials.provider"] = SIMPLE_CREDENTIALS
        options["access.key"] = str(store.access_key)
        options["secret.key"] = str(store.secret_key)
    return {prefix + key: value for key, value in options.items()}


def object_store_conf(store: ObjectStore) -> dict[str, str]:
    """The Spark configuration of tables on an object store through ``s3a://``.

    S3A's options (:func:`s3a_options`) as ``spark.hadoop.*``, which reach the driver and the
    executors alike, and Delta's LogStore for ``s3a://`` paths. With conditional writes it is
    the platform's (:data:`lakehouse.platform.jars.LOG_STORE_CLASS`, whose jar
    :func:`lakehouse.platform.jars.resolve_object_store_jars` adds), which creates each commit
    only if absent, so two applications appending to one table at once both land, one after
    the other. Without them it is Delta's default, ``S3SingleDriverLogStore``, which serializes
    the commits of the application it runs in only: two applications writing one table at once
    can both write the same version, and one commit is lost.
    """
    conf = {f"spark.hadoop.{key}": value for key, value in s3a_options(store).items()}
    if store.conditional_writes:
        conf[LOG_STORE_CONF] = LOG_STORE_CLASS
    return conf


def catalog_conf(settings: Settings) -> dict[str, str]:
    """The persistent catalog over :func:`spark_conf`, for a JVM with its jar on the class path.

    Delta's session catalog extended so that the folder layout under ``settings.tables_root`` is
    the metastore of every application at once (see ``lakehouse/platform/jvm/FolderCatalog``):
    schemas, managed Delta tables at ``<root>/<schema>/<table>``, external tables and views in
    a registry of one file per object. The same catalog also answers to :data:`CATALOG_NAME`, so
    ``lakehouse.silver.customers`` resolves, and Delta is the default format of ``saveAsTable``
    and of ``CREATE TABLE`` without ``USING``, as on Databricks. Kept apart from
    :func:`spark_conf`, which Feast's own sessions copy without the platform's jars.
    """
    return {
        "spark.sql.extensions": f"{DELTA_EXTENSION},{CATALOG_EXTENSION}",
        "spark.sql.catalog.spark_catalog": CATALOG_CLASS,
        ROOT_CONF: settings.tables_root,
        f"spark.sql.catalog.{CATALOG_NAME}": CATALOG_CLASS,
        "spark.sql.sources.default": "delta",
    }


def delta_write_conf() -> dict[str, str]:
    """How the platform writes Delta tables: session defaults every new table inherits.

    * no optimized writes or auto compaction (small local tables; stated so that a cluster's
      defaults cannot turn them on behind the platform's back);
    * no checksum file (``<version>.crc``) after each commit: computing it costs about as much
      as writing a small table, and Delta reads a table the same without it;
    * commits to one table serialized within the application, so the entities the pipeline
      builds side by side append safely to the shared silver tables.
    """
    delta = "spark.databricks.delta."
    return {
        delta + "optimizeWrite.enabled": "false",
        delta + "writeChecksumFile.enabled": "false",
        delta + "autoCompact.enabled": "false",
        delta + "commitLock.enabled": "true",
    }


def _under_spark_submit() -> bool:
    """True when a JVM was already started by ``spark-submit`` for this Python process."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(
    settings: Settings | None = None,
    app_name: str = "lakehouse",
    conf: Mapping[str, str] | None = None,
    register_tables: bool = True,
    remote: str | None = None,
) -> SparkSession:
    """Build (or return the running) SparkSession with Delta configured.

    Args:
        settings: platform settings; defaults to :func:`load_settings`.
        app_name: the Spark application name.
        conf: extra Spark configuration, applied last.
        register_tables: register every table under the root so ``bronze.*``, ``silver.*``
            and ``gold.*`` resolve in SQL (with the persistent catalog, :func:`catalog_conf`,
            they resolve anyway: this only makes sure the three schemas exist).
        remote: a Spark Connect URL: return a client of that server (``lakehouse connect``),
            whose own conf has Delta and the catalog; only ``conf`` is applied to it. Default:
            :data:`REMOTE_ENV`, read only outside the platform's commands and jobs (a process
            that configured the platform's log file, or runs under ``spark-submit``), which
            keep a session of their own. ``""`` forces a session of this process.
    """
    remote = _remote_url(remote)
    if remote:
        # PySpark's Connect client reads ``__main__.__spec__`` when first imported; IPython's
        # ``%reset`` deletes it from a notebook's namespace, and the import then fails.
        main = sys.modules.get("__main__")
        if main is not None and not hasattr(main, "__spec__"):
            main.__spec__ = None
        client = SparkSession.builder.remote(remote)
        for key, value in (conf or {}).items():
            client = client.config(key, value)
        return client.getOrCreate()
    settings = settings or load_settings()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if settings.spark_master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no network interface needed
    settings.home.mkdir(parents=True, exist_ok=True)

    builder = SparkSession.builder.appName(app_name)
    launches_jvm = not _under_spark_submit()
    options = spark_conf(settings, launches_jvm=launches_jvm)
    if launches_jvm:
        # This process starts the JVM: it decides the master and the class path. Under
        # spark-submit both come from the command line (--master, --jars).
        builder = builder.master(settings.spark_master)
        jars = resolve_jars(object_store=False)
        catalog = catalog_jar()
        if catalog is not None:
            jars.append(catalog)
            options.update(catalog_conf(settings))
        _add_object_store_jars(settings, options, jars)
        options["spark.jars"] = ",".join(str(p) for p in jars)
    elif _catalog_on_class_path():
        options.update(catalog_conf(settings))
    for key, value in {**options, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    _check_delta(spark)
    if register_tables:
        register_all(spark, table_catalog(settings))
    return spark


def _add_object_store_jars(settings: Settings, options: dict[str, str], jars: list[Path]) -> None:
    """Add S3A's jars (and the platform's LogStore for S3) to a JVM this process starts.

    With tables on an object store they are resolved, downloaded when missing. A local JVM also
    gets S3A's jars whenever set-up resolved them, so any local session can reach ``s3a://``
    paths once their options are set (:func:`s3a_options`, per bucket at run time).

    A local master's executors run in the driver's JVM, so S3A's jars go on the driver's class
    path: jars of ``spark.jars`` are copied into each application's work folder, and the AWS
    SDK's bundle alone is several hundred megabytes. The LogStore extends Delta's classes, so
    it joins Delta's jars in ``spark.jars``.
    """
    local = settings.spark_master.startswith("local")
    if settings.tables_on_object_store:
        found = resolve_object_store_jars()
    elif local and all(p.is_file() for p in object_store_jar_paths()):
        found = object_store_jar_paths()
    else:
        return
    if LOG_STORE_CONF in options and not any(p.name.startswith("lakehouse-") for p in found):
        log.warning("the LogStore for S3 could not be built (it needs javac): Delta's is used")
        del options[LOG_STORE_CONF]
    jars.extend(p for p in found if p.name.startswith("lakehouse-"))
    maven = [p for p in found if not p.name.startswith("lakehouse-")]
    if not local:
        jars.extend(maven)
        return
    key = "spark.driver.extraClassPath"
    entries = [options[key]] if key in options else []
    options[key] = os.pathsep.join([*entries, *map(str, maven)])


def _remote_url(remote: str | None) -> str | None:
    """The Spark Connect URL :func:`get_spark` uses, or None for a session of this process."""
    if remote is not None:
        return remote or None
    if _under_spark_submit() or logs.current().file is not None:
        return None
    return os.environ.get(REMOTE_ENV) or None


def _catalog_on_class_path() -> bool:
    """Whether the JVM ``spark-submit`` started has the persistent catalog (``--jars``)."""
    from pyspark import SparkContext

    SparkContext._ensure_initialized()
    jvm = SparkContext._jvm
    if jvm is None:
        return False
    try:
        jvm.java.lang.Class.forName(
            CATALOG_CLASS, False, jvm.java.lang.Thread.currentThread().getContextClassLoader()
        )
    except Exception:  # py4j raises a generic Py4JJavaError
        return False
    return True


def _check_delta(spark: SparkSession) -> None:
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    try:
        jvm.java.lang.Class.forName(
            "io.delta.sql.DeltaSparkSessionExtension",
            True,
            jvm.java.lang.Thread.currentThread().getContextClassLoader(),
        )
    except Exception as exc:  # py4j raises a generic Py4JJavaError
        raise RuntimeError(
            "Delta Lake's classes are not on Spark's class path. Under spark-submit pass them "
            'with --jars "$(lakehouse jars)"; otherwise run `make setup`.'
        ) from exc
