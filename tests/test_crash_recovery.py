"""Crash anywhere, recover: ``lakehouse pipeline run`` killed with SIGKILL again and again.

One state folder receives a small seeded world in two drops. Runs of the pipeline are killed one
after another, each where the one before it was not, at named crash points (through
``LAKEHOUSE_KILL_AT``): on the first drop after a bronze micro-batch's commit and before its
checkpoint, after silver's first-fill append, after a gold table's build; on the second drop
after a silver MERGE, then once at a seeded moment after the run started its stages. A last run
completes. Every table must then hold what an uninterrupted run of the same drops writes: the
same rows (counted, and hashed independently of their order), leaving out only the times of
ingestion and building and the run ids; the expectation counts must match too, so every entity's
accounting balances.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import reduce
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from lakehouse.medallion.pipeline import run_pipeline
from lakehouse.medallion.silver import accounting
from lakehouse.platform.catalog import ENTITIES, SILVER_EXPECTATIONS, TableCatalog
from lakehouse.platform.crash import KILL_AT_ENV
from lakehouse.platform.settings import Settings
from lakehouse.simulation.generator import GeneratorConfig, generate

REPO = Path(__file__).resolve().parent.parent
CONFIG = GeneratorConfig(
    seed=11,
    customers=20,
    days=6,
    malformed_rate=0.05,
    duplicate_rate=0.05,
    key_duplicate_rate=0.05,
    late_rate=0.05,
)
DROPS = (range(0, 4), range(4, 6))
#: Named crash points per drop, killed in this order (each run is killed further on than the one
#: before it, so every point is reached: see the module's description).
NAMED_POINTS = (
    ("append:bronze.transactions_raw", "append:silver.transactions", "gold:gold.labels"),
    ("merge:silver.transactions",),
)
#: Columns that differ between any two runs: wall-clock times and run ids.
VOLATILE = frozenset({"_ingested_at", "created_at", "quarantined_at", "run_id", "evaluated_at"})
TIMEOUT = 600


def digests(
    spark: SparkSession, catalogs: dict[str, tuple[TableCatalog, Path]], names: list[str]
) -> dict[tuple[str, str], tuple[int, str]]:
    """(rows, order-independent hash of their content) per (catalog, table), in one Spark job.

    Volatile columns are left out; paths under each catalog's home and ingestion times inside
    raw records are masked. Expectation results are compared as counts per entity, expectation
    and action (how a run's rows split into micro-batches is not content). An empty table has
    no entry.
    """
    parts = []
    for side, (catalog, home) in catalogs.items():
        for name in names:
            df = catalog.read(spark, name)
            df = df.select([c for c in df.columns if c not in VOLATILE])
            for field in df.schema.fields:
                if isinstance(field.dataType, StringType):
                    masked = F.regexp_replace(F.col(field.name), re.escape(str(home)), "<home>")
                    masked = F.regexp_replace(masked, r'"_ingested_at":"[^"]*",?', "")
                    df = df.withColumn(field.name, masked)
            if name == SILVER_EXPECTATIONS:
                df = df.groupBy("entity", "expectation", "action").agg(
                    F.sum("passed").alias("passed"), F.sum("failed").alias("failed")
                )
            row_hash = F.xxhash64(*df.columns).cast("decimal(38,0)").alias("hash")
            parts.append(df.select(F.lit(side).alias("side"), F.lit(name).alias("table"), row_hash))
    rows = (
        reduce(DataFrame.unionByName, parts)
        .groupBy("side", "table")
        .agg(F.count(F.lit(1)).alias("rows"), F.sum("hash").alias("hash"))
        .collect()
    )
    return {(r["side"], r["table"]): (int(r["rows"]), str(r["hash"])) for r in rows}


def newest_log(home: Path) -> Path | None:
    logs = sorted((home / "logs").glob("pipeline-run-*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else None


class Run:
    """One ``lakehouse pipeline run`` in its own process group (the JVM dies with it)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("lakehouse")), "pipeline", "run"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def finish(self) -> tuple[int, str]:
        """Wait for the run; kill what is left of its group (an orphaned JVM)."""
        _, err = self.proc.communicate(timeout=TIMEOUT)
        self.kill_group()
        return self.proc.returncode, err

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def wait_started(home: Path, before: Path | None, run: Run) -> None:
    """Until the run's log file says its stages started."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and run.proc.poll() is None:
        log = newest_log(home)
        if log is not None and log != before and "starting" in log.read_text():
            return
        time.sleep(0.1)
    raise AssertionError("the run never started its stages")


@pytest.mark.slow
def test_a_pipeline_killed_anywhere_ends_as_an_uninterrupted_run(
    spark: SparkSession, base_settings: Settings, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    seed = int(os.environ.get("LAKEHOUSE_CRASH_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    context = f"seed {seed} (LAKEHOUSE_CRASH_SEED)"

    baseline = base_settings.with_home(tmp_path / "baseline")
    base_catalog = TableCatalog(baseline.tables_root)

    def uninterrupted() -> None:
        for days in DROPS:
            generate(baseline.landing_dir, CONFIG, days=days)
            run_pipeline(spark, baseline, base_catalog)

    # The uninterrupted runs, on this process's session, overlap the killed runs' JVM startups.
    with ThreadPoolExecutor(1) as pool:  # left only once the uninterrupted runs are done
        baseline_done = pool.submit(uninterrupted)
        crashed = base_settings.with_home(tmp_path / "crashed")
        env = {**subprocess_env, "LAKEHOUSE_HOME": str(crashed.home)}
        kills: list[str] = []
        for days, points in zip(DROPS, NAMED_POINTS, strict=True):
            generate(crashed.landing_dir, CONFIG, days=days)
            for point in points:
                code, err = Run({**env, KILL_AT_ENV: point}).finish()
                assert code == -signal.SIGKILL, f"{point} not reached (exit {code}): {err[-3000:]}"
                if kills:
                    assert "did not finish; taking its lock over" in err, err[-3000:]
                kills.append(point)

        # One kill at a seeded moment: the run resumes the MERGE killed above, then goes on to gold.
        before = newest_log(crashed.home)
        run = Run(env)
        wait_started(crashed.home, before, run)
        delay = rng.uniform(0.2, 3.0)
        time.sleep(delay)
        run.kill_group()
        code, err = run.finish()
        if code == -signal.SIGKILL:
            kills.append(f"{delay:.1f}s after the stages started")
        code, err = Run(env).finish()
        assert code == 0, f"{context}: the run after {kills} failed: {err[-3000:]}"
        assert len(kills) >= 5, f"{context}: only {kills} were killed"
        baseline_done.result()

    jvm = spark.sparkContext._jvm
    assert jvm is not None
    jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()  # other processes wrote these tables
    crashed_catalog = TableCatalog(crashed.tables_root)
    names = sorted(base_catalog.list_tables(spark))
    assert sorted(crashed_catalog.list_tables(spark)) == names
    hashed = digests(
        spark,
        {"crashed": (crashed_catalog, crashed.home), "baseline": (base_catalog, baseline.home)},
        names,
    )
    differ = [
        name for name in names if hashed.get(("crashed", name)) != hashed.get(("baseline", name))
    ]
    assert differ == [], f"{context}: {differ} differ after kills {kills}"
    unbalanced = [e for e in ENTITIES if not accounting(spark, crashed_catalog, e).balanced]
    assert unbalanced == [], f"{context}: {unbalanced} do not balance after kills {kills}"
