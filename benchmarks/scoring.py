"""Scoring benchmark: batch throughput against raw scikit-learn, and streaming latency.

    .venv/bin/python benchmarks/scoring.py [--rows 1000000] [--stream-appends 10]

In a temporary home it registers a gradient-boosting model built like training builds it
(logged with ``pyfunc_predict_fn="predict_proba"``), writes ``--rows`` applications to
``silver.loan_applications`` and their model inputs to a Delta table, then:

* batch: :func:`lakehouse.scoring.score_batch` end to end (select, features, ``spark_udf``,
  insert-only MERGE into ``gold.predictions``) in rows per second, against the raw
  ``predict_proba`` of the same scikit-learn pipeline on the same rows already in memory as a
  pandas frame. The feature provider here is a join on a precomputed inputs table, so the
  figure is the cost of scoring and writing, not of Feast's point-in-time retrieval.
  Target: at least 0.85x the raw throughput.
* stream: a processing-time ("1 second") scoring stream; ``--stream-appends`` small appends to
  silver, each timed from its commit until its predictions are readable. Target: p50 <= 3 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import timed, verdict
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.catalog import GOLD_PREDICTIONS, SILVER_LOAN_APPLICATIONS, TableCatalog
from lakehouse.schemas import SILVER_SCHEMAS
from lakehouse.scoring import score_batch, start_scoring_stream
from lakehouse.settings import Settings, load_settings
from lakehouse.spark import get_spark, table_catalog

NUMERIC = ["loan_amount", "term_months", "age", "annual_income", "credit_score", "txn_count_30d"]
CATEGORICAL = ["purpose", "home_ownership"]
INPUTS_TABLE = "gold.benchmark_model_inputs"


def model_inputs(rows: int, seed: int, offset: int = 0) -> pd.DataFrame:
    """Synthetic applications with their model inputs."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "application_id": [f"A{offset + i:09d}" for i in range(rows)],
            "customer_id": [f"C{i:06d}" for i in rng.integers(0, 50_000, rows)],
            "loan_amount": rng.uniform(1000, 30000, rows),
            "term_months": rng.choice([12.0, 24.0, 36.0, 48.0, 60.0], rows),
            "age": rng.uniform(20, 70, rows),
            "annual_income": rng.uniform(15000, 120000, rows),
            "credit_score": rng.uniform(300, 850, rows),
            "txn_count_30d": rng.integers(0, 40, rows).astype("float64"),
            "purpose": rng.choice(["CAR", "EDUCATION", "OTHER"], rows).astype(object),
            "home_ownership": rng.choice(["RENT", "OWN", "MORTGAGE"], rows).astype(object),
        }
    )


def register(settings: Settings) -> object:
    """Fit and register the benchmark model as champion; return the fitted pipeline."""
    import mlflow
    import skops.io
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from lakehouse.tracking import connect
    from lakehouse.training import TrainConfig, build_pipeline

    connect(settings)
    frame = model_inputs(20_000, seed=7)
    X = frame[[*NUMERIC, *CATEGORICAL]]
    y = (frame["loan_amount"] / 30000 - (frame["credit_score"] - 575) / 275 > 0).astype(int)
    config = TrainConfig(model_type="hist_gradient_boosting", n_estimators=100, max_depth=6)
    model = build_pipeline(config, NUMERIC, CATEGORICAL).fit(X, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X.head(5), model.predict_proba(X.head(5))),
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=list(skops.io.get_untrusted_types(data=skops.io.dumps(model))),
            registered_model_name=settings.model_name,
        )
    client = MlflowClient(settings.tracking_uri, settings.registry_uri)
    client.set_registered_model_alias(
        settings.model_name, "champion", str(info.registered_model_version)
    )
    return model


def write_applications(spark: SparkSession, catalog: TableCatalog, frame: pd.DataFrame) -> None:
    """Append ``frame``'s applications to silver and its inputs to the inputs table."""
    now = pd.Timestamp("2026-01-15", tz="UTC")
    apps = pd.DataFrame(
        {
            "application_id": frame["application_id"],
            "customer_id": frame["customer_id"],
            "applied_at": now,
            "loan_amount": frame["loan_amount"],
            "term_months": frame["term_months"].astype("int32"),
            "purpose": frame["purpose"],
            "_source_file": "benchmark",
            "_ingested_at": now,
        }
    )
    schema = SILVER_SCHEMAS["loan_applications"]
    spark.createDataFrame(apps, schema).write.format("delta").mode("append").save(
        catalog.path(SILVER_LOAN_APPLICATIONS)
    )
    inputs = frame[["application_id", "age", "annual_income", "credit_score", "txn_count_30d"]]
    spark.createDataFrame(inputs.assign(home_ownership=frame["home_ownership"])).write.format(
        "delta"
    ).mode("append").save(catalog.path(INPUTS_TABLE))


def precomputed_features(
    spark: SparkSession, settings: Settings, entity_df: DataFrame
) -> DataFrame:
    """The benchmark's feature provider: a join on the precomputed inputs table."""
    inputs = TableCatalog(settings.tables_root).read(spark, INPUTS_TABLE)
    return entity_df.join(inputs, "application_id", "left")


def batch_figures(spark: SparkSession, settings: Settings, rows: int, batch: int) -> list[str]:
    """Batch rows/s of score_batch against raw predict_proba."""
    catalog = table_catalog(settings)
    model = register(settings)
    frame = model_inputs(rows, seed=11)
    write_applications(spark, catalog, frame)
    X = frame[[*NUMERIC, *CATEGORICAL]]
    _, raw_seconds = timed(lambda: model.predict_proba(X))  # type: ignore[attr-defined]
    report, seconds = timed(
        lambda: score_batch(
            spark, settings, catalog, features_fn=precomputed_features, arrow_batch_size=batch
        )
    )
    assert report.rows_inserted == rows, report
    raw_rate, rate = rows / raw_seconds, rows / seconds
    print(f"raw predict_proba: {raw_rate:,.0f} rows/s; score_batch: {rate:,.0f} rows/s")
    return [
        verdict(
            "batch scoring throughput vs raw predict_proba",
            rate / raw_rate,
            0.85,
            "x",
            higher_is_better=True,
        )
    ]


def stream_figures(spark: SparkSession, settings: Settings, appends: int) -> list[str]:
    """p50 latency from a silver append to its predictions, with a 1-second trigger."""
    catalog = table_catalog(settings)
    register(settings)
    write_applications(spark, catalog, model_inputs(100, seed=99, offset=10**9))
    query = start_scoring_stream(
        spark, settings, catalog, processing_time="1 second", features_fn=precomputed_features
    )
    latencies: list[float] = []
    try:
        while not query.recentProgress:  # the first micro-batch
            time.sleep(0.2)
        for i in range(appends):
            frame = model_inputs(100, seed=100 + i, offset=10**8 + i * 100)
            write_applications(spark, catalog, frame)
            committed = time.perf_counter()
            last = frame["application_id"].iloc[-1]
            while True:
                hit = catalog.read(spark, GOLD_PREDICTIONS).where(F.col("application_id") == last)
                if hit.limit(1).count():
                    break
                if time.perf_counter() - committed > 120:
                    raise RuntimeError(f"append {i} not scored within 120 s")
                time.sleep(0.1)
            latencies.append(time.perf_counter() - committed)
    finally:
        query.stop()
    p50 = statistics.median(latencies)
    print("stream latencies (s):", ", ".join(f"{v:.2f}" for v in latencies))
    return [verdict("stream append-to-prediction latency p50", p50, 3.0, "s")]


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks and print each figure against its target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="applications scored in batch")
    parser.add_argument("--arrow-batch-size", type=int, default=50_000)
    parser.add_argument("--stream-appends", type=int, default=10)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="lakehouse-bench-scoring-"))
    settings = load_settings().with_home(home)
    spark = get_spark(settings, app_name="benchmark-scoring", register_tables=False)
    try:
        lines = batch_figures(spark, settings, args.rows, args.arrow_batch_size)
        # A home of its own: the stream starts on a small table, not the batch's rows.
        lines += stream_figures(spark, settings.with_home(home / "stream"), args.stream_appends)
    finally:
        spark.stop()
        shutil.rmtree(home, ignore_errors=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
