"""Feature store benchmark: historical retrieval, online reads and materialization.

    .venv/bin/python benchmarks/features.py [--customers 2000] [--days 120] [--calls 1000]
        [--repeats 3] [--mat-customers 100000] [--mat-days 3] [--skip-feast-materialize]

In a temporary home it generates a world of ``--customers`` customers over ``--days`` days that
ends yesterday (so the online store is current), runs the pipeline (bronze, silver, gold),
applies the Feast repository and materializes the online store, then prints, each against its
target and a baseline measured in the same run:

* historical retrieval: :func:`lakehouse.features.store.build_training_set` (Feast's
  ``get_historical_features`` on the platform's offline store,
  :class:`lakehouse.features.offline.LakehouseSparkOfflineStore`, over the gold Delta tables, the
  Delta versions recorded, down to the sorted pandas training frame) against a hand-written
  point-in-time join over the same Delta tables in the same session (per view: the latest row at
  or before the application time and within the view's TTL, by a join and ``row_number``), also
  down to pandas. Target: <= 1.5x. For information, each against the same hand-written join:
  ``get_historical_features`` alone (the labels as the entity frame, down to pandas), and the
  same call on Feast's stock ``SparkOfflineStore`` (Feast's SQL template; same registry,
  repository and session). One warm-up each, then the median of ``--repeats`` interleaved runs.
  The training frame is compared value by value with the hand-written join's and with the one
  Feast's stock join gives.
* online retrieval of one customer, ``--calls`` calls each, p50 and p99: Feast's
  ``get_online_features`` on the platform's online store
  (:class:`lakehouse.features.online.LakehouseSqliteOnlineStore`) and on Feast's own
  ``SqliteOnlineStore`` (same file), and :class:`lakehouse.features.store.OnlineFeatureReader`,
  against a direct ``sqlite3`` primary-key read of the same rows in Feast's two tables (entity
  key serialized once, values left encoded). Target: the reader's p50 <= 4x the direct read's.
  The ratio against a read of one table (half the rows) is printed too.
* materialization throughput: :func:`lakehouse.features.store.materialize` (``bulk=True``:
  Feast's ``materialize`` through the platform's batch engine,
  :class:`lakehouse.features.engine.LakehouseComputeEngine`, and online store) into a fresh
  registry and online store, in entity rows written (as Feast counts them: one per
  entity and view) per second of wall time of the whole call (registry reads and updates, Spark
  reads, serialization, the SQLite transaction). Measured on a synthetic gold world of
  ``--mat-customers`` customers written directly with the gold tables' columns and types (no
  pipeline run): every customer has one profile row, every fifth a second one a day later (a
  profile change), and one transaction-feature row per day for ``--mat-days`` days, all within
  the views' TTLs, with deterministic pseudo-random values and some nulls. A run writes one row
  per customer and view (2 x ``--mat-customers`` entity rows, 18 feature values per customer)
  out of (1.2 + ``--mat-days``) x ``--mat-customers`` source rows. Median of ``--repeats`` runs
  after a warm-up. Target: >= 50,000 rows/s. For information, at the same scale: a plain Spark
  read of the same rows (latest per entity within the TTL, into Arrow; median of ``--repeats``)
  and the bulk path's time against it; Feast's own engine and SQLite store (``bulk=False``, one run;
  ``--skip-feast-materialize`` skips it) and the bulk path against it. Also the bulk path on
  the pipeline world (a few thousand entity rows, where Spark's fixed cost dominates).
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
import yaml
from _common import build_world, muted, quiet, timed, verdict
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from lakehouse.features import store as features
from lakehouse.medallion.contracts import (
    GOLD_CUSTOMER_PROFILE_SCHEMA,
    GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
    TRANSACTION_WINDOWS,
)
from lakehouse.platform.catalog import (
    GOLD_CUSTOMER_PROFILE,
    GOLD_CUSTOMER_TRANSACTIONS,
    GOLD_LABELS,
    TableCatalog,
)
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.platform.spark import get_spark

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


def stock_feast_store(settings: Settings) -> FeatureStore:
    """A FeatureStore on the same registry and repository with Feast's stock Spark store."""
    config = features.feature_store_config(settings)
    config["offline_store"]["type"] = "spark"
    path = settings.home / "stock-feast" / "feature_store.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return FeatureStore(repo_path=str(features.feature_repo_dir()), fs_yaml_file=path)


def feast_join_frame(
    spark: SparkSession, store: FeatureStore, catalog: TableCatalog
) -> pd.DataFrame:
    """``get_historical_features`` alone, down to pandas: the labels as the entity frame."""
    service = store.get_feature_service(features.FEATURE_SERVICE)
    entity_df = catalog.read(spark, GOLD_LABELS).withColumnRenamed(
        "application_timestamp", features.EVENT_TIMESTAMP
    )
    features.use_session(spark)
    job: Any = store.get_historical_features(entity_df=entity_df, features=service)
    frame: pd.DataFrame = job.to_spark_df().toPandas()  # a Spark retrieval job
    return frame


def as_training_frame(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """A ``get_historical_features`` frame shaped as the training frame (order, times)."""
    out = frame.rename(columns={features.EVENT_TIMESTAMP: "application_timestamp"})[columns]
    stamps = pd.to_datetime(out["application_timestamp"], utc=True)
    out["application_timestamp"] = stamps.dt.tz_localize(None)
    return out.sort_values("application_id", kind="stable").reset_index(drop=True)


def historical(
    spark: SparkSession, settings: Settings, repeats: int
) -> tuple[dict[str, float], int, dict[str, str]]:
    """Median seconds of each retrieval, rows, and how the frames compare (empty: equal)."""
    catalog = TableCatalog(settings.tables_root)
    specs = view_specs(settings)
    print(
        "views: "
        + ", ".join(f"{t} ({len(c)} features, TTL {ttl.days} days)" for t, c, ttl in specs)
    )
    ours_store = features.feature_store(settings)
    stock_store = stock_feast_store(settings)
    runs: dict[str, Any] = {
        "build_training_set": lambda: features.build_training_set(spark, settings, catalog).frame,
        "get_historical_features": lambda: feast_join_frame(spark, ours_store, catalog),
        "Feast's stock Spark join": lambda: feast_join_frame(spark, stock_store, catalog),
        "hand-written join": lambda: handwritten_training_frame(spark, catalog, specs),
    }
    # Warm-up, also the frames compared.
    ours = runs["build_training_set"]()
    theirs = runs["hand-written join"]()
    runs["get_historical_features"]()
    stock = as_training_frame(runs["Feast's stock Spark join"](), list(ours.columns))
    columns = [c for c in ours.columns if c != "application_id"]
    differences = {}
    for name, other in (("the hand-written join", theirs), ("Feast's stock Spark join", stock)):
        agree, reason = frames_agree(ours, other, columns)
        differences[name] = "" if agree else reason
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
    return medians, len(ours), differences


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


def stock_online_store(settings: Settings) -> FeatureStore:
    """A FeatureStore on the same registry and online file with Feast's own SQLite store."""
    config = features.feature_store_config(settings, feast_sqlite=True)
    path = settings.home / "stock-online" / "feature_store.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return FeatureStore(repo_path=str(features.feature_repo_dir()), fs_yaml_file=path)


def same_value(a: Any, b: Any) -> bool:
    """Equal values, floats within rounding, None equal to None."""
    if isinstance(a, float) and isinstance(b, float):
        return bool(np.isclose(a, b, rtol=FLOAT_TOLERANCE, atol=0))
    return bool(a == b)


def online(settings: Settings, calls: int) -> dict[str, tuple[float, float]]:
    """p50/p99 (microseconds) of the direct read, the fast reader and Feast's SDK."""
    store = features.feature_store(settings)
    service = store.get_feature_service(features.FEATURE_SERVICE)
    db = settings.feast_dir / "online_store.db"
    conn = sqlite3.connect(db, check_same_thread=False)
    tables = [f"{features.PROJECT}_{p.name}" for p in service.feature_view_projections]
    known = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not set(tables) <= known:
        raise RuntimeError(f"online store {db} lacks tables {sorted(set(tables) - known)}")
    reader = features.OnlineFeatureReader(settings)
    stock = stock_online_store(settings)
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
        "sdk (Feast's store)": percentiles(
            lambda: stock.get_online_features(
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
def synthetic_gold(
    spark: SparkSession, catalog: TableCatalog, customers: int, days: int, end: datetime
) -> dict[str, int]:
    """Write the two gold feature tables of a synthetic world ending at ``end``; rows written.

    With the gold tables' columns and types: every customer has a profile row stamped ``days`` days
    before ``end`` (every fifth a second one a day later) and a transaction-feature row at
    each of the ``days`` midnights before ``end``. Values are deterministic pseudo-random
    numbers; every fiftieth credit score is null, and so is an average over no transactions.
    """
    first = end - timedelta(days=days)
    ids = spark.range(customers).withColumnRenamed("id", "c")
    customer_id = F.format_string("C%07d", F.col("c"))

    def pick(values: tuple[str, ...]) -> Any:
        return F.element_at(
            F.array(*[F.lit(v) for v in values]), (F.col("c") % len(values) + 1).cast("int")
        )

    versions = F.when(F.col("c") % 5 == 0, F.array(F.lit(0), F.lit(1))).otherwise(F.array(F.lit(0)))
    profile_at = F.lit(first) + F.make_interval(
        days=F.col("k").cast("int"), hours=(F.col("c") % 24).cast("int")
    )
    profile = ids.withColumn("k", F.explode(versions)).select(
        customer_id.alias("customer_id"),
        profile_at.alias("event_timestamp"),
        (18 + F.col("c") % 60).alias("age"),
        F.round(20_000 + F.rand(1) * 150_000, 2).alias("annual_income"),
        F.round(F.rand(2) * 30, 1).alias("employment_years"),
        F.when(F.col("c") % 50 != 0, 300 + F.col("c") % 551).alias("credit_score"),
        pick(("RENT", "OWN", "MORTGAGE")).alias("home_ownership"),
        pick(("NORTH", "SOUTH", "EAST", "WEST")).alias("region"),
        (profile_at + F.expr("INTERVAL 1 HOUR")).alias("created_at"),
    )
    day_at = F.lit(first) + F.make_interval(days=F.col("k").cast("int"))
    columns = [customer_id.alias("customer_id"), day_at.alias("event_timestamp")]
    for i, window in enumerate(TRANSACTION_WINDOWS):
        count = F.floor(F.rand(10 + i) * window * 2)
        total = F.round(count * (5 + F.rand(20 + i) * 100), 2)
        columns += [
            count.alias(f"txn_count_{window}d"),
            total.alias(f"txn_amount_sum_{window}d"),
            F.round(F.try_divide(total, count), 4).alias(f"txn_amount_avg_{window}d"),
        ]
    columns += [
        F.round(F.rand(30) * 500, 2).alias("txn_amount_max_30d"),
        F.round(F.rand(31), 4).alias("gambling_share_30d"),
        F.round(F.rand(32), 4).alias("online_share_30d"),
        (day_at + F.expr("INTERVAL 2 HOURS")).alias("created_at"),
    ]
    transactions = ids.withColumn("k", F.explode(F.sequence(F.lit(0), F.lit(days - 1)))).select(
        *columns
    )
    written = {}
    for name, schema, frame in (
        (GOLD_CUSTOMER_PROFILE, GOLD_CUSTOMER_PROFILE_SCHEMA, profile),
        (GOLD_CUSTOMER_TRANSACTIONS, GOLD_CUSTOMER_TRANSACTIONS_SCHEMA, transactions),
    ):
        typed = frame.select(*[F.col(f.name).cast(f.dataType) for f in schema.fields])
        typed.write.format("delta").mode("overwrite").save(catalog.path(name))
        written[name] = catalog.read(spark, name).count()
    return written


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
    spark: SparkSession,
    settings: Settings,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Rows/s of the bulk path (synthetic world and pipeline world), of a plain Spark read of
    the same rows and of Feast's writer."""
    features.use_session(spark)
    repeats = args.repeats
    out: dict[str, float] = {}

    # The pipeline world: a few thousand entity rows.
    now = datetime.now(UTC)
    materialize_rate(settings, now, bulk=True)  # warm-up
    small = [materialize_rate(settings, now, bulk=True) for _ in range(repeats)]
    small_s = statistics.median(s for _, _, s in small)
    out["small rows"] = small[0][0]
    out["small"] = small[0][0] / small_s

    # The synthetic world.
    world = load_settings().with_home(settings.home / "synthetic")
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    catalog = TableCatalog(world.tables_root)
    written, gen_s = timed(
        lambda: synthetic_gold(spark, catalog, args.mat_customers, args.mat_days, end)
    )
    with muted():
        features.apply(world)
    print(
        f"synthetic gold world: {args.mat_customers} customers, "
        + ", ".join(f"{n} {name}" for name, n in written.items())
        + f" rows up to {end:%Y-%m-%d %H:%M} UTC; written in {gen_s:.0f}s"
    )
    materialize_rate(world, end, bulk=True)  # warm-up
    latest_rows(spark, world, end)
    runs = [materialize_rate(world, end, bulk=True) for _ in range(repeats)]
    reads = [timed(lambda: latest_rows(spark, world, end)) for _ in range(repeats)]
    rows, values, _ = runs[0]
    seconds = statistics.median(s for _, _, s in runs)
    read_s = statistics.median(s for _, s in reads)
    print(
        f"materialization: {rows} entity rows ({values} feature values), bulk {seconds:.2f}s; "
        f"plain Spark read of the same {reads[0][0]} rows into Arrow {read_s:.2f}s "
        f"(medians of {repeats}); pipeline world: {small[0][0]} entity rows, bulk {small_s:.2f}s"
    )
    out.update({"bulk": rows / seconds, "values": values / seconds, "read": rows / read_s})
    if not args.skip_feast_materialize:
        feast_rows, _, feast_s = materialize_rate(world, end, bulk=False)
        print(f"materialization: {feast_rows} entity rows, Feast's own {feast_s:.2f}s (one run)")
        out["feast"] = feast_rows / feast_s
    return out


def info(name: str, value: float) -> str:
    """One line for a figure printed for information, without a target."""
    return f"{name:<52} {value:>9.2f}     (information)"


def main(argv: list[str] | None = None) -> int:
    """Build the worlds and print every figure against its target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--calls", type=int, default=1000, help="online calls per path")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
    parser.add_argument(
        "--mat-customers", type=int, default=100_000, help="customers of the synthetic world"
    )
    parser.add_argument(
        "--mat-days", type=int, default=3, help="transaction-feature rows per customer (>= 2)"
    )
    parser.add_argument(
        "--skip-feast-materialize", action="store_true", help="skip Feast's per-row writer"
    )
    args = parser.parse_args(argv)
    if args.mat_days < 2 or args.mat_customers < 1:
        parser.error("--mat-days must be at least 2 and --mat-customers at least 1")
    quiet()

    home = Path(tempfile.mkdtemp(prefix="bench-features-"))
    started = time.perf_counter()
    spark = get_spark(
        load_settings().with_home(home), app_name="bench-features", register_tables=False
    )
    try:
        settings = build_world(spark, home, args.customers, args.days)
        hist, rows, differences = historical(spark, settings, args.repeats)
        for name, reason in differences.items():
            print(
                f"training frame agrees with {name} on all {rows} rows: "
                + ("yes" if not reason else f"NO ({reason})")
            )
        lat = online(settings, args.calls)
        rates = materialization(spark, settings, args)
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
        info(
            "get_historical_features alone vs hand-written (x)",
            hist["get_historical_features"] / baseline_s,
        )
    )
    lines.append(
        info(
            "Feast's stock Spark join alone vs hand-written (x)",
            hist["Feast's stock Spark join"] / baseline_s,
        )
    )
    lines.append(
        verdict("online fast path p50 vs direct SQLite read (x)", fast_p50 / direct_p50, 4.0)
    )
    lines.append(info("online fast path p99 vs direct SQLite read (x)", fast_p99 / direct_p99))
    lines.append(info("online Feast SDK p50 vs direct SQLite read (x)", sdk_p50 / direct_p50))
    lines.append(info("online Feast SDK p99 vs direct SQLite read (x)", sdk_p99 / direct_p99))
    stock_p50, stock_p99 = lat["sdk (Feast's store)"]
    lines.append(info("online SDK on Feast's store p50 vs direct read (x)", stock_p50 / direct_p50))
    lines.append(info("online SDK on Feast's store p99 vs direct read (x)", stock_p99 / direct_p99))
    lines.append(
        info("online fast path p50 vs one-table read (x)", fast_p50 / lat["direct (1 table)"][0])
    )
    short = f"{args.mat_customers / 1000:g}k"
    scale = f"{short} customers"
    lines.append(
        verdict(
            f"materialization rows/s (bulk, {scale})",
            rates["bulk"],
            50_000,
            higher_is_better=True,
        )
    )
    lines.append(info(f"materialization values/s (bulk, {scale})", rates["values"]))
    lines.append(info(f"materialization rows/s, plain Spark read ({short})", rates["read"]))
    lines.append(
        info("materialization time vs plain Spark read alone (x)", rates["read"] / rates["bulk"])
    )
    if "feast" in rates:
        lines.append(info(f"materialization rows/s (Feast's writer, {short})", rates["feast"]))
        lines.append(
            info("materialization bulk vs Feast's writer (x)", rates["bulk"] / rates["feast"])
        )
    lines.append(
        info(
            f"bulk rows/s on the pipeline world ({int(rates['small rows'])} rows)",
            rates["small"],
        )
    )
    lines.append(f"(benchmark took {time.perf_counter() - started:.0f}s)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
