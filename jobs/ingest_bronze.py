"""Ingest new landing files into the bronze Delta tables, each file exactly once.

Run it with spark-submit (from the repository, with the virtual env active)::

    spark-submit --jars "$(lakehouse jars)" jobs/ingest_bronze.py [--entity customers ...]

On a cluster add ``--master spark://HOST:7077``. A re-run with no new file ingests nothing.
Holds the pipeline's lock while it runs: exit status 75 when another pipeline run holds it
(``--wait SECONDS`` waits for it first); 1 with one line on stderr when ingestion fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lakehouse.medallion.pipeline import ingest_bronze, pipeline_lock
from lakehouse.platform.catalog import ENTITIES
from lakehouse.platform.errors import guarded
from lakehouse.platform.session import configure_logging, job_session
from lakehouse.platform.settings import load_settings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the job's flags."""
    parser = argparse.ArgumentParser(prog="ingest_bronze", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--entity",
        action="append",
        choices=ENTITIES,
        help="entity to ingest (repeatable; default: all)",
    )
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait for a running pipeline"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Ingest and print one line per entity."""
    args = parse_args(argv)
    configure_logging(args.verbose, "ingest_bronze")
    return guarded("ingest_bronze", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    settings = load_settings()
    with pipeline_lock(settings, args.wait), job_session("ingest_bronze", settings) as job:
        results = ingest_bronze(job.spark, job.settings, job.catalog, args.entity or ENTITIES)
    for r in results:
        print(f"bronze.{r.entity}_raw: {r.files} new files, {r.rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
