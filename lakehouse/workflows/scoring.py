"""Scoring runs as the ``lakehouse score`` command and the scoring jobs start them.

The flags, their parsing and the runs live here so the CLI and ``jobs/*_score.py`` share them
without the jobs importing the CLI. Runs return what they did and raise :class:`ScoringError`
for a failure the caller reports; printing is the caller's.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING

from pyspark.errors import StreamingQueryException

from lakehouse.platform.errors import one_line
from lakehouse.platform.logs import TERMINAL_ATTR
from lakehouse.platform.session import job_session
from lakehouse.scoring.decisions import DecisionThresholds

if TYPE_CHECKING:
    from lakehouse.scoring.predictions import FeaturesFn, ScoringReport

log = logging.getLogger(__name__)

#: The default point-in-time feature provider, as ``module:function``.
DEFAULT_FEATURES = "lakehouse.features.store:historical_features"
#: Micro-batch interval of the stream when no trigger flag is given.
DEFAULT_PROCESSING_TIME = "1 second"


class ScoringError(Exception):
    """A scoring run that failed in a way worth one line to the user, with its exit code.

    ``exit_code`` is 2 for bad options (as argparse uses) and 1 for a failed run.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
        f'(the default trigger, "{DEFAULT_PROCESSING_TIME}")',
    )
    parser.add_argument(
        "--checkpoint", help="checkpoint folder (default: <home>/checkpoints/scoring)"
    )
    _add_common(parser)


def load_features_fn(spec: str) -> FeaturesFn:
    """Import ``module:function``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--features must be MODULE:FUNCTION, got {spec!r}")
    fn = getattr(importlib.import_module(module_name), attr, None)
    if not callable(fn):
        raise ValueError(f"--features: {spec} is not a function")
    return fn


def scoring_options(args: argparse.Namespace) -> tuple[DecisionThresholds, FeaturesFn]:
    """Decision thresholds and feature provider from the flags.

    Raises:
        ScoringError: (exit code 2) the thresholds are out of order or the provider is not found.
    """
    try:
        return DecisionThresholds(args.approve_below, args.decline_at), load_features_fn(
            args.features
        )
    except (ValueError, ImportError) as exc:
        raise ScoringError(str(exc), exit_code=2) from exc


# --- Batch -----------------------------------------------------------------------------------
def run_batch(args: argparse.Namespace) -> ScoringReport:
    """Score in batch, with a session of its own, as the flags of :func:`add_batch_arguments` say.

    Raises:
        ScoringError: bad options (exit code 2), or no model, no table, a bad range (1).
    """
    # Imported here: MLflow takes seconds to import and the CLI builds its parser from this module.
    from lakehouse.scoring.batch import score_batch

    thresholds, features_fn = scoring_options(args)
    with job_session("lakehouse-score-batch") as job:
        try:
            return score_batch(
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
            raise ScoringError(str(exc)) from exc


def batch_summary(report: ScoringReport) -> str:
    """The one line a batch run prints."""
    return (
        f"{report.model_name} version {report.model_version}: {report.rows_scored} scored, "
        f"{report.rows_inserted} new predictions"
    )


# --- Stream ----------------------------------------------------------------------------------
def _stream_failed(exc: BaseException) -> ScoringError:
    """The one-line error of a failed stream; its trace goes to the log file only."""
    log.error("scoring stream failed", exc_info=exc, extra={TERMINAL_ATTR: False})
    return ScoringError(f"scoring stream failed: {one_line(exc)}")


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


@dataclass(frozen=True)
class StreamEnd:
    """How a scoring stream ended without error."""

    #: The signal that stopped it; ``None`` when it caught up and stopped (available-now).
    stopped_by: int | None


def run_stream(args: argparse.Namespace) -> StreamEnd:
    """Run the scoring stream until it catches up (available-now) or a signal stops it.

    SIGTERM and SIGINT are handled from the start of the run: the query is then stopped
    between polls, cleanly, and the run returns.

    Raises:
        ScoringError: bad options (exit code 2), or the stream could not start or failed (1).
    """
    # Imported here: MLflow takes seconds to import and the CLI builds its parser from this module.
    from lakehouse.scoring.stream import start_scoring_stream

    thresholds, features_fn = scoring_options(args)
    stop = StopSignal()
    stop.install()
    processing_time = (
        None if args.available_now else (args.processing_time or DEFAULT_PROCESSING_TIME)
    )
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
            raise ScoringError(str(exc)) from exc
        try:
            while query.isActive and not stop.event.is_set():
                query.awaitTermination(1)
        except StreamingQueryException as exc:
            raise _stream_failed(exc) from exc
        if stop.event.is_set():
            log.info("signal %s received: stopping the scoring stream", stop.received)
            query.stop()
            log.info("scoring stream stopped")
            return StreamEnd(stopped_by=stop.received)
        failure = query.exception()
        if failure is not None:
            raise _stream_failed(failure)
    log.info("scoring stream caught up and stopped")
    return StreamEnd(stopped_by=None)
