"""One SparkSession for the whole test run, and per-test table roots."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.platform.spark import get_spark

REPO_ROOT = Path(__file__).resolve().parent.parent

#: The JIT, collector and code cache of every JVM the tests start (the shared session and every
#: child process). The suite is CPU-bound on two cores and its JVMs run many small Spark jobs for
#: a few minutes, where C2's compilations do not pay back and a serial collector saves the
#: concurrent GC threads; C1 alone reserves a code cache too small for the demo, hence 240m.
JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:ReservedCodeCacheSize=240m"

#: Spark's code generation off (SparkConf reads ``spark.*`` system properties): on a few hundred
#: rows compiling a query costs more than evaluating it row by row. The demo's larger world runs
#: faster compiled, so :func:`with_codegen` gives it Spark's default back.
NO_CODEGEN = "-Dspark.sql.codegen.wholeStage=false -Dspark.sql.codegen.factoryMode=NO_CODEGEN"

#: A ``JDK_JAVA_OPTIONS`` of the caller's own is left as it is.
os.environ.setdefault("JDK_JAVA_OPTIONS", f"{JVM_OPTIONS} {NO_CODEGEN}")

#: ``make test-unit`` sets this: the tests that need no JVM, with every way to start one blocked.
UNIT_TIER_ENV = "LAKEHOUSE_TEST_TIER"


def with_codegen(env: dict[str, str]) -> dict[str, str]:
    """``env`` with :data:`NO_CODEGEN` taken out of its ``JDK_JAVA_OPTIONS``."""
    options = env.get("JDK_JAVA_OPTIONS", "").replace(NO_CODEGEN, "").strip()
    return {**env, "JDK_JAVA_OPTIONS": options}


#: The modules that take longest, longest first; the others follow in file order. The suite runs
#: on two workers, each taking the next module when it is free (``--dist loadfile
#: --no-loadscope-reorder``), so the long ones start first and the short ones fill the end.
SLOW_MODULES_FIRST = (
    "test_workflows_ci.py",
    "test_acceptance.py",
    "test_crash_recovery.py",
    "test_endpoint_cli.py",
    "test_concurrency.py",
    "test_scoring.py",
    "test_monitoring.py",
    "test_alerts.py",
    "test_sources.py",
    "test_monitoring_gauges.py",
    "test_gauges.py",
    "test_feature_lookup.py",
    "test_server.py",
    "test_canary.py",
    "test_hostile.py",
    "test_conflicts.py",
    "test_pipeline.py",
    "test_byo_ingest.py",
    "test_shared_services.py",
    "test_object_store.py",
    "test_sql_endpoint.py",
    "test_local_cluster.py",
    "test_spark_connect.py",
    "test_persistent_catalog.py",
    "test_lifecycle.py",
    "test_features.py",
    "test_silver.py",
    "test_training.py",
    "test_registry.py",
    "test_gold.py",
    "test_cluster.py",
    "test_mlproject.py",
)


def _needs_jvm(item: pytest.Item) -> bool:
    """Whether a test starts a JVM: it uses the shared session, or runs Spark in a subprocess."""
    return "spark" in getattr(item, "fixturenames", ()) or any(
        item.get_closest_marker(name) for name in ("jvm", "slow", "service")
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that need a JVM, and order the modules by :data:`SLOW_MODULES_FIRST`."""
    for item in items:
        if _needs_jvm(item):
            item.add_marker(pytest.mark.jvm)
    rank = {name: i for i, name in enumerate(SLOW_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_configure(config: pytest.Config) -> None:
    """In the unit tier, put a ``java`` that refuses to start first on the PATH.

    Spark (in process or under spark-submit) starts its JVM through ``$JAVA_HOME/bin/java`` or
    ``java`` on the PATH, so a unit test that reaches a JVM fails instead of passing slowly.
    """
    if os.environ.get(UNIT_TIER_ENV) != "unit":
        return
    stub_dir = Path(tempfile.mkdtemp(prefix="lakehouse-no-jvm-"))
    java = stub_dir / "java"
    java.write_text(
        '#!/bin/sh\necho "the unit tier starts no JVM: mark the test jvm" >&2\nexit 1\n'
    )
    java.chmod(0o755)
    os.environ.pop("JAVA_HOME", None)
    os.environ["PATH"] = f"{stub_dir}{os.pathsep}{os.environ['PATH']}"


#: MLflow's own variables. ``mlflow.set_tracking_uri`` (so ``lakehouse.connect``) exports the
#: URI into this process's environment, and a subprocess meant to use its own state folder
#: would inherit another test's tracking store with it.
MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME")


@contextmanager
def environ(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``env`` inside the block (less MLflow's URIs that ``env``
    does not set, see :func:`platform_env`), then restored."""
    saved = dict(os.environ)
    for name in MLFLOW_ENV:
        os.environ.pop(name, None)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The root folder of the shared session's own state."""
    return tmp_path_factory.mktemp("lakehouse-home")


@pytest.fixture(scope="session")
def base_settings(session_home: Path) -> Settings:
    """Settings for tests: local[2], two shuffle partitions, all state under a temp folder."""
    env = {
        "LAKEHOUSE_HOME": str(session_home),
        "LAKEHOUSE_SPARK_MASTER": "local[2]",
        "LAKEHOUSE_SHUFFLE_PARTITIONS": "2",
    }
    return load_settings("local", env=env)


@pytest.fixture(scope="session")
def spark(base_settings: Settings) -> Iterator[SparkSession]:
    """The one SparkSession of the test run (Delta on, UI off)."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = get_spark(
        base_settings,
        app_name="lakehouse-tests",
        conf={"spark.driver.memory": "2g"},
        register_tables=False,
    )
    yield session
    session.stop()


@pytest.fixture
def settings(base_settings: Settings, tmp_path: Path) -> Settings:
    """Settings rooted at this test's own temporary folder."""
    return base_settings.with_home(tmp_path / "home")


@pytest.fixture
def catalog(settings: Settings) -> TableCatalog:
    """A table catalog rooted at this test's own temporary folder."""
    return TableCatalog(settings.tables_root)


def written_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, write: Callable[[TableCatalog], None]
) -> TableCatalog:
    """A catalog in a new temporary folder ``name`` holding the tables ``write`` writes there.

    For a module-scoped fixture whose tables the module's tests then copy (:func:`copy_tables`).
    """
    catalog = TableCatalog(str(tmp_path_factory.mktemp(name)))
    write(catalog)
    return catalog


def copy_tables(source: TableCatalog, target: TableCatalog, names: list[str]) -> None:
    """Copy the Delta tables ``names`` from ``source`` to ``target``, folder by folder.

    A Delta log names its data files relative to the table's folder, so each copy is a table
    of its own, at the same versions and with the same history as the original. Tests that
    start from the same hand-built tables write them once per module and copy them per test
    (milliseconds against a few seconds of Delta commits).
    """
    for name in names:
        shutil.copytree(source.path(name), target.path(name))


def platform_env(**extra: str) -> dict[str, str]:
    """This process's environment without MLflow's URIs, plus ``extra``: for a subprocess whose
    tracking store follows its ``LAKEHOUSE_HOME``."""
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_ENV}
    env.update(extra)
    return env


@pytest.fixture
def subprocess_env(settings: Settings) -> dict[str, str]:
    """Environment for a subprocess that should share this test's state folder."""
    env = platform_env()
    env.update(
        {
            "LAKEHOUSE_HOME": str(settings.home),
            "LAKEHOUSE_SPARK_MASTER": "local[1]",
            "LAKEHOUSE_SHUFFLE_PARTITIONS": "2",
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        }
    )
    return env


class NotebookKernel:
    """One Jupyter kernel in which notebooks run one after another, top to bottom.

    Every notebook starts with ``%reset -f``: the names the one before defined (its imports,
    ``spark``, ``settings``) are gone, so a notebook that leans on another's fails here as in a
    fresh kernel. What stays is the process: imported modules and the JVM, in which the next
    notebook's ``get_spark`` starts its own SparkContext after the last one's ``spark.stop()``.
    That spares each notebook after the first a kernel, a JVM and the imports (MLflow, Feast).
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._km: Any = None

    def run(self, name: str) -> str:
        """Execute ``notebooks/<name>``; fail on the first cell that raises; return its prints."""
        import nbformat
        from nbclient import NotebookClient

        nb = nbformat.read(REPO_ROOT / "notebooks" / name, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))
        client = NotebookClient(
            nb,
            km=self._km,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": str(REPO_ROOT / "notebooks")}},
        )
        try:
            with environ(self.env):  # the kernel, started by the first notebook, inherits it
                client.execute(cleanup_kc=False)
        finally:
            self._km = client.km
            if client.kc is not None:
                client.kc.stop_channels()
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")

    def close(self) -> None:
        """Shut the kernel down (and the JVM it started)."""
        from nbclient.util import run_sync

        if self._km is not None and self._km.has_kernel:
            run_sync(self._km.shutdown_kernel)(now=False)
            run_sync(self._km.cleanup_resources)()
        self._km = None
