"""Monitoring benchmark: a full refresh against hand-written Spark, and an incremental refresh.

    .venv/bin/python benchmarks/monitoring.py [--rows 1000000] [--days 30] [--repeats 1]

In a temporary home it writes an inference table of ``--rows`` predictions over ``--days`` days
(model version, score, label on four in five rows, six numeric inputs and two categorical ones)
and a baseline of a tenth of that size, and defines an inference monitor with daily windows and
the baseline. Then, in the same run:

* full refresh: :func:`lakehouse.monitoring.refresh.refresh_monitor` with empty metrics tables
  (every window computed and written);
* hand-written: the same statistics in plain Spark straight from the rows, collected to the
  driver (per day and column: count, nulls, zeros, distinct, min, max, mean, standard deviation,
  exact quantiles, frequent items; per day: ROC AUC, log loss, Brier, the confusion counts; per
  day and numeric column against the baseline: KS and Wasserstein from the two ECDFs, PSI and
  JS over the baseline's deciles; per day and categorical column: chi-squared, TV and
  L-infinity), without writing anything;
* incremental: one new day appended, then a refresh (only that day's windows recomputed).

Targets: full refresh at most 1.5x the hand-written aggregation; the incremental refresh of one
new day at most 15 % of the full refresh.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from datetime import UTC, datetime, timedelta

from _common import quiet, timed, verdict
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from lakehouse.monitoring.definition import MonitorInferenceLog, MonitorInfo, save_monitor
from lakehouse.monitoring.metrics import DECILES, QUANTILES
from lakehouse.monitoring.refresh import refresh_monitor
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.settings import load_settings
from lakehouse.platform.spark import get_spark

TABLE = "gold.bench_predictions"
BASELINE = "gold.bench_predictions_baseline"
NUMERIC = ("income", "amount_30d", "gambling_share", "credit_score", "loan_amount", "age")
CATEGORICAL = ("purpose", "region")
START = datetime(2026, 1, 5, tzinfo=UTC)


def synthetic(spark: SparkSession, rows: int, days: int, first_day: int = 0) -> DataFrame:
    """``rows`` predictions spread evenly over ``days`` days from ``first_day``."""
    per_day = max(1, rows // days)
    base = int((START + timedelta(days=first_day)).timestamp())
    r = F.rand(seed=first_day + 1)
    df = spark.range(rows).select(
        F.col("id").cast("string").alias("application_id"),
        F.timestamp_seconds(
            F.lit(base) + (F.col("id") / per_day).cast("long") * 86400 + (F.col("id") % 86400)
        ).alias("applied_at"),
        (F.lit(1) + (F.col("id") % 2)).cast("int").alias("model_version"),
        F.round(F.rand(seed=first_day + 2), 3).alias("score"),
        F.when(F.rand(seed=first_day + 3) < 0.8, (r < 0.15).cast("int")).alias("defaulted"),
        F.round(F.exp(F.randn(seed=first_day + 4) * 0.5 + 10.8), -2).alias("income"),
        F.round(F.exp(F.randn(seed=first_day + 5) + 6), 2).alias("amount_30d"),
        F.round(F.rand(seed=first_day + 6) * 0.2, 3).alias("gambling_share"),
        F.round(F.randn(seed=first_day + 7) * 60 + 640).cast("int").alias("credit_score"),
        F.round(F.exp(F.randn(seed=first_day + 8) * 0.6 + 9), -1).alias("loan_amount"),
        (F.rand(seed=first_day + 9) * 50 + 20).cast("int").alias("age"),
        F.element_at(
            F.array(*[F.lit(p) for p in ("car", "home", "cash", "education")]),
            (F.rand(seed=first_day + 10) * 4).cast("int") + 1,
        ).alias("purpose"),
        F.element_at(
            F.array(*[F.lit(p) for p in ("north", "south", "east", "west", "centre")]),
            (F.rand(seed=first_day + 11) * 5).cast("int") + 1,
        ).alias("region"),
    )
    return df


def monitor() -> MonitorInfo:
    return MonitorInfo(
        table_name=TABLE,
        output_schema_name="gold",
        inference_log=MonitorInferenceLog(
            timestamp_col="applied_at",
            granularities=["1 day"],
            model_id_col="model_version",
            prediction_col="score",
            label_col="defaulted",
        ),
        baseline_table_name=BASELINE,
    )


def hand_written(spark: SparkSession, catalog: TableCatalog) -> int:
    """The same statistics in plain Spark from the rows; returns how many result rows."""
    # Each row counts for its model version and for all versions together, as the monitor's.
    df = (
        catalog.read(spark, TABLE)
        .withColumn("day", F.to_date("applied_at"))
        .withColumn("m", F.explode(F.array(F.lit(None).cast("int"), F.col("model_version"))))
    )
    base = catalog.read(spark, BASELINE)
    results = 0
    numeric = [*NUMERIC, "score", "defaulted"]
    cells = F.explode(
        F.array(
            *[F.struct(F.lit(c).alias("c"), F.col(c).cast("double").alias("v")) for c in numeric]
        )
    )
    long = df.select("day", "m", cells.alias("x")).select("day", "m", "x.c", "x.v")
    levels = F.array(*[F.lit(q) for q in QUANTILES])
    profile = long.groupBy("day", "m", "c").agg(
        F.count("v"),
        F.sum(F.col("v").isNull().cast("int")),
        F.sum((F.col("v") == 0).cast("int")),
        F.countDistinct("v"),
        F.min("v"),
        F.max("v"),
        F.avg("v"),
        F.stddev("v"),
        F.percentile("v", levels),
    )
    results += len(profile.collect())
    cat_cells = F.explode(
        F.array(*[F.struct(F.lit(c).alias("c"), F.col(c).alias("v")) for c in CATEGORICAL])
    )
    cats = df.select("day", "m", cat_cells.alias("x")).select("day", "m", "x.c", "x.v")
    counts = cats.groupBy("day", "m", "c", "v").agg(F.count(F.lit(1)).alias("n"))
    rank = F.row_number().over(Window.partitionBy("day", "m", "c").orderBy(F.desc("n"), "v"))
    results += len(counts.withColumn("r", rank).where("r <= 10").collect())
    # Quality per day.
    labelled = df.where(F.col("defaulted").isNotNull())
    by_score = labelled.groupBy("day", "m", "score").agg(
        F.sum("defaulted").alias("pos"), F.sum(1 - F.col("defaulted")).alias("neg")
    )
    below = (
        Window.partitionBy("day", "m").orderBy("score").rowsBetween(Window.unboundedPreceding, -1)
    )
    auc = (
        by_score.withColumn("neg_below", F.coalesce(F.sum("neg").over(below), F.lit(0)))
        .groupBy("day", "m")
        .agg(
            F.try_divide(
                F.sum(F.col("pos") * (F.col("neg_below") + 0.5 * F.col("neg"))),
                F.sum("pos") * F.sum("neg"),
            ).alias("auc")
        )
    )
    p = F.least(F.greatest("score", F.lit(1e-15)), F.lit(1 - 1e-15))
    quality = labelled.groupBy("day", "m").agg(
        F.avg(-(F.col("defaulted") * F.log(p) + (1 - F.col("defaulted")) * F.log(1 - p))),
        F.avg((F.col("score") - F.col("defaulted")) ** 2),
        F.sum(((F.col("score") >= 0.5) & (F.col("defaulted") == 1)).cast("int")),
        F.sum(((F.col("score") >= 0.5) & (F.col("defaulted") == 0)).cast("int")),
    )
    results += len(quality.join(auc, ["day", "m"], "left").collect())
    # Drift against the baseline: ECDF distances, and binned distances on the deciles.
    base_long = base.select(cells.alias("x")).select("x.c", "x.v").where("v IS NOT NULL")
    target = long.where("v IS NOT NULL")
    both = target.select(
        "day", "m", "c", "v", F.lit(1).alias("t"), F.lit(0).alias("b")
    ).unionByName(
        spark.createDataFrame(
            df.select("day", "m").distinct().collect(), "day date, m int"
        ).crossJoin(base_long.select("c", "v", F.lit(0).alias("t"), F.lit(1).alias("b")))
    )
    values = both.groupBy("day", "m", "c", "v").agg(F.sum("t").alias("t"), F.sum("b").alias("b"))
    group = Window.partitionBy("day", "m", "c")
    run = group.orderBy("v").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    ecdf = values.select(
        "day",
        "m",
        "c",
        F.abs(
            F.sum("t").over(run) / F.sum("t").over(group)
            - F.sum("b").over(run) / F.sum("b").over(group)
        ).alias("d"),
        (F.lead("v").over(group.orderBy("v")) - F.col("v")).alias("gap"),
    )
    results += len(
        ecdf.groupBy("day", "m", "c").agg(F.max("d"), F.sum(F.col("d") * F.col("gap"))).collect()
    )
    deciles = base_long.groupBy("c").agg(
        F.percentile("v", F.array(*[F.lit(q) for q in DECILES])).alias("edges")
    )
    binned = (
        target.join(F.broadcast(deciles), "c")
        .select("day", "m", "c", F.size(F.filter("edges", lambda e: e < F.col("v"))).alias("bin"))
        .groupBy("day", "m", "c", "bin")
        .agg(F.count(F.lit(1)).alias("n"))
    )
    base_bins = (
        base_long.join(F.broadcast(deciles), "c")
        .select("c", F.size(F.filter("edges", lambda e: e < F.col("v"))).alias("bin"))
        .groupBy("c", "bin")
        .agg(F.count(F.lit(1)).alias("k"))
    )
    shares = binned.join(base_bins, ["c", "bin"], "full").select(
        "day",
        "m",
        "c",
        (F.col("n") / F.sum("n").over(Window.partitionBy("day", "m", "c"))).alias("p"),
        (F.col("k") / F.sum("k").over(Window.partitionBy("c"))).alias("q"),
    )
    psi = shares.groupBy("day", "m", "c").agg(
        F.sum((F.col("p") - F.col("q")) * F.log(F.col("p") / F.col("q"))),
        F.sum(F.abs(F.col("p") - F.col("q"))),
    )
    results += len(psi.collect())
    base_cats = (
        base.select(cat_cells.alias("x"))
        .select("x.c", "x.v")
        .groupBy("c", "v")
        .agg(F.count(F.lit(1)).alias("k"))
    )
    chi = (
        counts.join(base_cats, ["c", "v"], "full")
        .select(
            "day",
            "m",
            "c",
            (F.col("n") / F.sum("n").over(Window.partitionBy("day", "m", "c"))).alias("p"),
            (F.col("k") / F.sum("k").over(Window.partitionBy("c"))).alias("q"),
        )
        .groupBy("day", "m", "c")
        .agg(
            F.sum((F.col("p") - F.col("q")) ** 2 / (F.col("p") + F.col("q"))),
            F.sum(F.abs(F.col("p") - F.col("q"))) / 2,
            F.max(F.abs(F.col("p") - F.col("q"))),
        )
    )
    results += len(chi.collect())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    quiet()
    home = tempfile.mkdtemp(prefix="bench-monitoring-")
    settings = load_settings("local", env={"LAKEHOUSE_HOME": home})
    spark = get_spark(settings, app_name="bench-monitoring", register_tables=False)
    catalog = TableCatalog(settings.tables_root)
    try:
        synthetic(spark, args.rows, args.days).write.format("delta").save(catalog.path(TABLE))
        synthetic(spark, max(1, args.rows // 10), 1, first_day=-60).write.format("delta").save(
            catalog.path(BASELINE)
        )
        info = monitor()
        save_monitor(spark, catalog, info)
        hand_written(spark, catalog)  # warm-up: the JVM, the files in the page cache
        full, hand = [], []
        report = None
        for _ in range(args.repeats):
            for name in (info.profile_metrics_table_name, info.drift_metrics_table_name):
                shutil.rmtree(catalog.path(name), ignore_errors=True)
            report, seconds = timed(lambda: refresh_monitor(spark, catalog, info))
            full.append(seconds)
            hand.append(timed(lambda: hand_written(spark, catalog))[1])
        assert report is not None
        per_day = max(1, args.rows // args.days)
        synthetic(spark, per_day, 1, first_day=args.days).write.format("delta").mode("append").save(
            catalog.path(TABLE)
        )
        incremental, seconds = timed(lambda: refresh_monitor(spark, catalog, info))
        assert incremental.profile_windows == [
            ("1 day", int((START + timedelta(days=args.days)).timestamp()))
        ], incremental.profile_windows
        full_s, hand_s = statistics.median(full), statistics.median(hand)
        print(
            f"{args.rows:,} predictions over {args.days} days: full refresh {full_s:.1f} s "
            f"({report.profile_rows} profile rows, {report.drift_rows} drift rows), "
            f"hand-written {hand_s:.1f} s, incremental (one day) {seconds:.1f} s"
        )
        print(verdict("full refresh / hand-written Spark", full_s / hand_s, 1.5, "x"))
        print(verdict("incremental one day / full refresh", seconds / full_s, 0.15, "x"))
    finally:
        spark.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
