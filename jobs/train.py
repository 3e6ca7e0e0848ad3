"""Train, track, register and gate the credit-risk model.

Run it with spark-submit (from the repository, with the virtual env active)::

    spark-submit --jars "$(lakehouse jars)" jobs/train.py

Flags as ``lakehouse train`` (``--help``); ``--reproduce RUN_ID`` retrains an earlier run from
the Delta versions it read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lakehouse.platform.session import configure_logging, job_session
from lakehouse.workflows.training import add_train_arguments, run_training, summary_lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the job's flags."""
    parser = argparse.ArgumentParser(prog="train", description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Train once; exit 0 whatever the gate decides (the verdict is printed and audited)."""
    args = parse_args(argv)
    configure_logging(args.verbose)
    with job_session("train") as job:
        try:
            result = run_training(job.spark, job.settings, job.catalog, args)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print("\n".join(summary_lines(result, job.settings, reproduced=args.reproduce)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
