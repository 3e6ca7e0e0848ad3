"""Errors a person can read, logs in a file, a moved state folder, named crash points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession

from lakehouse.platform.crash import KILL_AT_ENV
from lakehouse.platform.errors import annotate, exit_code, on_target, one_line
from lakehouse.platform.home import EXIT_MOVED, MARKER, HomeMoved, check_home


# --- One line per error ----------------------------------------------------------------------
def test_a_spark_error_is_one_line_with_its_class_sqlstate_and_table(spark: SparkSession) -> None:
    with pytest.raises(PySparkException) as raised, on_target("silver.nope"):
        spark.sql("SELECT * FROM silver.nope")
    line = one_line(raised.value, "lakehouse sql")
    assert "\n" not in line
    assert line.startswith("lakehouse sql failed: silver.nope: The table or view `silver`.`nope`")
    assert line.endswith("[TABLE_OR_VIEW_NOT_FOUND, SQLSTATE 42P01]")
    assert "at org.apache" not in line


def test_the_innermost_spark_error_and_target_win(spark: SparkSession) -> None:
    try:
        try:
            spark.sql("SELECT 1/0 AS x").collect()
        except PySparkException as inner:
            annotate(inner, "gold.labels")
            raise RuntimeError("gold build failed\nwith more lines") from inner
    except RuntimeError as outer:
        line = one_line(outer)
    assert line.startswith("gold.labels: Division by zero")
    assert line.endswith("[DIVIDE_BY_ZERO, SQLSTATE 22012]")


def test_a_plain_error_keeps_its_message_and_a_library_error_its_class() -> None:
    assert one_line(FileNotFoundError("no table silver.x"), "score batch") == (
        "score batch failed: no table silver.x"
    )
    assert one_line(json.JSONDecodeError("Expecting value", "x", 0)).startswith(
        "JSONDecodeError: Expecting value"
    )


def test_a_long_message_is_cut() -> None:
    assert len(one_line(ValueError("x" * 5000))) <= 400


def test_exit_codes() -> None:
    assert exit_code(ValueError("x")) == 1
    assert exit_code(HomeMoved(Path("/a"), Path("/b"))) == EXIT_MOVED == 78


# --- Logs --------------------------------------------------------------------------------------
LOGGING_PROBE = """
import logging, sys
from pathlib import Path
from lakehouse.platform.errors import report
from lakehouse.platform.logs import configure_logging
setup = configure_logging(verbose=sys.argv[2] == "1", command="probe", home=Path(sys.argv[1]))
logging.getLogger("lakehouse.medallion.silver").info("progress line")
logging.getLogger("lakehouse.medallion.silver").warning("a warning")
logging.getLogger("py4j.clientserver").info("chatter")
try:
    raise ValueError("the one line")
except ValueError as exc:
    sys.exit(report(exc, "probe"))
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_the_terminal_gets_one_line_and_the_file_the_trace(tmp_path: Path, verbose: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOGGING_PROBE, str(tmp_path), "1" if verbose else "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    (log_file,) = (tmp_path / "logs").glob("probe-*.log")
    err = done.stderr.splitlines()
    assert err[-1] == f"error: probe failed: the one line (details: {log_file})"
    written = log_file.read_text()
    assert "INFO lakehouse.medallion.silver [MainThread]: progress line" in written
    assert "Traceback (most recent call last)" in written and "chatter" not in written
    assert any(line.endswith("WARNING lakehouse.medallion.silver: a warning") for line in err)
    if verbose:
        assert "Traceback (most recent call last)" in done.stderr
        assert any(line.endswith("progress line") for line in err)
    else:
        assert err == [err[0], err[-1]]  # the warning and the error, nothing else


# --- A moved state folder ----------------------------------------------------------------------
def test_a_moved_state_folder_is_refused_with_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "home"
    check_home(home)
    (home / "checkpoints" / "bronze").mkdir(parents=True)
    check_home(home)  # the same place: fine
    moved = tmp_path / "moved"
    home.rename(moved)
    with pytest.raises(HomeMoved) as refused:
        check_home(moved)
    message = str(refused.value)
    assert f"{moved} was created at {home}" in message
    assert "checkpoints (and the MLflow store) hold absolute paths" in message
    assert f"Move it back to {home}" in message and f"delete {moved}/checkpoints" in message


def test_a_moved_folder_without_checkpoints_is_marked_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    check_home(home)
    moved = tmp_path / "moved"
    home.rename(moved)
    check_home(moved)
    assert json.loads((moved / MARKER).read_text()) == {"path": str(moved.resolve())}


# --- Crash points ------------------------------------------------------------------------------
CRASH_PROBE = """
import sys
from lakehouse.platform.crash import crash_point
for name in ["append:bronze.customers_raw", "merge:silver.customers", "merge:silver.transactions"]:
    crash_point(name)
    print(name, flush=True)
"""


@pytest.mark.parametrize(
    ("spec", "survived"),
    [
        ("merge:silver.*", ["append:bronze.customers_raw"]),
        ("merge:silver.*#2", ["append:bronze.customers_raw", "merge:silver.customers"]),
        (
            "gold:*",
            ["append:bronze.customers_raw", "merge:silver.customers", "merge:silver.transactions"],
        ),
    ],
)
def test_a_crash_point_kills_the_process_where_named(spec: str, survived: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CRASH_PROBE],
        env={**os.environ, KILL_AT_ENV: spec},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.split() == survived
    assert done.returncode == (0 if len(survived) == 3 else -signal.SIGKILL)
