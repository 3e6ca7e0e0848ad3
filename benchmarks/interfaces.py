"""Interfaces benchmark: the same small query through a classic session and Spark Connect.

    .venv/bin/python benchmarks/interfaces.py [--home DIR] [--queries 50]

In a temporary state folder (or ``--home``) it writes one small Delta table, starts
``lakehouse connect`` on a free port and measures, on the same table:

* session start: a classic ``get_spark()`` in a fresh Python process (JVM launch included) and
  a Spark Connect client (``SparkSession.builder.remote``) in a fresh Python process, each from
  the interpreter's start to the session's first answer; the median of ``--starts`` of each;
* query latency: ``--queries`` runs of one aggregate over the table (after warm-up), classic
  in this process's session and Connect through the server, p50 and p95 side by side;
* the same query through the SQL endpoint (``lakehouse sql-server``, PyHive), p50 and p95.

Targets: Connect's and the SQL endpoint's query p50 at most 1.5x the classic p50 each; a
Connect client starts at least
5x faster than a classic session. The server is stopped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import quiet, verdict

from lakehouse.platform import connect
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.platform.spark import get_spark

TABLE = "bench.interfaces"
QUERY = f"SELECT bucket, count(*) AS n, avg(value) AS mean FROM {TABLE} GROUP BY bucket"
QUERY_P50_RATIO_TARGET = 1.5
START_SPEEDUP_TARGET = 5.0

#: One fresh process: time from the interpreter's start to the session's first answer.
CLASSIC_START = """
import time, sys
started = float(sys.argv[1])
from lakehouse.platform.spark import get_spark
spark = get_spark(remote="", register_tables=False)
spark.sql("SELECT 1").collect()
print(time.time() - started)
spark.stop()
"""
CONNECT_START = """
import time, sys
started = float(sys.argv[1])
from pyspark.sql import SparkSession
spark = SparkSession.builder.remote(sys.argv[2]).getOrCreate()
spark.sql("SELECT 1").collect()
print(time.time() - started)
"""

#: The Connect client's query loop, in its own process: PySpark allows no remote session in a
#: process that runs a classic one. Prints the latencies as JSON.
CONNECT_QUERIES = """
import json, sys, time
from pyspark.sql import SparkSession
spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
query, count = sys.argv[2], int(sys.argv[3])
for _ in range(3):
    spark.sql(query).collect()
out = []
for _ in range(count):
    started = time.perf_counter()
    spark.sql(query).collect()
    out.append(time.perf_counter() - started)
print(json.dumps(out))
"""


def connect_query_seconds(url: str, query: str, runs: int, env: dict[str, str]) -> list[float]:
    """Seconds of each of ``runs`` runs of ``query`` by a Connect client (its own process)."""
    done = subprocess.run(
        [sys.executable, "-c", CONNECT_QUERIES, url, query, str(runs)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return [float(x) for x in json.loads(done.stdout.strip().splitlines()[-1])]


def thrift_query_seconds(settings: Settings, query: str, runs: int) -> list[float] | None:
    """Seconds of each of ``runs`` runs of ``query`` through the SQL endpoint (Thrift).

    Starts ``lakehouse sql-server`` over ``settings``' state folder on a free port, runs
    ``query`` through PyHive on one connection (as a BI tool keeps one open), rows fetched,
    after a warm-up, and stops the server. None when the server does not start (the report
    then leaves the line out and says why).
    """
    from pyhive import hive

    from lakehouse.platform import sql_endpoint

    port = _free_port()
    try:
        record = sql_endpoint.start_background(settings, "127.0.0.1", port, timeout=300.0)
    except sql_endpoint.StartFailed as exc:
        print(f"sql endpoint not measured: {exc}")
        return None
    try:
        with hive.connect(host="127.0.0.1", port=port, username="benchmark") as connection:
            cursor = connection.cursor()

            def run() -> None:
                cursor.execute(query)
                cursor.fetchall()

            return latencies(run, runs)
    finally:
        sql_endpoint.stop_pid(record.pid, timeout=60.0)
        sql_endpoint.clear_record(settings, record.pid)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def latencies(run: Callable[[], object], count: int, warmup: int = 3) -> list[float]:
    """Seconds of each of ``count`` calls of ``run``, after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    out = []
    for _ in range(count):
        started = time.perf_counter()
        run()
        out.append(time.perf_counter() - started)
    return out


def start_seconds(script: str, env: dict[str, str], *args: str) -> float:
    """Seconds from a fresh interpreter's start to its session's first answer."""
    done = subprocess.run(
        [sys.executable, "-c", script, str(time.time()), *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures with their targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="state folder (default: a temporary one)")
    parser.add_argument("--queries", type=int, default=50, help="measured runs of the query")
    parser.add_argument("--starts", type=int, default=3, help="session starts of each kind")
    args = parser.parse_args(argv)
    quiet()
    home = args.home or Path(tempfile.mkdtemp(prefix="lakehouse-bench-interfaces-"))
    os.environ["LAKEHOUSE_HOME"] = str(home)
    os.environ.pop("LAKEHOUSE_SPARK_REMOTE", None)
    settings = load_settings()
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}

    classic = get_spark(settings, app_name="bench-interfaces", remote="", register_tables=False)
    classic.sql("CREATE SCHEMA IF NOT EXISTS bench")
    classic.range(200_000).selectExpr(
        "id % 16 AS bucket", "cast(id AS double) AS value"
    ).write.mode("overwrite").saveAsTable(TABLE)

    port = _free_port()
    info = connect.start(settings, port=port)
    try:
        classic_q = latencies(lambda: classic.sql(QUERY).collect(), args.queries)
        connect_q = connect_query_seconds(info.url, QUERY, args.queries, env)
        thrift_q = thrift_query_seconds(settings, QUERY, args.queries)
        classic.stop()  # the start figures are measured on an otherwise idle machine
        classic_s = statistics.median(start_seconds(CLASSIC_START, env) for _ in range(args.starts))
        connect_s = statistics.median(
            start_seconds(CONNECT_START, env, info.url) for _ in range(args.starts)
        )
    finally:
        connect.stop(settings)

    rows = [("classic", classic_q), ("spark connect", connect_q)]
    if thrift_q:
        rows.append(("sql endpoint (thrift)", thrift_q))
    print(f"query: {QUERY}")
    print(f"{'interface':<24} {'p50 ms':>9} {'p95 ms':>9}")
    for name, values in rows:
        p50, p95 = percentile(values, 0.5) * 1e3, percentile(values, 0.95) * 1e3
        print(f"{name:<24} {p50:>9.1f} {p95:>9.1f}")
    print(f"{'session start':<24} classic {classic_s:.2f} s, connect client {connect_s:.2f} s")
    ratio = percentile(connect_q, 0.5) / percentile(classic_q, 0.5)
    print(verdict("connect p50 / classic p50", ratio, QUERY_P50_RATIO_TARGET, "x"))
    if thrift_q:
        ratio = percentile(thrift_q, 0.5) / percentile(classic_q, 0.5)
        print(verdict("sql endpoint p50 / classic p50", ratio, QUERY_P50_RATIO_TARGET, "x"))
    print(
        verdict(
            "classic start / connect client start",
            classic_s / connect_s,
            START_SPEEDUP_TARGET,
            "x",
            higher_is_better=True,
        )
    )
    print(json.dumps({"home": str(home), "log": info.log}))
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    raise SystemExit(main())
