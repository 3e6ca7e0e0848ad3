"""Ingest the serving spools into gold.inference_log and gold.serving_decisions, exactly once.

Run it with spark-submit (from the repository, with the virtual env active)::

    spark-submit --jars "$(lakehouse jars)" jobs/ingest_inference_log.py

On a cluster add ``--master spark://HOST:7077``. The open spool files of a serving process that
stopped are sealed first; a re-run with no new file ingests nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lakehouse.platform.session import configure_logging, job_session
from lakehouse.scoring.inference_log import ingest_decisions, ingest_inference_log


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the job's flags."""
    parser = argparse.ArgumentParser(
        prog="ingest_inference_log", description=__doc__.splitlines()[0]
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Ingest both spools and print what each did."""
    args = parse_args(argv)
    configure_logging(args.verbose)
    with job_session("ingest_inference_log") as job:
        log_report = ingest_inference_log(job.spark, job.settings, job.catalog)
        decisions = ingest_decisions(job.spark, job.settings, job.catalog)
    print(log_report)
    print(decisions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
