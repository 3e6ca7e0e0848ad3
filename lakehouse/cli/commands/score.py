"""``lakehouse score batch|stream``: write model predictions to ``gold.predictions``.

The flags and the runs are :mod:`lakehouse.workflows.scoring`'s, shared with
``jobs/batch_score.py`` and ``jobs/stream_score.py``; this module prints their outcome.
"""

from __future__ import annotations

import argparse
import sys

from lakehouse.workflows.scoring import (
    ScoringError,
    add_batch_arguments,
    add_stream_arguments,
    batch_summary,
    run_batch,
    run_stream,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``score`` command group."""
    score = sub.add_parser("score", help="score loan applications with the registered model")
    actions = score.add_subparsers(dest="action", metavar="ACTION", required=True)
    batch = actions.add_parser(
        "batch",
        help="score applications not yet scored (or a time range) and MERGE the predictions",
        description="Score silver.loan_applications with the champion (resolved to a concrete "
        "version at start) and MERGE into gold.predictions; a re-run is a no-op.",
    )
    add_batch_arguments(batch)
    batch.set_defaults(handler=score_batch_command)
    stream = actions.add_parser(
        "stream",
        help="score new applications as they land (Structured Streaming)",
        description="Stream silver.loan_applications into gold.predictions; the champion alias "
        "is resolved again at every micro-batch.",
    )
    add_stream_arguments(stream)
    # A service that runs until stopped: its progress lines (each micro-batch) on the terminal.
    stream.set_defaults(handler=score_stream_command, progress=True)


def score_batch_command(args: argparse.Namespace) -> int:
    """Score in batch and print what was written."""
    try:
        report = run_batch(args)
    except ScoringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(batch_summary(report))
    return 0


def score_stream_command(args: argparse.Namespace) -> int:
    """Run the scoring stream until it catches up (available-now) or is stopped by a signal."""
    try:
        run_stream(args)
    except ScoringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
