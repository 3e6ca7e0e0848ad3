"""Build the gold feature tables and labels from silver (skipped when silver is unchanged).

Run it with spark-submit (from the repository, with the virtual env active)::

    spark-submit --jars "$(lakehouse jars)" jobs/build_gold.py

Holds the pipeline's lock while it runs: exit status 75 when another pipeline run holds it
(``--wait SECONDS`` waits for it first); 1 with one line on stderr when a build fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lakehouse.medallion.pipeline import build_gold, pipeline_lock
from lakehouse.platform.errors import guarded
from lakehouse.platform.session import configure_logging, job_session
from lakehouse.platform.settings import load_settings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the job's flags."""
    parser = argparse.ArgumentParser(prog="build_gold", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait for a running pipeline"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build gold and print the row count of each table."""
    args = parse_args(argv)
    configure_logging(args.verbose, "build_gold")
    return guarded("build_gold", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    settings = load_settings()
    with pipeline_lock(settings, args.wait), job_session("build_gold", settings) as job:
        counts = build_gold(job.spark, job.catalog)
    for name, rows in counts.items():
        print(f"{name}: {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
