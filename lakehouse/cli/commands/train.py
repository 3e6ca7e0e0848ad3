"""``lakehouse train``: build the training set, train (or sweep), register and gate a model."""

from __future__ import annotations

import argparse
import sys

from lakehouse.platform.session import job_session
from lakehouse.workflows.training import (
    TrainOutcome,
    add_train_arguments,
    check_train_arguments,
    gate_from_args,
    is_sweep,
    sweep_configs,
    train_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    parser = sub.add_parser(
        "train",
        help="train, track, register and gate the credit-risk model",
        description="Build the training set from the feature store, train on the older "
        "applications, evaluate on the newest, log the run to MLflow, register a version and "
        "promote it when it passes the gate. --sweep trains a grid of configurations as child "
        "runs of one run and registers only the best.",
    )
    add_train_arguments(parser)
    parser.set_defaults(handler=run, train_parser=parser)


def print_outcome(outcome: TrainOutcome) -> int:
    """Print the summary to stdout and the error (or the gate's rejection) to stderr."""
    if outcome.lines:
        print("\n".join(outcome.lines), flush=True)
    if outcome.error:
        print(outcome.error, file=sys.stderr)
    return outcome.status


def run(args: argparse.Namespace) -> int:
    """Train in a Spark session of its own, print its summary; 3 when the gate rejects."""
    check_train_arguments(args.train_parser, args)
    try:
        # The gate file and the sweep grid are read before Spark starts: a bad one fails fast.
        gate = gate_from_args(args)
        configs = sweep_configs(args) if is_sweep(args) else None
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with job_session("lakehouse-train") as job:
        outcome = train_from_args(job.spark, job.settings, job.catalog, args, gate, configs)
    return print_outcome(outcome)
