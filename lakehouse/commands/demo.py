"""``lakehouse demo``: the whole lifecycle on embedded defaults, with a summary."""

from __future__ import annotations

import argparse
import sys
import time

from lakehouse.catalog import TableCatalog
from lakehouse.console import format_seconds, render_rows
from lakehouse.jobs import job_session
from lakehouse.pipeline import quarantine_counts, run_pipeline
from lakehouse.settings import Settings
from lakehouse.tables import describe


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``demo`` command."""
    demo = sub.add_parser(
        "demo",
        help="run the whole lifecycle on embedded defaults and print a summary",
        description="Generate data (once), then run bronze, silver and gold on one session. "
        "Running it again ingests nothing and leaves the tables unchanged.",
    )
    demo.add_argument("--customers", type=int, default=2000, help="customers (default 2000)")
    demo.add_argument("--days", type=int, default=90, help="days of data (default 90)")
    demo.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    demo.set_defaults(handler=run)


def _generate(settings: Settings, args: argparse.Namespace) -> str:
    from lakehouse.datagen import GeneratorConfig, generate

    existing = list(settings.landing_dir.rglob("*_????-??-??.*"))
    if existing:
        return f"landing already holds {len(existing)} files: nothing generated"
    if args.customers <= 0 or args.days <= 0:
        raise ValueError("--customers and --days must be positive")
    config = GeneratorConfig(
        seed=args.seed,
        customers=args.customers,
        days=args.days,
        malformed_rate=0.002,
        duplicate_rate=0.003,
        key_duplicate_rate=0.002,
        late_rate=0.01,
    )
    report = generate(settings.landing_dir, config)
    return (
        f"generated {args.days} days for {args.customers} customers: "
        f"{report.total_files} files, {report.total_lines} lines"
    )


def _summary(spark, catalog: TableCatalog) -> str:  # type: ignore[no-untyped-def]
    infos = [describe(spark, catalog, name) for name in catalog.list_tables(spark)]
    tables = render_rows(
        ["table", "rows", "version", "last operation"],
        [(i.name, i.rows, i.version, i.last_operation) for i in infos],
    )
    counts = quarantine_counts(spark, catalog)
    quarantine = (
        render_rows(
            ["entity", "rule", "rows"],
            [(e, r, n) for (e, r), n in sorted(counts.items())],
        )
        if counts
        else "(empty)"
    )
    return f"\nTables\n{tables}\n\nQuarantine\n{quarantine}"


def run(args: argparse.Namespace) -> int:
    """Run every step and print the summary."""
    started = time.perf_counter()
    from lakehouse.settings import load_settings

    settings = load_settings()
    print(f"Lakehouse demo - state under {settings.home}")
    try:
        print(f"[1/2] data: {_generate(settings, args)}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with job_session("lakehouse-demo", settings) as job:
        report = run_pipeline(job.spark, job.settings, job.catalog)
        print(
            f"[2/2] pipeline: {report.rows_ingested} new bronze rows; "
            + ", ".join(f"{t.stage} {format_seconds(t.seconds)}" for t in report.timings)
        )
        print(_summary(job.spark, job.catalog))
    print(f"\nDone in {format_seconds(time.perf_counter() - started)}.")
    return 0
