"""``lakehouse train``: build the training set, train, register and gate a model."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from lakehouse.models.config import GATE_METRICS, MODEL_TYPES, GateConfig, TrainConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakehouse.models.training import TrainResult
    from lakehouse.platform.catalog import TableCatalog
    from lakehouse.platform.settings import Settings


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _depth(text: str) -> int | None:
    return None if text.lower() == "none" else _positive_int(text)


def _open_fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def _learning_rate(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The training flags shared by ``lakehouse train`` and ``jobs/train.py``."""
    defaults = TrainConfig()
    gate = GateConfig()
    parser.add_argument(
        "--model-type", choices=MODEL_TYPES, default=defaults.model_type, help="model family"
    )
    parser.add_argument(
        "--n-estimators",
        type=_positive_int,
        default=defaults.n_estimators,
        help=f"trees, or boosting iterations (default {defaults.n_estimators})",
    )
    parser.add_argument(
        "--max-depth",
        type=_depth,
        default=defaults.max_depth,
        help=f"maximum tree depth or 'none' (default {defaults.max_depth})",
    )
    parser.add_argument(
        "--learning-rate",
        type=_learning_rate,
        default=defaults.learning_rate,
        help=f"gradient boosting shrinkage (default {defaults.learning_rate})",
    )
    parser.add_argument(
        "--min-samples-leaf",
        type=_positive_int,
        default=defaults.min_samples_leaf,
        help=f"minimum rows per leaf (default {defaults.min_samples_leaf})",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    parser.add_argument(
        "--holdout-fraction",
        type=_open_fraction,
        default=defaults.holdout_fraction,
        help=f"share of the newest applications held out (default {defaults.holdout_fraction})",
    )
    parser.add_argument(
        "--gate-metric", choices=GATE_METRICS, default=gate.metric, help="metric the gate checks"
    )
    parser.add_argument(
        "--gate-floor",
        type=float,
        default=gate.min_value,
        help=f"absolute floor of the gate metric (default {gate.min_value})",
    )
    parser.add_argument(
        "--gate-tolerance",
        type=_non_negative,
        default=gate.tolerance,
        help=f"how much worse than the champion is tolerated (default {gate.tolerance})",
    )
    parser.add_argument(
        "--no-promote",
        action="store_true",
        help="leave a passing model as challenger instead of making it champion",
    )
    parser.add_argument(
        "--reproduce",
        metavar="RUN_ID",
        help="retrain with the params and Delta table versions of an earlier run",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the flags describe."""
    return TrainConfig(
        model_type=args.model_type,
        n_estimators=args.n_estimators,
        max_depth=args.max_depth,
        learning_rate=args.learning_rate,
        min_samples_leaf=args.min_samples_leaf,
        seed=args.seed,
        holdout_fraction=args.holdout_fraction,
    )


def gate_from_args(args: argparse.Namespace) -> GateConfig:
    """The :class:`GateConfig` the flags describe."""
    return GateConfig(
        metric=args.gate_metric,
        min_value=args.gate_floor,
        tolerance=args.gate_tolerance,
        auto_promote=not args.no_promote,
    )


def run_training(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, args: argparse.Namespace
) -> TrainResult:
    """Train (or reproduce) as the flags say; print a summary; return the result."""
    from lakehouse.models.training import reproduce, train

    if args.reproduce:
        result = reproduce(args.reproduce, spark, settings, catalog)
        print(f"reproduced run {args.reproduce} as run {result.run_id}")
    else:
        from lakehouse.features.store import build_training_set

        training_set = build_training_set(spark, settings, catalog)
        result = train(
            training_set,
            config_from_args(args),
            settings,
            gate=gate_from_args(args),
            spark=spark,
            catalog=catalog,
        )
        print(f"run {result.run_id}: {settings.model_name} version {result.version}")
    print(f"rows: {result.train_rows} training, {result.holdout_rows} holdout")
    print(f"inputs: {json.dumps(result.table_versions, sort_keys=True)}")
    for name, value in result.metrics.items():
        print(f"  {name:<10} {value:.4f}")
    if result.decision is not None:
        print(f"gate: {result.decision.verdict} ({result.decision.reason})")
    return result


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
    """Run training in a Spark session of its own."""
    from lakehouse.platform.session import job_session

    with job_session("lakehouse-train") as job:
        try:
            run_training(job.spark, job.settings, job.catalog, args)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0
