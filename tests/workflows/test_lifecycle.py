"""The README's demo command end to end, then the notebooks that need its whole lifecycle.

`lakehouse demo` runs in its own process on its default world: data, bronze, silver, gold, the
feature store, training with the gate, batch and streaming scoring, the inference monitor. The
notebooks then run against what it built, in their order (explore, feature store, training,
scoring, serving, monitoring), in one kernel.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, NotebookKernel, platform_env, with_codegen

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("demo-home")
    # The demo's data is large enough for compiled queries to pay back.
    env = {
        **with_codegen(platform_env()),
        "LAKEHOUSE_HOME": str(home),
        "LAKEHOUSE_SHUFFLE_PARTITIONS": "2",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    exe = Path(sys.executable).with_name("lakehouse")
    done = subprocess.run(
        [str(exe), "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return home, done.stdout


@pytest.fixture(scope="module")
def kernel(demo_home: tuple[Path, str]) -> Iterator[NotebookKernel]:
    """The kernel the notebooks share, its state under the demo's home."""
    env = {
        "LAKEHOUSE_HOME": str(demo_home[0]),
        "LAKEHOUSE_SPARK_MASTER": "local[1]",
        "LAKEHOUSE_SHUFFLE_PARTITIONS": "2",
        "PYSPARK_PYTHON": sys.executable,
    }
    notebooks = NotebookKernel(env)
    yield notebooks
    notebooks.close()


def test_demo_runs_every_step_and_prints_a_summary(demo_home: tuple[Path, str]) -> None:
    _, out = demo_home
    steps = ("data", "pipeline", "feature store", "training", "scoring", "monitoring", "summary")
    for step in steps:
        assert f"/7] {step}:" in out, step
    assert "customer_transactions_fv: 12 features" in out
    assert "(aliases: champion; stage: Production; gate: promoted)" in out
    assert "roc_auc" in out
    assert "gold.monitored_predictions: " in out and "windows recomputed" in out
    assert "largest input PSI" in out
    for table in ("silver.quarantine", "gold.labels", "gold.predictions"):
        assert table in out.split("Quarantine")[0], table
    assert "Done in" in out


def test_explore_notebook(kernel: NotebookKernel) -> None:
    text = kernel.run("01_explore_lakehouse.ipynb")
    assert "session: classic" in text
    assert "rows at version 0" in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_explore_notebook_through_spark_connect(demo_home: tuple[Path, str]) -> None:
    """The same notebook, unchanged, in a kernel of its own whose session is a client of a
    Spark Connect server over the demo's state folder: one setting apart."""
    home, _ = demo_home
    env = platform_env(LAKEHOUSE_HOME=str(home))
    exe = str(Path(sys.executable).with_name("lakehouse"))
    port = _free_port()
    started = subprocess.run(
        [exe, "connect", "start", "--port", str(port)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-3000:]
    notebooks = NotebookKernel(
        {
            "LAKEHOUSE_HOME": str(home),
            "LAKEHOUSE_SPARK_REMOTE": f"sc://localhost:{port}",
            "PYSPARK_PYTHON": sys.executable,
        }
    )
    try:
        text = notebooks.run("01_explore_lakehouse.ipynb")
    finally:
        notebooks.close()
        stopped = subprocess.run(
            [exe, "connect", "stop"], env=env, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
    assert "session: Spark Connect" in text
    assert "rows at version 0" in text
    assert stopped.returncode == 0, stopped.stderr[-3000:]


def test_feature_store_notebook(kernel: NotebookKernel) -> None:
    text = kernel.run("02_feature_store.ipynb")
    assert "feature service: credit_risk_v1" in text


def test_training_notebook(kernel: NotebookKernel) -> None:
    text = kernel.run("03_train_and_register.ipynb")
    assert "gate:" in text


def test_scoring_notebook(kernel: NotebookKernel) -> None:
    text = kernel.run("04_scoring.ipynb")
    assert "champion: credit_risk_model version" in text


def test_serving_notebook(kernel: NotebookKernel) -> None:
    text = kernel.run("05_serving.ipynb")
    assert "canary share" in text
    routes = text.split("routes now:")[1].splitlines()[0]
    assert "'champion'" in routes and "'traffic_percentage': 100" in routes, routes
    assert "inference log:" in text


def test_monitoring_notebook(kernel: NotebookKernel) -> None:
    text = kernel.run("06_monitoring.ipynb")
    assert "new alerts" in text
    assert "daily drift rows plotted" in text
