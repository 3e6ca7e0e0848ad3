"""Feature store benchmark: historical retrieval, online reads and materialization.

    .venv/bin/python benchmarks/features.py [--customers 2000] [--days 120] [--calls 1000]

In a temporary home it generates a world that ends yesterday (so the online store is current),
runs the pipeline (bronze, silver, gold), applies the Feast repository and materializes the
online store, then prints, each against its target and a baseline measured in the same run:

* historical retrieval: :func:`lakehouse.features.build_training_set` (Feast's point-in-time
  join on the Spark offline store, down to the pandas training frame) against a hand-written
  point-in-time join over the same Delta tables in the same session (per view: the latest row at
  or before the application time and within the view's TTL, by a join and ``row_number``),
  also down to pandas. One warm-up each, then the median of ``--repeats`` interleaved runs.
  The two frames are compared value by value. Target: <= 1.5x.
* online retrieval of one customer, ``--calls`` calls each, p50 and p99: Feast's
  ``get_online_features`` and :class:`lakehouse.features.OnlineFeatureReader` against a direct
  ``sqlite3`` primary-key read of the same rows in Feast's two tables (entity key serialized
  once, values left encoded). Target: the reader's p50 <= 4x the direct read's. The ratio
  against a read of one table (half the rows) is printed too.
* materialization: :func:`lakehouse.features.materialize` into a fresh online store over the
  same gold tables, rows (entity rows, as Feast counts them) per second; Feast's own per-row
  writer (``bulk=False``) on the same window, and a plain Spark read of the same rows (latest
  per entity within the TTL, into Arrow) to show the share of the read. Target: >= 50,000
  rows/s.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import build_world, muted, quiet, timed, verdict
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from lakehouse import features
from lakehouse.catalog import GOLD_LABELS, TableCatalog
from lakehouse.settings import Settings, load_settings
from lakehouse.spark import get_spark

FLOAT_TOLERANCE = 1e-9


# --- Historical retrieval --------------------------------------------------------------------
def view_specs(settings: Settings) -> list[tuple[str, list[str], timedelta]]:
    """(gold table, feature columns, TTL) of each view of the service, from the registry."""
    store = features.feature_store(settings)
    service = store.get_feature_service(features.FEATURE_SERVICE)
    specs = []
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        assert view.batch_source is not None
        table = view.batch_source.tags[features.TABLE_TAG]
        specs.append((table, [f.name for f in projection.features], view.ttl or timedelta(0)))
    return specs


def handwritten_training_frame(
    spark: SparkSession, catalog: TableCatalog, specs: list[tuple[str, list[str], timedelta]]
) -> pd.DataFrame:
    """The training frame by a plain point-in-time join: join, window, latest row per view."""
    labels = catalog.read(spark, GOLD_LABELS).select(*features.LABEL_COLUMNS)
    keys = labels.select(
        "application_id",
        F.col("customer_id").alias("_cid"),
        F.col("application_timestamp").alias("_at"),
    )
    out = labels
    columns: list[str] = []
    latest_first = Window.partitionBy("application_id").orderBy(
        F.col("event_timestamp").desc(), F.col("created_at").desc()
    )
    for table, cols, ttl in specs:
        rows = catalog.read(spark, table)
        condition = (
            (keys["_cid"] == rows["customer_id"])
            & (rows["event_timestamp"] <= keys["_at"])
            & (
                rows["event_timestamp"]
                >= keys["_at"] - F.expr(f"INTERVAL {int(ttl.total_seconds())} SECONDS")
            )
        )
        latest = (
            keys.join(rows, condition, "inner")
            .withColumn("_rn", F.row_number().over(latest_first))
            .where("_rn = 1")
            .select("application_id", *cols)
        )
        out = out.join(latest, "application_id", "left")
        columns.extend(cols)
    pdf: pd.DataFrame = out.select(*features.LABEL_COLUMNS, *columns).toPandas()
    stamps = pd.to_datetime(pdf["application_timestamp"], utc=True)
    pdf["application_timestamp"] = stamps.dt.tz_localize(None)
    return pdf.sort_values("application_id", kind="stable").reset_index(drop=True)


def frames_agree(ours: pd.DataFrame, theirs: pd.DataFrame, columns: list[str]) -> tuple[bool, str]:
    """Whether two training frames hold the same rows and values; a reason when they do not."""
    if len(ours) != len(theirs):
        return False, f"{len(ours)} rows against {len(theirs)}"
    if list(ours["application_id"]) != list(theirs["application_id"]):
        return False, "different application ids"
    for column in columns:
        a, b = ours[column], theirs[column]
        if pd.api.types.is_numeric_dtype(a) or pd.api.types.is_datetime64_any_dtype(a):
            if pd.api.types.is_datetime64_any_dtype(a):
                same = a.to_numpy() == b.to_numpy()
            else:
                x = pd.to_numeric(a).astype("float64").to_numpy()
                y = pd.to_numeric(b).astype("float64").to_numpy()
                same = np.isclose(x, y, rtol=FLOAT_TOLERANCE, atol=0, equal_nan=True)
        else:
            same = (a.isna() & b.isna()).to_numpy() | (a.astype(str) == b.astype(str)).to_numpy()
        if not same.all():
            return False, f"{int((~same).sum())} rows differ in {column}"
    return True, ""


def feast_join_frame(spark: SparkSession, settings: Settings, catalog: TableCatalog) -> int:
    """Feast's point-in-time join alone, down to pandas: the labels as the entity frame."""
    store = features.feature_store(settings)
    service = store.get_feature_service(features.FEATURE_SERVICE)
    entity_df = catalog.read(spark, GOLD_LABELS).withColumnRenamed(
        "application_timestamp", features.EVENT_TIMESTAMP
    )
    features.use_session(spark)
    job: Any = store.get_historical_features(entity_df=entity_df, features=service)
    return len(job.to_spark_df().toPandas())  # a Spark retrieval job


def historical(
    spark: SparkSession, settings: Settings, repeats: int
) -> tuple[dict[str, float], int, bool, str]:
    """Median seconds of each retrieval, rows, whether the frames agree, and why not."""
    catalog = TableCatalog(settings.tables_root)
    specs = view_specs(settings)
    print(
        "views: "
        + ", ".join(f"{t} ({len(c)} features, TTL {ttl.days} days)" for t, c, ttl in specs)
    )
    runs: dict[str, Any] = {
        "build_training_set": lambda: features.build_training_set(spark, settings, catalog).frame,
        "Feast's join alone": lambda: feast_join_frame(spark, settings, catalog),
        "hand-written join": lambda: handwritten_training_frame(spark, catalog, specs),
    }
    # Warm-up, also the frames compared.
    ours = runs["build_training_set"]()
    theirs = runs["hand-written join"]()
    runs["Feast's join alone"]()
    columns = [c for c in ours.columns if c != "application_id"]
    agree, reason = frames_agree(ours, theirs, columns)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):  # interleaved, so that load on the machine hits all alike
        for name, fn in runs.items():
            seconds[name].append(timed(fn)[1])
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    print(
        "historical retrieval: "
        + ", ".join(f"{name} {m:.2f}s" for name, m in medians.items())
        + f" (medians of {repeats})"
    )
    return medians, len(ours), agree, reason


# --- Online retrieval ------------------------------------------------------------------------
def percentiles(fn: Any, calls: int, warmup: int = 50) -> tuple[float, float]:
    """p50 and p99 of ``fn()`` in microseconds over ``calls`` calls, after a warm-up."""
    for _ in range(warmup):
        fn()
    samples = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        started = clock()
        fn()
        samples[i] = clock() - started
    p50, p99 = np.percentile(samples / 1000.0, [50, 99])
    return float(p50), float(p99)


def same_value(a: Any, b: Any) -> bool:
    """Equal values, floats within rounding, None equal to None."""
    if isinstance(a, float) and isinstance(b, float):
        return bool(np.isclose(a, b, rtol=FLOAT_TOLERANCE, atol=0))
    return bool(a == b)


def online(settings: Settings, calls: int) -> dict[str, tuple[float, float]]:
    """p50/p99 (microseconds) of the direct read, the fast reader and Feast's SDK."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    store = features.feature_store(settings)
    service = store.get_feature_service(features.FEATURE_SERVICE)
    db = settings.feast_dir / "online_store.db"
    conn = sqlite3.connect(db, check_same_thread=False)
    tables = [f"{features.PROJECT}_{p.name}" for p in service.feature_view_projections]
    known = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not set(tables) <= known:
        raise RuntimeError(f"online store {db} lacks tables {sorted(set(tables) - known)}")
    reader = features.OnlineFeatureReader(settings)
    customer_id, blob = "", b""
    # The first customer present in every view (ids as the generator writes them).
    for candidate in (f"C{i:06d}" for i in range(1, 100_000)):
        key = EntityKey(
            join_keys=[features.ENTITY_KEY], entity_values=[Value(string_val=candidate)]
        )
        blob = bytes(serialize_entity_key(key, entity_key_serialization_version=3))
        if all(
            conn.execute(f'SELECT 1 FROM "{t}" WHERE entity_key = ?', (blob,)).fetchone()
            for t in tables
        ):
            customer_id = candidate
            break
    if not customer_id:
        raise RuntimeError("no customer is present in every online view")
    sql = " UNION ALL ".join(
        f'SELECT feature_name, value FROM "{t}" WHERE entity_key = ?1' for t in tables
    )
    one_table = f'SELECT feature_name, value FROM "{tables[0]}" WHERE entity_key = ?1'
    fast = reader.get(customer_id)
    sdk = store.get_online_features(
        features=service, entity_rows=[{features.ENTITY_KEY: customer_id}]
    ).to_dict()
    same = all(same_value(fast[c], sdk[c][0]) for c in reader.feature_columns)
    direct_rows = conn.execute(sql, (blob,)).fetchall()
    print(
        f"online: customer {customer_id}, {len(reader.feature_columns)} features over "
        f"{len(tables)} tables ({len(direct_rows)} rows per read); fast path equals the SDK: "
        f"{'yes' if same else 'NO'}"
    )
    results = {
        "direct (2 tables)": percentiles(lambda: conn.execute(sql, (blob,)).fetchall(), calls),
        "direct (1 table)": percentiles(lambda: conn.execute(one_table, (blob,)).fetchall(), calls),
        "fast": percentiles(lambda: reader.get(customer_id), calls),
        "sdk": percentiles(
            lambda: store.get_online_features(
                features=service, entity_rows=[{features.ENTITY_KEY: customer_id}]
            ).to_dict(),
            calls,
        ),
    }
    reader.close()
    conn.close()
    for name, (p50, p99) in results.items():
        print(f"  {name:<18} p50 {p50:9.1f} us   p99 {p99:9.1f} us")
    return results


# --- Materialization -------------------------------------------------------------------------
def fresh_store(settings: Settings) -> Settings:
    """Settings with an empty registry and online store over the same gold tables."""
    home = Path(tempfile.mkdtemp(prefix="bench-online-"))
    fresh = replace(settings.with_home(home), tables_uri=settings.tables_root)
    with muted():
        features.apply(fresh)
    return fresh


def materialize_rate(settings: Settings, end: datetime, bulk: bool) -> tuple[int, int, float]:
    """Entity rows and feature values written into a fresh online store, and the seconds."""
    fresh = fresh_store(settings)
    try:
        with muted():
            _, seconds = timed(lambda: features.materialize(fresh, end, bulk=bulk))
        rows = sum(features.online_row_counts(fresh).values())
        conn = sqlite3.connect(fresh.feast_dir / "online_store.db")
        try:
            values = sum(
                conn.execute(f'SELECT count(*) FROM "{features.PROJECT}_{name}"').fetchone()[0]
                for name in features.online_row_counts(fresh)
            )
        finally:
            conn.close()
        return rows, values, seconds
    finally:
        shutil.rmtree(fresh.home, ignore_errors=True)


def latest_rows(spark: SparkSession, settings: Settings, end: datetime) -> int:
    """The rows materialization writes, read by plain Spark into Arrow: latest per entity."""
    catalog = TableCatalog(settings.tables_root)
    latest_first = Window.partitionBy("customer_id").orderBy(
        F.col("event_timestamp").desc(), F.col("created_at").desc()
    )
    rows = 0
    for table, cols, ttl in view_specs(settings):
        window = F.col("event_timestamp").between(F.lit(end - ttl), F.lit(end))
        latest = (
            catalog.read(spark, table)
            .where(window)
            .withColumn("_rn", F.row_number().over(latest_first))
            .where("_rn = 1")
            .select("customer_id", "event_timestamp", "created_at", *cols)
        )
        rows += latest.toArrow().num_rows
    return rows


def materialization(
    spark: SparkSession, settings: Settings, repeats: int, feast_path: bool
) -> dict[str, float]:
    """Rows/s of the bulk path, of a plain Spark read of the same rows, of Feast's writer."""
    features.use_session(spark)
    end = datetime.now(UTC)
    materialize_rate(settings, end, bulk=True)  # warm-up
    latest_rows(spark, settings, end)
    runs = [materialize_rate(settings, end, bulk=True) for _ in range(repeats)]
    reads = [timed(lambda: latest_rows(spark, settings, end)) for _ in range(repeats)]
    rows, values, _ = runs[0]
    seconds = statistics.median(s for _, _, s in runs)
    read_s = statistics.median(s for _, s in reads)
    print(
        f"materialization: {rows} entity rows ({values} feature values), bulk {seconds:.2f}s; "
        f"plain Spark read of the same {reads[0][0]} rows into Arrow {read_s:.2f}s "
        f"(medians of {repeats})"
    )
    out = {"bulk": rows / seconds, "values": values / seconds, "read": rows / read_s}
    if feast_path:
        feast_rows, _, feast_s = materialize_rate(settings, end, bulk=False)
        print(f"materialization: {feast_rows} entity rows, Feast's writer {feast_s:.2f}s")
        out["feast"] = feast_rows / feast_s
    return out


def info(name: str, value: float) -> str:
    """One line for a figure printed for information, without a target."""
    return f"{name:<52} {value:>9.2f}     (information)"


def main(argv: list[str] | None = None) -> int:
    """Build the world and print every figure against its target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--calls", type=int, default=1000, help="online calls per path")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
    parser.add_argument(
        "--skip-feast-materialize", action="store_true", help="skip Feast's per-row writer"
    )
    args = parser.parse_args(argv)
    quiet()

    home = Path(tempfile.mkdtemp(prefix="bench-features-"))
    started = time.perf_counter()
    spark = get_spark(
        load_settings().with_home(home), app_name="bench-features", register_tables=False
    )
    try:
        settings = build_world(spark, home, args.customers, args.days)
        hist, rows, agree, reason = historical(spark, settings, args.repeats)
        print(
            f"historical values agree with the hand-written join on all {rows} rows: "
            + ("yes" if agree else f"NO ({reason})")
        )
        lat = online(settings, args.calls)
        rates = materialization(spark, settings, args.repeats, not args.skip_feast_materialize)
    finally:
        spark.stop()
        shutil.rmtree(home, ignore_errors=True)

    direct_p50, direct_p99 = lat["direct (2 tables)"]
    fast_p50, fast_p99 = lat["fast"]
    sdk_p50, sdk_p99 = lat["sdk"]
    lines = ["", "Figures"]
    baseline_s = hist["hand-written join"]
    lines.append(
        verdict(
            "historical retrieval vs hand-written join (x)",
            hist["build_training_set"] / baseline_s,
            1.5,
        )
    )
    lines.append(
        info("Feast's join alone vs hand-written join (x)", hist["Feast's join alone"] / baseline_s)
    )
    lines.append(
        verdict("online fast path p50 vs direct SQLite read (x)", fast_p50 / direct_p50, 4.0)
    )
    lines.append(info("online fast path p99 vs direct SQLite read (x)", fast_p99 / direct_p99))
    lines.append(info("online Feast SDK p50 vs direct SQLite read (x)", sdk_p50 / direct_p50))
    lines.append(info("online Feast SDK p99 vs direct SQLite read (x)", sdk_p99 / direct_p99))
    lines.append(
        info("online fast path p50 vs one-table read (x)", fast_p50 / lat["direct (1 table)"][0])
    )
    lines.append(
        verdict("materialization rows/s (bulk)", rates["bulk"], 50_000, higher_is_better=True)
    )
    lines.append(info("materialization feature values/s (bulk)", rates["values"]))
    lines.append(info("materialization rows/s, plain Spark read alone", rates["read"]))
    lines.append(
        info("materialization time vs plain Spark read alone (x)", rates["read"] / rates["bulk"])
    )
    if "feast" in rates:
        lines.append(info("materialization rows/s (Feast's writer)", rates["feast"]))
        lines.append(
            info("materialization bulk vs Feast's writer (x)", rates["bulk"] / rates["feast"])
        )
    lines.append(f"(benchmark took {time.perf_counter() - started:.0f}s)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
