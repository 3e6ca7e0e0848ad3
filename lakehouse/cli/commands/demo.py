"""``lakehouse demo``: the whole lifecycle on embedded defaults, with a summary.

Data, bronze, silver, gold, the feature store (apply, materialize), training with the gate and
promotion, batch scoring and streaming scoring (available-now), then the inference monitor on
the scored applications (profile, drift against the champion's training set, the alert rules),
all in one Spark application.
Every step is idempotent: a second run generates, ingests, trains and scores nothing new and
leaves every table at its Delta version.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession

from lakehouse.cli.console import format_seconds, render_rows
from lakehouse.medallion.pipeline import pipeline_lock, quarantine_counts, run_pipeline
from lakehouse.platform.catalog import GOLD_PREDICTIONS, TableCatalog
from lakehouse.platform.locks import LockBusy
from lakehouse.platform.session import JobContext, job_session
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.platform.tables import describe
from lakehouse.workflows.training import positive_int

STEPS = 7
KEY_METRICS = ("roc_auc", "pr_auc", "accuracy", "f1", "log_loss", "brier")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    demo = sub.add_parser(
        "demo",
        help="run the whole lifecycle on embedded defaults and print a summary",
        description="Generate data (once), run bronze, silver and gold, apply and materialize "
        "the feature store, train and gate a model, score in batch and streaming, and refresh the "
        "inference monitor, on one Spark session. Running it again changes nothing.",
    )
    demo.add_argument("--customers", type=positive_int, default=2000, help="default 2000")
    demo.add_argument("--days", type=positive_int, default=120, help="days of data (default 120)")
    demo.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    demo.set_defaults(handler=run)


def _step(n: int, name: str, fn: Callable[[], str]) -> None:
    started = time.perf_counter()
    print(f"[{n}/{STEPS}] {name} ...", flush=True)
    detail = fn()
    print(f"[{n}/{STEPS}] {name}: {detail} ({format_seconds(time.perf_counter() - started)})")


def generate_data(settings: Settings, customers: int, days: int, seed: int) -> str:
    """Write the demo world into landing/ unless it already holds drops."""
    # Imported by the steps, not with the module: the CLI builds its parser without MLflow.
    from lakehouse.workflows import lifecycle

    config = lifecycle.demo_world(customers, days, seed)
    report = lifecycle.generate_once(settings, config)
    if report is None:
        return f"landing already holds {lifecycle.landed_drops(settings)} files, nothing generated"
    return (
        f"{days} days ({config.start_date} to {config.end_date}) for {customers} customers: "
        f"{report.total_files} files, {report.total_lines} lines "
        f"({report.totals.malformed} malformed, "
        f"{report.totals.exact_duplicates + report.totals.key_duplicates} duplicates, "
        f"{report.totals.late} late)"
    )


def pipeline(job: JobContext) -> str:
    """Bronze, silver and gold on the job's session."""
    report = run_pipeline(job.spark, job.settings, job.catalog)
    stages = ", ".join(f"{t.stage} {format_seconds(t.seconds)}" for t in report.timings)
    held = f"\n      {report.held}" if report.held else ""
    return f"{report.rows_ingested} new bronze rows; {stages}{held}"


def feature_store(job: JobContext) -> str:
    """Apply the Feast repository and materialize the online store up to now."""
    from lakehouse.features import store as features

    features.use_session(job.spark)
    features.apply(job.settings)
    end = features.materialize(job.settings, datetime.now(UTC))
    views = features.list_views(job.settings)
    online = features.online_row_counts(job.settings)
    # Entities online are counted in the SQLite store only (Redis holds no count to read).
    lines = [
        f"{name}: {len(cols)} features"
        + (f", {online[name]} customers online" if name in online else "")
        for name, cols in views.items()
    ]
    return f"materialized to {end:%Y-%m-%d %H:%M} UTC\n      " + "\n      ".join(lines)


def train(job: JobContext) -> str:
    """Train, track, register and gate a model unless the champion saw the same data."""
    from lakehouse.features.store import build_training_set
    from lakehouse.models.registry import history
    from lakehouse.models.tracking import connect
    from lakehouse.models.training import TrainConfig
    from lakehouse.models.training import train as train_model
    from lakehouse.workflows import lifecycle

    connect(job.settings)
    training_set = build_training_set(job.spark, job.settings, job.catalog)
    if lifecycle.champion_saw(job.settings, training_set.table_versions):
        return "the champion was trained on these exact table versions: nothing to train"
    result = train_model(
        training_set, TrainConfig(), job.settings, spark=job.spark, catalog=job.catalog
    )
    metrics = ", ".join(f"{k} {result.metrics[k]:.3f}" for k in KEY_METRICS if k in result.metrics)
    records = {r.version: r for r in history(job.settings)}
    record = records.get(result.version) if result.version is not None else None
    aliases = ", ".join(record.aliases) if record and record.aliases else "none"
    verdict = result.decision.verdict if result.decision else "not gated"
    return (
        f"run {result.run_id}\n      {job.settings.model_name} version {result.version} "
        f"(aliases: {aliases}; stage: {record.stage if record else '?'}; gate: {verdict})\n"
        f"      {result.train_rows} training rows, {result.holdout_rows} holdout rows; {metrics}"
    )


def score(job: JobContext) -> str:
    """Batch-score with the champion, then let the scoring stream catch up."""
    from lakehouse.models.registry import champion_version
    from lakehouse.scoring.batch import score_batch
    from lakehouse.scoring.stream import start_scoring_stream
    from lakehouse.workflows import lifecycle

    if champion_version(job.settings) is None:
        return "no champion yet (the gate promoted no model): nothing scored"
    batch = score_batch(job.spark, job.settings, job.catalog)
    before = job.catalog.read(job.spark, GOLD_PREDICTIONS).count()
    query = start_scoring_stream(job.spark, job.settings, job.catalog, available_now=True)
    query.awaitTermination()
    streamed = job.catalog.read(job.spark, GOLD_PREDICTIONS).count() - before
    outcomes = lifecycle.refresh_outcomes(job.spark, job.catalog)
    observed = outcomes.where("defaulted IS NOT NULL").count()
    return (
        f"batch: version {batch.model_version} scored {batch.rows_scored} applications, "
        f"{batch.rows_inserted} new predictions; stream (available-now): {streamed} new "
        f"predictions; {observed} predictions already have an observed outcome"
    )


def monitor(job: JobContext) -> str:
    """Refresh the inference monitor and evaluate the alert rules (no action taken)."""
    from lakehouse.models.registry import champion_version
    from lakehouse.workflows.monitoring import latest_figures, refresh_and_evaluate, summary_line

    if champion_version(job.settings) is None:
        return "no champion yet: nothing to monitor"
    outcome = refresh_and_evaluate(job.spark, job.settings, job.catalog)
    windows = len(outcome.refresh.profile_windows)
    by_rule = Counter(alert.rule for alert in outcome.new_alerts)
    fired = ", ".join(f"{rule} {n}" for rule, n in sorted(by_rule.items()))
    # The demo's world scores a few dozen applications a day: its weeks are what can be read.
    figures = latest_figures(job.spark, job.catalog, outcome.info, "1 week", min_rows=100)
    return (
        f"{outcome.info.table_name}: {windows} windows recomputed, "
        f"{len(outcome.new_alerts)} new alerts{f' ({fired})' if fired else ''}\n"
        f"      {summary_line(figures)}"
    )


def summary(spark: SparkSession, catalog: TableCatalog) -> str:
    """Every table with rows and Delta version, and the quarantine counts."""
    infos = [describe(spark, catalog, name) for name in catalog.list_tables(spark)]
    tables = render_rows(
        ["table", "rows", "version", "last operation"],
        [(i.name, i.rows, i.version, i.last_operation) for i in infos],
    )
    counts = quarantine_counts(spark, catalog)
    quarantine = (
        render_rows(["entity", "rule", "rows"], [(e, r, n) for (e, r), n in sorted(counts.items())])
        if counts
        else "(empty)"
    )
    return f"\nTables\n{tables}\n\nQuarantine\n{quarantine}"


def run(args: argparse.Namespace) -> int:
    """Run every step and print the summary."""
    started = time.perf_counter()
    settings = load_settings()
    print(f"Lakehouse demo: state under {settings.home}")
    # The lifecycle's rules bring MLflow and Feast with them: loaded once, before any step's
    # time is taken (the steps import it again at no cost).
    import lakehouse.workflows.lifecycle  # noqa: F401

    _step(1, "data", lambda: generate_data(settings, args.customers, args.days, args.seed))
    from lakehouse.models.tracking import connect

    connect(settings)  # before the session: Spark's Python workers inherit the environment
    outcome: dict[str, Any] = {}
    with job_session("lakehouse-demo", settings) as job:
        try:
            with pipeline_lock(settings):
                _step(2, "pipeline", lambda: pipeline(job))
            _step(3, "feature store", lambda: feature_store(job))
            _step(4, "training", lambda: train(job))
            _step(5, "scoring", lambda: score(job))
            _step(6, "monitoring", lambda: monitor(job))
        except LockBusy as exc:
            print(f"error: {exc}; the demo stopped (run it again when that ends)", file=sys.stderr)
            return exc.exit_code
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        _step(7, "summary", lambda: "")
        outcome["summary"] = summary(job.spark, job.catalog)
    print(outcome["summary"])
    print(f"\nDone in {format_seconds(time.perf_counter() - started)}.")
    return 0
