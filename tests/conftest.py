"""One SparkSession for the whole test run, and per-test table roots."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakehouse.catalog import TableCatalog
from lakehouse.settings import Settings, load_settings
from lakehouse.spark import get_spark

REPO_ROOT = Path(__file__).resolve().parent.parent


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


@pytest.fixture
def subprocess_env(settings: Settings) -> dict[str, str]:
    """Environment for a subprocess that should share this test's state folder."""
    env = dict(os.environ)
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


def execute_notebook(name: str, env: dict[str, str]) -> str:
    """Execute ``notebooks/<name>`` top to bottom in a fresh kernel with ``env``.

    Fails on the first cell that raises; returns everything the cells printed.
    """
    import nbformat
    from nbclient import NotebookClient

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        nb = nbformat.read(REPO_ROOT / "notebooks" / name, as_version=4)
        client = NotebookClient(
            nb,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": str(REPO_ROOT / "notebooks")}},
        )
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
