"""Train, track, register and gate the credit-risk model.

Run it with spark-submit (from the repository, with the virtual env active)::

    spark-submit --jars "$(lakehouse jars)" jobs/train.py

Flags as ``lakehouse train`` (``--help``); ``--reproduce RUN_ID`` retrains an earlier run from
the Delta versions it read, ``--sweep`` trains a grid and registers the best. The gate reads
``ml_gate.yaml`` from the working directory (or ``--gate-file``). Exit status 3 when the gate
rejects the candidate, so that a scheduler or CI step fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lakehouse.platform.errors import guarded
from lakehouse.platform.session import configure_logging, job_session
from lakehouse.workflows.training import (
    add_train_arguments,
    check_train_arguments,
    gate_from_args,
    is_sweep,
    sweep_configs,
    train_from_args,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the job's flags."""
    parser = argparse.ArgumentParser(prog="train", description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    args = parser.parse_args(argv)
    check_train_arguments(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Train once (or sweep); exit 3 when the gate rejects the candidate, 1 on an error."""
    args = parse_args(argv)
    configure_logging(args.verbose, "train")
    return guarded("train", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    try:
        gate = gate_from_args(args)
        configs = sweep_configs(args) if is_sweep(args) else None
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with job_session("train") as job:
        outcome = train_from_args(job.spark, job.settings, job.catalog, args, gate, configs)
    if outcome.lines:
        print("\n".join(outcome.lines), flush=True)
    if outcome.error:
        print(outcome.error, file=sys.stderr)
    return outcome.status


if __name__ == "__main__":
    sys.exit(main())
