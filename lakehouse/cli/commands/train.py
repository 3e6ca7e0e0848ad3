"""``lakehouse train``: build the training set, train, register and gate a model."""

from __future__ import annotations

import argparse
import sys

from lakehouse.platform.session import job_session
from lakehouse.workflows.training import add_train_arguments, run_training, summary_lines


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    parser = sub.add_parser(
        "train",
        help="train, track, register and gate the credit-risk model",
        description="Build the training set from the feature store, train on the older "
        "applications, evaluate on the newest, log the run to MLflow, register a version and "
        "promote it when it passes the gate.",
    )
    add_train_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run training in a Spark session of its own and print its summary."""
    with job_session("lakehouse-train") as job:
        try:
            result = run_training(job.spark, job.settings, job.catalog, args)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print("\n".join(summary_lines(result, job.settings, reproduced=args.reproduce)))
    return 0
