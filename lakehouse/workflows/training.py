"""Training as ``lakehouse train`` and ``jobs/train.py`` run it: flags, training set, summary.

Both read the same flags (:func:`add_train_arguments`), train or reproduce through
:func:`run_training` and print :func:`summary_lines`.
"""

from __future__ import annotations

import argparse
import json
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
    """Train on the feature store's training set (or reproduce a run) as the flags say."""
    # Imported here: the CLI builds its parser from this module without Feast, MLflow or sklearn.
    from lakehouse.features.store import build_training_set
    from lakehouse.models.training import reproduce, train

    if args.reproduce:
        return reproduce(args.reproduce, spark, settings, catalog, build=build_training_set)
    return train(
        build_training_set(spark, settings, catalog),
        config_from_args(args),
        settings,
        gate=gate_from_args(args),
        spark=spark,
        catalog=catalog,
    )


def summary_lines(
    result: TrainResult, settings: Settings, reproduced: str | None = None
) -> list[str]:
    """What a run produced, line by line: run, version, rows, inputs, metrics, verdict.

    ``reproduced`` is the id of the run that ``result`` reproduces, if it does.
    """
    if reproduced:
        lines = [f"reproduced run {reproduced} as run {result.run_id}"]
    else:
        lines = [f"run {result.run_id}: {settings.model_name} version {result.version}"]
    lines.append(f"rows: {result.train_rows} training, {result.holdout_rows} holdout")
    lines.append(f"inputs: {json.dumps(result.table_versions, sort_keys=True)}")
    lines += [f"  {name:<10} {value:.4f}" for name, value in result.metrics.items()]
    if result.decision is not None:
        lines.append(f"gate: {result.decision.verdict} ({result.decision.reason})")
    return lines
