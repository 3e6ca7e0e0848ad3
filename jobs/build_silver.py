"""Type, check, deduplicate and MERGE new bronze rows into the silver Delta tables.

Run it with spark-submit (from the repository, with the virtual env active)::

    spark-submit --jars "$(lakehouse jars)" jobs/build_silver.py [--entity customers ...]

Rows failing a ``drop`` expectation go to ``silver.quarantine``; a failing ``fail``
expectation stops the job with exit code 3 and commits nothing. Holds the pipeline's lock while
it runs: exit status 75 when another pipeline run holds it (``--wait SECONDS`` waits for it
first); 1 with one line on stderr when a build fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lakehouse.medallion.expectations import ExpectationFailed
from lakehouse.medallion.pipeline import build_silver, new_run_id, pipeline_lock
from lakehouse.platform.catalog import ENTITIES
from lakehouse.platform.errors import guarded
from lakehouse.platform.session import configure_logging, job_session
from lakehouse.platform.settings import load_settings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the job's flags."""
    parser = argparse.ArgumentParser(prog="build_silver", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--entity",
        action="append",
        choices=ENTITIES,
        help="entity to build (repeatable; default: all)",
    )
    parser.add_argument("--run-id", default=None, help="id recorded with quarantine rows")
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait for a running pipeline"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build silver and print one line per entity."""
    args = parse_args(argv)
    configure_logging(args.verbose, "build_silver")
    return guarded("build_silver", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    run_id = args.run_id or new_run_id()
    settings = load_settings()
    try:
        with pipeline_lock(settings, args.wait), job_session("build_silver", settings) as job:
            results = build_silver(
                job.spark, job.settings, job.catalog, run_id, args.entity or ENTITIES
            )
    except ExpectationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    for r in results:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
