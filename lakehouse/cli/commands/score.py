"""``lakehouse score batch|stream``: write model predictions to ``gold.predictions``.

The flags and runners here are shared with ``jobs/batch_score.py`` and ``jobs/stream_score.py``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

#: The default point-in-time feature provider, as ``module:function``.
DEFAULT_FEATURES = "lakehouse.features.store:historical_features"


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
    batch.set_defaults(handler=run_batch)
    stream = actions.add_parser(
        "stream",
        help="score new applications as they land (Structured Streaming)",
        description="Stream silver.loan_applications into gold.predictions; the champion alias "
        "is resolved again at every micro-batch.",
    )
    add_stream_arguments(stream)
    stream.set_defaults(handler=run_stream)


# --- Flags -----------------------------------------------------------------------------------
def timestamp(text: str) -> datetime:
    """An ISO-8601 date or timestamp flag value, as a UTC datetime."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 date or timestamp: {text!r} (for example 2026-01-31T00:00:00Z)"
        ) from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def probability(text: str) -> float:
    """A flag value in [0, 1]."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-uri",
        help="models:/<name>@<alias> or models:/<name>/<version> "
        "(default: models:/<model_name>@champion)",
    )
    parser.add_argument(
        "--features",
        default=DEFAULT_FEATURES,
        metavar="MODULE:FUNCTION",
        help=f"point-in-time feature provider (default: {DEFAULT_FEATURES})",
    )
    parser.add_argument(
        "--approve-below",
        type=probability,
        default=0.2,
        help="approve when the default probability is below this (default 0.2)",
    )
    parser.add_argument(
        "--decline-at",
        type=probability,
        default=0.5,
        help="decline when the default probability is at or above this (default 0.5)",
    )


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of batch scoring."""
    parser.add_argument("--start", type=timestamp, help="score applications applied at or after")
    parser.add_argument("--end", type=timestamp, help="score applications applied before")
    parser.add_argument(
        "--arrow-batch-size",
        type=int,
        default=None,
        help="rows per Arrow batch handed to the model (spark.sql.execution.arrow."
        "maxRecordsPerBatch while scoring; default 50000)",
    )
    _add_common(parser)


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of stream scoring."""
    trigger = parser.add_mutually_exclusive_group()
    trigger.add_argument(
        "--available-now", action="store_true", help="score what has landed, then stop"
    )
    trigger.add_argument(
        "--processing-time",
        default=None,
        metavar="INTERVAL",
        help='micro-batch interval, for example "1 second"; runs until Ctrl-C or SIGTERM '
        '(the default trigger, "1 second")',
    )
    parser.add_argument(
        "--checkpoint", help="checkpoint folder (default: <home>/checkpoints/scoring)"
    )
    _add_common(parser)


def load_features_fn(spec: str) -> Callable[..., Any]:
    """Import ``module:function``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--features must be MODULE:FUNCTION, got {spec!r}")
    fn = getattr(importlib.import_module(module_name), attr, None)
    if not callable(fn):
        raise ValueError(f"--features: {spec} is not a function")
    return fn


# --- Runners ---------------------------------------------------------------------------------
def _scoring_options(args: argparse.Namespace) -> tuple[Any, Any] | None:
    """Decision thresholds and feature provider from the flags; None (message printed) if bad."""
    from lakehouse.scoring.predictions import DecisionThresholds

    try:
        return DecisionThresholds(args.approve_below, args.decline_at), load_features_fn(
            args.features
        )
    except (ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def run_batch(args: argparse.Namespace) -> int:
    """Score in batch and print what was written."""
    from lakehouse.platform.session import job_session
    from lakehouse.scoring.predictions import score_batch

    options = _scoring_options(args)
    if options is None:
        return 2
    thresholds, features_fn = options
    with job_session("lakehouse-score-batch") as job:
        try:
            report = score_batch(
                job.spark,
                job.settings,
                job.catalog,
                model_uri=args.model_uri,
                features_fn=features_fn,
                start=args.start,
                end=args.end,
                thresholds=thresholds,
                arrow_batch_size=args.arrow_batch_size,
            )
        except (LookupError, ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(
        f"{report.model_name} version {report.model_version}: {report.rows_scored} scored, "
        f"{report.rows_inserted} new predictions"
    )
    return 0


class StopSignal:
    """Turns SIGTERM and SIGINT into a flag the main loop polls (no Spark call in a handler)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: int | None = None

    def install(self) -> None:
        """Handle SIGTERM and SIGINT from now on."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        self.event.set()


def run_stream(args: argparse.Namespace) -> int:
    """Run the scoring stream until it catches up (available-now) or is stopped by a signal."""
    from pyspark.errors import StreamingQueryException

    from lakehouse.platform.session import job_session
    from lakehouse.scoring.predictions import start_scoring_stream

    options = _scoring_options(args)
    if options is None:
        return 2
    thresholds, features_fn = options
    stop = StopSignal()
    stop.install()
    processing_time = None if args.available_now else (args.processing_time or "1 second")
    with job_session("lakehouse-score-stream") as job:
        try:
            query = start_scoring_stream(
                job.spark,
                job.settings,
                job.catalog,
                available_now=args.available_now,
                processing_time=processing_time,
                model_uri=args.model_uri,
                features_fn=features_fn,
                thresholds=thresholds,
                checkpoint=args.checkpoint,
            )
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        try:
            while query.isActive and not stop.event.is_set():
                query.awaitTermination(1)
        except StreamingQueryException as exc:
            print(f"error: scoring stream failed: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1
        if stop.event.is_set():
            log.info("signal %s received: stopping the scoring stream", stop.received)
            query.stop()
            log.info("scoring stream stopped")
            return 0
        failure = query.exception()
        if failure is not None:
            print(f"error: scoring stream failed: {str(failure).splitlines()[0]}", file=sys.stderr)
            return 1
    log.info("scoring stream caught up and stopped")
    return 0
