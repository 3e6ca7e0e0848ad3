"""Training as ``lakehouse train`` and ``jobs/train.py`` run it: flags, training set, summary.

Both read the same flags (:func:`add_train_arguments`, checked by
:func:`check_train_arguments`) and run :func:`train_from_args`: it trains, sweeps
(:func:`run_sweep`) or reproduces (:func:`run_training`) and returns what to print
(:func:`summary_lines` or :func:`sweep_summary_lines`) with the exit status:
:data:`GATE_REJECTED_EXIT` when the gate rejects the candidate, with :func:`gate_failure_line`
for stderr.

The gate's thresholds come from a gate file (``--gate-file``, default ``./ml_gate.yaml`` when
present, else the defaults of :class:`~lakehouse.models.config.GateConfig`); explicit
``--gate-*`` flags override it (:func:`gate_from_args`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from lakehouse.models.config import (
    DEFAULT_SWEEP_GRID,
    GATE_FILE,
    GATE_METRICS,
    LOWER_IS_BETTER,
    MODEL_TYPES,
    GateConfig,
    TrainConfig,
    default_gate_file,
    expand_grid,
    load_gate_config,
    load_sweep_grid,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakehouse.models.gate import GateDecision
    from lakehouse.models.training import SweepResult, TrainResult
    from lakehouse.platform.catalog import TableCatalog
    from lakehouse.platform.settings import Settings

#: Exit status of ``lakehouse train`` and ``jobs/train.py`` when the gate rejects the candidate.
GATE_REJECTED_EXIT = 3

#: The exit statuses, for the ``--help`` of both (an argparse epilog).
EXIT_STATUS_HELP = f"""\
exit status:
  0  trained (the gate passed the candidate, or there was nothing to gate)
  1  error: bad gate file or sweep grid, unknown run, no data to train on
  2  bad flags
  {GATE_REJECTED_EXIT}  the gate rejected the candidate; one line on stderr names the metric,
     the candidate's value, the threshold and the champion's figure

The gate reads {GATE_FILE} (metric, min_value, tolerance, auto_promote) from the working
directory unless --gate-file names another; --gate-* flags override it."""


def positive_int(text: str) -> int:
    """A flag value that must be an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _depth(text: str) -> int | None:
    return None if text.lower() == "none" else positive_int(text)


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
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXIT_STATUS_HELP
    parser.add_argument(
        "--model-type", choices=MODEL_TYPES, default=defaults.model_type, help="model family"
    )
    parser.add_argument(
        "--n-estimators",
        type=positive_int,
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
        type=positive_int,
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
        "--gate-file",
        metavar="PATH",
        type=Path,
        help=f"the gate's thresholds, YAML (default ./{GATE_FILE} if present, else built in)",
    )
    parser.add_argument(
        "--gate-metric",
        choices=GATE_METRICS,
        help=f"metric the gate checks (overrides the gate file; built in {gate.metric})",
    )
    parser.add_argument(
        "--gate-floor",
        "--gate-min-value",
        dest="gate_floor",
        type=float,
        help="absolute floor of the gate metric, a ceiling for log_loss and brier "
        f"(overrides the gate file; built in {gate.min_value})",
    )
    parser.add_argument(
        "--gate-tolerance",
        type=_non_negative,
        help="how much worse than the champion is tolerated "
        f"(overrides the gate file; built in {gate.tolerance})",
    )
    parser.add_argument(
        "--promote",
        dest="auto_promote",
        action=argparse.BooleanOptionalAction,
        help="make a passing model champion at once (--no-promote: leave it challenger; "
        "overrides the gate file; built in --promote)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--reproduce",
        metavar="RUN_ID",
        help="retrain with the params and Delta table versions of an earlier run",
    )
    mode.add_argument(
        "--sweep",
        action="store_true",
        help="train a grid of configurations as child runs of one parent run; register and "
        "gate only the best by the gate metric (default grid: "
        + "; ".join(_describe_grid(entry) for entry in DEFAULT_SWEEP_GRID)
        + "; other parameters from the flags)",
    )
    parser.add_argument(
        "--sweep-grid",
        metavar="FILE",
        type=Path,
        help="YAML grid of the sweep (implies --sweep): a list of mappings of training "
        "parameters to a value or a list of values, e.g. "
        "'- {model_type: random_forest, max_depth: [6, 10]}'",
    )


def _describe_grid(entry: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in entry.items())


def check_train_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse combinations of training flags argparse cannot express (exits with usage)."""
    if args.reproduce and args.sweep_grid is not None:
        parser.error("argument --sweep-grid: not allowed with argument --reproduce")


def is_sweep(args: argparse.Namespace) -> bool:
    """Whether the flags ask for a sweep (``--sweep`` or ``--sweep-grid``)."""
    return bool(getattr(args, "sweep", False) or getattr(args, "sweep_grid", None))


def sweep_configs(args: argparse.Namespace) -> list[TrainConfig]:
    """The configurations of the sweep: ``--sweep-grid``'s or the default grid's, over the flags.

    Raises:
        ValueError, FileNotFoundError: a bad or missing grid file (the message names it).
    """
    base = config_from_args(args)
    if getattr(args, "sweep_grid", None) is not None:
        return load_sweep_grid(args.sweep_grid, base)
    return expand_grid(DEFAULT_SWEEP_GRID, base, source="default sweep grid")


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


def gate_from_args(args: argparse.Namespace, cwd: Path | None = None) -> GateConfig:
    """The :class:`GateConfig` of the gate file, with the explicit ``--gate-*`` flags over it.

    The gate file is ``--gate-file``, else ``ml_gate.yaml`` in ``cwd`` (default the working
    directory) when it exists; without one the built-in defaults apply.

    Raises:
        ValueError, FileNotFoundError: a bad or missing gate file (the message names it).
    """
    path = getattr(args, "gate_file", None) or default_gate_file(cwd)
    gate = load_gate_config(path) if path is not None else GateConfig()
    overrides = {
        "metric": getattr(args, "gate_metric", None),
        "min_value": getattr(args, "gate_floor", None),
        "tolerance": getattr(args, "gate_tolerance", None),
        "auto_promote": getattr(args, "auto_promote", None),
    }
    return replace(gate, **{k: v for k, v in overrides.items() if v is not None})


def run_training(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    args: argparse.Namespace,
    gate: GateConfig | None = None,
) -> TrainResult:
    """Train on the feature store's training set (or reproduce a run) as the flags say.

    ``gate`` defaults to :func:`gate_from_args`.
    """
    # Imported here: the CLI builds its parser from this module without Feast, MLflow or sklearn.
    from lakehouse.features.store import build_training_set
    from lakehouse.models.training import reproduce, train

    if args.reproduce:
        return reproduce(args.reproduce, spark, settings, catalog, build=build_training_set)
    return train(
        build_training_set(spark, settings, catalog),
        config_from_args(args),
        settings,
        gate=gate or gate_from_args(args),
        spark=spark,
        catalog=catalog,
    )


def run_sweep(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    args: argparse.Namespace,
    gate: GateConfig | None = None,
    configs: list[TrainConfig] | None = None,
) -> SweepResult:
    """Sweep the grid of the flags (:func:`sweep_configs`) on the feature store's training set."""
    # Imported here: the CLI builds its parser from this module without Feast, MLflow or sklearn.
    from lakehouse.features.store import build_training_set
    from lakehouse.models.training import sweep

    return sweep(
        build_training_set(spark, settings, catalog),
        configs if configs is not None else sweep_configs(args),
        settings,
        gate=gate or gate_from_args(args),
        spark=spark,
        catalog=catalog,
    )


@dataclass(frozen=True)
class TrainOutcome:
    """What ``lakehouse train`` and ``jobs/train.py`` print, and their exit status."""

    status: int
    #: The summary, for stdout.
    lines: list[str] = field(default_factory=list)
    #: One line for stderr: the error, or why the gate rejected the candidate.
    error: str | None = None


def train_from_args(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    args: argparse.Namespace,
    gate: GateConfig | None = None,
    configs: list[TrainConfig] | None = None,
) -> TrainOutcome:
    """Train, sweep or reproduce as the flags say; the summary and the exit status.

    Status 0 when the gate passed the candidate (or nothing was gated), 1 on an error
    (``error: ...``) and :data:`GATE_REJECTED_EXIT` when the gate rejected the candidate (the
    summary and :func:`gate_failure_line`). ``gate`` and ``configs`` default to
    :func:`gate_from_args` and :func:`sweep_configs`.
    """
    try:
        if is_sweep(args):
            swept = run_sweep(spark, settings, catalog, args, gate, configs)
            decision = swept.best.decision
            lines = sweep_summary_lines(swept, settings)
        else:
            result = run_training(spark, settings, catalog, args, gate)
            decision = result.decision
            lines = summary_lines(result, settings, reproduced=args.reproduce)
    except (ValueError, FileNotFoundError) as exc:
        return TrainOutcome(1, error=f"error: {exc}")
    if decision is not None and not decision.passed:
        return TrainOutcome(GATE_REJECTED_EXIT, lines, gate_failure_line(decision))
    return TrainOutcome(0, lines)


def gate_failure_line(decision: GateDecision) -> str:
    """One line on a rejected candidate: the metric, its value, the threshold, the champion's."""
    lower = decision.metric in LOWER_IS_BETTER
    bounds = [decision.floor]
    if decision.champion_value is not None:
        step = decision.tolerance if lower else -decision.tolerance
        bounds.append(decision.champion_value + step)
    threshold = min(bounds) if lower else max(bounds)
    champion = (
        "no champion"
        if decision.champion_value is None
        else f"champion version {decision.champion_version}: {decision.champion_value:.4f}, "
        f"tolerance {decision.tolerance}"
    )
    return (
        f"gate rejected {decision.model_name} version {decision.candidate_version}: "
        f"{decision.metric} {decision.candidate_value:.4f} is "
        f"{'above' if lower else 'below'} the threshold {threshold:.4f} "
        f"({'ceiling' if lower else 'floor'} {decision.floor}; {champion})"
    )


def artifact_location(uri: str) -> str:
    """A local path for a ``file:`` artifact URI, else the URI itself."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("file", "") else uri


def sweep_summary_lines(result: SweepResult, settings: Settings) -> list[str]:
    """What a sweep produced: each child's metric and cost, the best, the plot, the verdict."""
    best = result.best
    first = result.children[0]
    lines = [
        f"sweep run {result.parent_run_id}: {len(result.children)} runs",
        f"rows: {first.train_rows} training, {first.holdout_rows} holdout",
        f"inputs: {json.dumps(first.table_versions, sort_keys=True)}",
    ]
    for n, child in enumerate(result.children, 1):
        mark = "*" if child.run_id == best.run_id else " "
        lines.append(
            f"{mark} {n:>2} run {child.run_id}  {result.metric} "
            f"{child.metrics[result.metric]:.4f}  {child.cost.get('training_seconds', 0):.2f}s  "
            f"{child.cost.get('peak_memory_mb', 0):.1f} MB"
        )
    registered = f": {settings.model_name} version {best.version}" if best.version else ""
    lines.append(
        f"best: run {best.run_id} ({result.metric} {best.metrics[result.metric]:.4f}){registered}"
    )
    lines.append(f"plot: {artifact_location(result.plot_uri)}")
    if best.decision is not None:
        lines.append(f"gate: {best.decision.verdict} ({best.decision.reason})")
    return lines


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
