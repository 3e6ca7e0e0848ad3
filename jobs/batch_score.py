"""Score loan applications in batch with the champion model into gold.predictions.

Run it with spark-submit (from the repository, with the virtual env active)::

    spark-submit --jars "$(lakehouse jars)" jobs/batch_score.py --start 2026-01-01

The champion is resolved to a concrete version at start; a re-run inserts nothing twice.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lakehouse.platform.errors import guarded
from lakehouse.platform.session import configure_logging
from lakehouse.workflows.scoring import (
    ScoringError,
    add_batch_arguments,
    batch_summary,
    run_batch,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the job's flags."""
    parser = argparse.ArgumentParser(prog="batch_score", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    add_batch_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Score and print how many predictions were written."""
    args = parse_args(argv)
    configure_logging(args.verbose, "batch_score")
    return guarded("batch_score", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    try:
        report = run_batch(args)
    except ScoringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(batch_summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
