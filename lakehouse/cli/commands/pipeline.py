"""``lakehouse pipeline run``: bronze, silver and gold in one process on one session."""

from __future__ import annotations

import argparse
import sys

from lakehouse.cli.console import format_seconds
from lakehouse.medallion.expectations import ExpectationFailed
from lakehouse.medallion.pipeline import STAGES, run_pipeline
from lakehouse.platform.session import job_session


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``pipeline`` command group."""
    pipeline = sub.add_parser("pipeline", help="run the medallion pipeline")
    actions = pipeline.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="ingest landing files and build silver and gold",
        description="Run the bronze, silver and gold stages in one Spark application.",
    )
    run.add_argument(
        "--stage",
        action="append",
        choices=STAGES,
        help="stage to run (repeatable; default: all, in order)",
    )
    run.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the pipeline and print what it did."""
    try:
        with job_session("lakehouse-pipeline") as job:
            report = run_pipeline(job.spark, job.settings, job.catalog, args.stage or STAGES)
    except ExpectationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(
        f"pipeline {report.run_id}: {report.rows_ingested} rows ingested "
        f"in {format_seconds(report.seconds)}"
    )
    return 0
