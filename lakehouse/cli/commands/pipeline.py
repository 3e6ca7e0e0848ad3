"""``lakehouse pipeline run``: bronze, silver and gold in one process on one session."""

from __future__ import annotations

import argparse
import sys

from lakehouse.cli.console import format_seconds
from lakehouse.medallion.expectations import ExpectationFailed
from lakehouse.medallion.pipeline import STAGES, pipeline_lock, run_pipeline
from lakehouse.platform.locks import EXIT_BUSY, LockBusy
from lakehouse.platform.session import job_session
from lakehouse.platform.settings import load_settings

RUN_EPILOG = f"""\
Overlapping runs: one pipeline run at a time per state folder. A run that starts while another
holds the lock ($LAKEHOUSE_HOME/locks/pipeline.lock) exits at once with status {EXIT_BUSY} and one
line naming the holder (pid, host, start time); with --wait SECONDS it waits up to that long
for the lock first. The lock dies with its process: a run that was killed leaves none, and the
next run says that it takes over. A killed run is finished by the next one: every stage resumes
from its checkpoint and writes nothing twice.

Exit status: 0 done; 1 a stage failed (one line on stderr, the traceback in the log file under
$LAKEHOUSE_HOME/logs/ that the line names); 3 a `fail` expectation failed (nothing committed);
{EXIT_BUSY} another run holds the lock; 78 the state folder was moved from where it was created.
"""


def wait_seconds(text: str) -> float:
    """A ``--wait`` value: seconds, zero or more."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from exc
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``pipeline`` command group."""
    pipeline = sub.add_parser("pipeline", help="run the medallion pipeline")
    actions = pipeline.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="ingest landing files and build silver and gold",
        description="Run the bronze, silver and gold stages in one Spark application.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--stage",
        action="append",
        choices=STAGES,
        help="stage to run (repeatable; default: all, in order)",
    )
    run.add_argument(
        "--wait",
        type=wait_seconds,
        default=0.0,
        metavar="SECONDS",
        help=f"wait up to SECONDS for a running pipeline to finish (default 0: exit {EXIT_BUSY} "
        "at once)",
    )
    run.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the pipeline and print what it did."""
    settings = load_settings()
    try:
        with (
            pipeline_lock(settings, wait=args.wait),
            job_session("lakehouse-pipeline", settings) as job,
        ):
            report = run_pipeline(job.spark, job.settings, job.catalog, args.stage or STAGES)
    except LockBusy as exc:
        print(f"error: {exc}; not started (--wait SECONDS to wait for it)", file=sys.stderr)
        return EXIT_BUSY
    except ExpectationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(
        f"pipeline {report.run_id}: {report.rows_ingested} rows ingested "
        f"in {format_seconds(report.seconds)}"
    )
    if report.held:
        print(report.held)
    return 0
