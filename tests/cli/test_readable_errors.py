"""A Spark analysis error from ``lakehouse sql`` is one line; ``--verbose`` shows everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: What the Java launcher prints at start (the options the tests set, the vector module Spark
#: loads): not the command's output.
JVM_NOTICES = ("NOTE: Picked up JDK_JAVA_OPTIONS", "WARNING: Using incubator modules")


def _sql(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    lakehouse = str(Path(sys.executable).with_name("lakehouse"))
    return subprocess.run(
        [lakehouse, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_an_unknown_table_is_one_line_with_its_class_and_sqlstate(
    subprocess_env: dict[str, str],
) -> None:
    done = _sql(["sql", "SELECT * FROM gold.nope"], subprocess_env)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if not line.startswith(JVM_NOTICES)]
    assert len(lines) == 1, done.stderr
    (line,) = lines
    assert line.startswith(
        "error: lakehouse sql failed: The table or view `gold`.`nope` cannot be found."
    )
    assert "[TABLE_OR_VIEW_NOT_FOUND, SQLSTATE 42P01] (details: " in line
    log_file = Path(line.rsplit("(details: ", 1)[1].rstrip(")"))
    assert "org.apache.spark.sql.AnalysisException" in log_file.read_text()
    assert done.stdout == ""

    verbose = _sql(["--verbose", "sql", "SELECT * FROM gold.nope"], subprocess_env)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert "org.apache.spark.sql.AnalysisException: [TABLE_OR_VIEW_NOT_FOUND]" in verbose.stderr
    assert verbose.stderr.rstrip().splitlines()[-1].startswith("error: lakehouse sql failed: ")
