"""Pipeline benchmark: the platform against a minimal hand-written Spark job, at two scales.

    .venv/bin/python benchmarks/pipeline.py [--small-customers 2000] [--large-customers 20000]
        [--small-runs 5] [--large-runs 3] [--skip-demo-memory]

For each scale (about 10^5 and 10^6 transactions) it generates a world, runs the platform's
pipeline (bronze, silver, gold) and a minimal hand-written job doing the same reads and writes
in the same Spark session, in pairs (the one going first changes every pair), and prints the
wall times. The platform's overhead is the median of the pairs' ratios: the two runs of a pair
are seconds apart, so a machine whose load drifts over minutes (shared machines do) changes both
alike, where a ratio of medians would pair a quiet run with a busy one.
Then: how the time grows between the scales against how the data grows, Delta write throughput
against plain Parquet from the same session (the median of the ratios of paired writes of the
same cached ``silver.transactions``, both warm), and the peak memory of `lakehouse demo` (its
whole process tree, the JVM included). Every figure is printed against its target.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import peak_rss, timed, verdict
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.medallion.contracts import BUSINESS_KEYS, LANDING_FORMATS, RAW_FIELDS, SILVER_SCHEMAS
from lakehouse.medallion.gold import (
    customer_profile_features,
    customer_transaction_features,
    labels,
)
from lakehouse.medallion.pipeline import run_pipeline
from lakehouse.platform.catalog import ENTITIES, SILVER_TRANSACTIONS, TableCatalog
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.platform.spark import get_spark
from lakehouse.platform.tables import table_properties
from lakehouse.simulation.generator import GeneratorConfig, generate

REPO = Path(__file__).resolve().parent.parent


def handwritten(spark: SparkSession, landing: Path, out: Path) -> None:
    """The same reads and writes as the pipeline, written plainly: batch reads, overwrites."""
    silver: dict[str, DataFrame] = {}
    for entity in ENTITIES:
        schema = ", ".join(f"`{c}` STRING" for c in RAW_FIELDS[entity])
        reader = spark.read.schema(schema)
        src = str(landing / entity)
        raw = (
            reader.option("header", True).csv(src)
            if LANDING_FORMATS[entity] == "csv"
            else (reader.json(src))
        )
        bronze = raw.withColumn("_source_file", F.col("_metadata.file_path")).withColumn(
            "_ingested_at", F.current_timestamp()
        )
        bronze.write.format("delta").mode("overwrite").save(str(out / "bronze" / entity))
        typed = (
            spark.read.format("delta")
            .load(str(out / "bronze" / entity))
            .select(
                *[
                    F.col(f.name).try_cast(f.dataType).alias(f.name)
                    for f in SILVER_SCHEMAS[entity].fields
                ]
            )
        )
        keys = list(BUSINESS_KEYS[entity])
        required = [f.name for f in SILVER_SCHEMAS[entity].fields if not f.nullable]
        clean = typed.dropna(subset=required).dropDuplicates(keys)
        clean.write.format("delta").mode("overwrite").save(str(out / "silver" / entity))
        silver[entity] = spark.read.format("delta").load(str(out / "silver" / entity))
    now = datetime.now(UTC)
    gold = {
        "profile": customer_profile_features(silver["customers"], now),
        "transactions": customer_transaction_features(silver["transactions"], now),
        "labels": labels(silver["loan_applications"], silver["repayments"]),
    }
    for name, df in gold.items():
        df.write.format("delta").mode("overwrite").save(str(out / "gold" / name))


def one_scale(
    spark: SparkSession, base: Settings, customers: int, days: int, runs: int = 1
) -> dict[str, float]:
    """Generate, then run platform and baseline ``runs`` times each; rows, times and overhead.

    Each run starts from a fresh copy of the landing files (the platform needs empty tables and
    checkpoints); the one going first changes every run, so neither gains from its place.
    ``overhead`` is the median of the runs' platform / hand-written ratios.
    """
    root = Path(tempfile.mkdtemp(prefix=f"bench-{customers}-"))
    try:
        landing = root / "landing"
        report = generate(landing, GeneratorConfig(customers=customers, days=days))
        txns = report.entities["transactions"].lines
        print(f"  {customers} customers x {days} days: {txns} transaction lines")
        times: dict[str, list[float]] = {"hand-written": [], "platform": []}
        for run in range(runs):
            home = root / f"run-{run}"
            settings = base.with_home(home)
            catalog = TableCatalog(settings.tables_root)
            shutil.copytree(landing, settings.landing_dir)
            order = ["hand-written", "platform"]
            for name in order if run % 2 == 0 else order[::-1]:
                if name == "platform":
                    _, seconds = timed(lambda: run_pipeline(spark, settings, catalog))  # noqa: B023
                else:
                    plain = home / "plain"
                    _, seconds = timed(lambda: handwritten(spark, settings.landing_dir, plain))  # noqa: B023
                times[name].append(seconds)
            if run < runs - 1:
                shutil.rmtree(home, ignore_errors=True)
        platform_s = statistics.median(times["platform"])
        baseline_s = statistics.median(times["hand-written"])
        ratios = [p / b for p, b in zip(times["platform"], times["hand-written"], strict=True)]
        runs_text = "; ".join(
            f"{name} {', '.join(f'{t:.1f}s' for t in ts)}" for name, ts in times.items()
        )
        medians = f"platform {platform_s:.1f}s, hand-written {baseline_s:.1f}s"
        print(f"  {runs_text} (medians: {medians})")
        print(f"  platform / hand-written per run: {', '.join(f'{r:.2f}' for r in ratios)}")
        silver = catalog.read(spark, SILVER_TRANSACTIONS).cache()
        rows = silver.count()
        writes = write_times(silver, root / "writes")
        silver.unpersist()
        parquet_s = statistics.median(writes["parquet"])
        delta_s = statistics.median(writes["delta"])
        write_ratios = [p / d for p, d in zip(writes["parquet"], writes["delta"], strict=True)]
        print(f"  writes of {rows} rows: Parquet {parquet_s:.2f}s, Delta {delta_s:.2f}s (medians)")
        return {
            "transactions": float(txns),
            "platform_s": platform_s,
            "baseline_s": baseline_s,
            "overhead": statistics.median(ratios),
            "delta_vs_parquet": statistics.median(write_ratios),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write_times(df: DataFrame, out: Path, rounds: int = 15) -> dict[str, list[float]]:
    """Seconds of each of ``rounds`` writes of ``df`` as Parquet and into a Delta table.

    Each timed write puts the rows of ``df`` into a new dataset: a new Parquet folder, or a new
    Delta table created beforehand, untimed, as the platform creates its tables (schema and
    :func:`~lakehouse.platform.tables.table_properties`; a platform table is created once and then
    written to many times), with the session's configuration (the platform's). Both start warm
    (one write of each first, not counted), then take turns for ``rounds``, the one going first
    changing every round, so neither gains from its place on a busy machine. The i-th times of
    both lists were taken in the same round.
    """
    paths = (str(out / f"{i}") for i in itertools.count())
    spark = df.sparkSession

    def new_delta_table() -> str:
        path = next(paths)
        builder = DeltaTable.create(spark).location(path).addColumns(df.schema)
        for key, value in table_properties(df.schema).items():
            builder = builder.property(key, value)
        builder.execute()
        return path

    prepare = {"parquet": lambda: next(paths), "delta": new_delta_table}
    write = {
        "parquet": lambda path: df.write.parquet(path),
        "delta": lambda path: df.write.format("delta").mode("append").save(path),
    }
    for name in write:
        write[name](prepare[name]())
    times: dict[str, list[float]] = {name: [] for name in write}
    order = list(write)
    for _ in range(rounds):
        for name in order:
            target = prepare[name]()
            times[name].append(timed(lambda: write[name](target))[1])  # noqa: B023
        order.reverse()
    shutil.rmtree(out, ignore_errors=True)
    return times


def demo_peak_memory() -> float:
    """Peak RSS in GB of `lakehouse demo` on a fresh home, JVM included."""
    home = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    try:
        exe = Path(sys.executable).with_name("lakehouse")
        env = {**__import__("os").environ, "LAKEHOUSE_HOME": str(home)}
        proc = subprocess.Popen(
            [str(exe), "demo"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        with peak_rss(proc.pid) as peak:
            proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"lakehouse demo exited {proc.returncode}")
        return peak["bytes"] / 1e9
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run both scales and print every figure against its target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-customers", type=int, default=2000)
    parser.add_argument("--large-customers", type=int, default=20000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument(
        "--small-runs", type=int, default=5, help="pairs of platform and baseline runs, small scale"
    )
    parser.add_argument(
        "--large-runs", type=int, default=3, help="pairs of platform and baseline runs, large scale"
    )
    parser.add_argument("--skip-demo-memory", action="store_true")
    args = parser.parse_args(argv)

    base = load_settings()
    spark = get_spark(
        base.with_home(tempfile.mkdtemp(prefix="bench-session-")),
        app_name="bench-pipeline",
        register_tables=False,
    )
    started = time.perf_counter()
    try:
        # Warm-up: JIT and class loading must not count against the first scale.
        one_scale(spark, base, 200, 10)
        print("small scale")
        small = one_scale(spark, base, args.small_customers, args.days, args.small_runs)
        print("large scale")
        large = one_scale(spark, base, args.large_customers, args.days, args.large_runs)
    finally:
        spark.stop()
    lines = ["", "Figures"]
    for label, r in (("small", small), ("large", large)):
        lines.append(verdict(f"overhead vs hand-written ({label}, x)", r["overhead"], 1.15))
    data_growth = large["transactions"] / small["transactions"]
    time_growth = large["platform_s"] / small["platform_s"]
    lines.append(f"{'data growth small -> large (x)':<48} {data_growth:>10.2f}")
    lines.append(
        verdict(
            "time growth / data growth (<= 1: linear or better)", time_growth / data_growth, 1.0
        )
    )
    for label, r in (("small", small), ("large", large)):
        lines.append(
            verdict(
                f"Delta rows/s vs Parquet rows/s ({label})",
                r["delta_vs_parquet"],
                0.8,
                higher_is_better=True,
            )
        )
    if not args.skip_demo_memory:
        lines.append(verdict("peak memory of `lakehouse demo` (GB)", demo_peak_memory(), 6.0))
    lines.append(f"(benchmark took {time.perf_counter() - started:.0f}s)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
