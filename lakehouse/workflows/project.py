"""The entry points of the repository's ``MLproject`` that are not a job of their own.

``mlflow run . -e <entry point> --env-manager local`` creates a run, then runs the entry
point's command with ``MLFLOW_RUN_ID`` set to it. ``train`` and ``reproduce`` run
``jobs/train.py``, whose ``mlflow.start_run()`` resumes that run (MLflow reads
``MLFLOW_RUN_ID``), so the project run is the training run. Three commands live here::

    python -m lakehouse.workflows.project check      # before jobs/train.py, no Spark
    python -m lakehouse.workflows.project ingest [--stage all|bronze|silver|gold]
    python -m lakehouse.workflows.project evaluate [--model champion|VERSION ...]

``check`` refuses a project run that the training could not resume or would fail on: one in
another experiment than the platform's (MLflow refuses to resume a run outside the active
experiment), or whose params, as ``mlflow run`` logged them from ``-P``, differ from what the
training logs (``0.10`` for ``0.1``; MLflow never changes a logged param).

``ingest`` runs the medallion pipeline on one session, applies the feature definitions and
logs what it did to the project run. ``evaluate`` scores a registered version or alias on the
current holdout (the newest applications of today's training set) next to the champion, runs
the gate's rules and logs it all to the project run (or a run of its own without one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from lakehouse.models.config import GATE_METRICS, GateConfig, TrainConfig
from lakehouse.platform.errors import guarded
from lakehouse.platform.session import configure_logging
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.workflows.training import add_train_arguments, config_from_args, gate_from_args

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: MLflow hands the project run to the entry point's command in this variable.
RUN_ID_ENV = "MLFLOW_RUN_ID"
#: The run tag where ``mlflow run`` records the entry point.
ENTRY_POINT_TAG = "mlflow.project.entryPoint"
#: Exit codes: a project run the training cannot use, a failed stage, a failed gate check.
EXIT_BAD_RUN = 2
EXIT_EXPECTATION = 3
EXIT_GATE = 4


T = TypeVar("T")


class ProjectRunError(Exception):
    """A project run that the platform's training cannot resume as it is."""


def project_run_id() -> str | None:
    """The run ``mlflow run`` created for this process, if any."""
    return os.environ.get(RUN_ID_ENV) or None


def _say(lines: Sequence[str]) -> None:
    """Print what a command did (an entry point's output, as a job's)."""
    print("\n".join(lines), flush=True)  # noqa: T201


def _error(exc: Exception) -> None:
    print(f"error: {exc}", file=sys.stderr)  # noqa: T201


# --- check -------------------------------------------------------------------------------------
def train_param_mismatches(params: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Training params among ``params`` whose value the training would log differently.

    Returns ``name -> (value given, value the training logs)``. A value the training's flags
    refuse raises ``SystemExit`` with argparse's message.
    """
    fields = [name for name in TrainConfig.__dataclass_fields__ if name in params]
    parser = argparse.ArgumentParser(prog="mlflow run -e train")
    add_train_arguments(parser)
    argv = [arg for name in fields for arg in (f"--{name.replace('_', '-')}", params[name])]
    logged = config_from_args(parser.parse_args(argv)).to_params()
    return {name: (params[name], logged[name]) for name in fields if params[name] != logged[name]}


def check_project_run(settings: Settings, run_id: str | None = None) -> str | None:
    """Refuse a project run the training cannot resume; return its id (``None``: no run).

    The run must belong to the platform's experiment and, for the ``train`` entry point, hold
    each training param as the training logs it.
    """
    run_id = run_id or project_run_id()
    if run_id is None:
        return None
    from lakehouse.models.tracking import experiment_id, mlflow_client

    client = mlflow_client(settings)
    run = client.get_run(run_id)
    expected = experiment_id(settings)
    if run.info.experiment_id != expected:
        name = client.get_experiment(run.info.experiment_id).name
        raise ProjectRunError(
            f"run {run_id} is in experiment {name!r}, but the platform tracks in "
            f'{settings.experiment!r}: run `mlflow run` after `eval "$(lakehouse env)"` '
            f"or with --experiment-name {settings.experiment}"
        )
    if run.data.tags.get(ENTRY_POINT_TAG) == "train":
        mismatches = train_param_mismatches(dict(run.data.params))
        if mismatches:
            hint = ", ".join(f"{k}={v[1]} (not {v[0]})" for k, v in mismatches.items())
            raise ProjectRunError(f"the training logs these params otherwise; pass {hint}")
    return run_id


def run_check(args: argparse.Namespace) -> int:
    """``check``: exit 0 when the project run can be resumed (or there is none), else 2."""
    try:
        check_project_run(load_settings())
    except ProjectRunError as exc:
        _error(exc)
        return EXIT_BAD_RUN
    return 0


# --- ingest ------------------------------------------------------------------------------------
def run_ingest(args: argparse.Namespace) -> int:
    """``ingest``: the pipeline's stages on one session, then ``feast apply`` after gold."""
    from lakehouse.features.store import apply
    from lakehouse.medallion.expectations import ExpectationFailed
    from lakehouse.medallion.pipeline import STAGES, pipeline_lock, run_pipeline
    from lakehouse.platform.locks import LockBusy
    from lakehouse.platform.session import job_session

    settings = load_settings()
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    views: list[str] = []
    try:
        with pipeline_lock(settings), job_session("mlflow-project-ingest", settings) as job:
            report = run_pipeline(job.spark, job.settings, job.catalog, stages)
            if "gold" in stages:
                views = apply(job.settings)
    except LockBusy as exc:
        _error(exc)
        return exc.exit_code
    except ExpectationFailed as exc:
        _error(exc)
        return EXIT_EXPECTATION
    metrics = {"rows_ingested": float(report.rows_ingested)}
    metrics |= {f"{t.stage}_seconds": t.seconds for t in report.timings}
    metrics |= {f"rows.{table}": float(rows) for table, rows in report.gold.items()}
    tags = {"lakehouse.pipeline_run_id": report.run_id, "lakehouse.stages": ",".join(stages)}
    if views:
        tags["lakehouse.feature_views"] = ",".join(views)
    run_id = project_run_id()
    if run_id is not None:
        _log_to_run(_client(settings), run_id, metrics, tags)
    lines = [f"pipeline {report.run_id}: {report.rows_ingested} rows ingested ({'+'.join(stages)})"]
    lines += [f"  {table}: {rows} rows" for table, rows in report.gold.items()]
    if views:
        lines.append(f"feature views applied: {', '.join(views)}")
    _say(lines)
    return 0


def _client(settings: Settings) -> MlflowClient:
    from lakehouse.models.tracking import mlflow_client

    return mlflow_client(settings)


def _log_to_run(
    client: MlflowClient, run_id: str, metrics: dict[str, float], tags: dict[str, str]
) -> None:
    """Log metrics and tags to a run that another process owns (no ``start_run``)."""
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    for key, text in tags.items():
        client.set_tag(run_id, key, text)


# --- evaluate ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """A registered version's holdout metrics, beside the champion's, and the gate's verdict."""

    model_name: str
    version: int
    model_run_id: str
    metrics: dict[str, float]
    champion_version: int | None
    champion_metrics: dict[str, float] | None
    passed: bool
    reason: str
    holdout_rows: int
    table_versions: dict[str, int]


def resolve_version(aliases: dict[str, int], model: str) -> int:
    """A version number, or the version holding the alias ``model``."""
    if model.isdigit():
        return int(model)
    if model not in aliases:
        known = ", ".join(sorted(aliases)) or "none"
        raise ValueError(f"no alias {model!r} (aliases: {known})")
    return aliases[model]


def evaluate_version(
    settings: Settings, model: str, holdout_fraction: float, gate: GateConfig
) -> Evaluation:
    """Evaluate ``model`` (alias or version) and the champion on today's holdout."""
    from lakehouse.features.store import build_training_set
    from lakehouse.models.evaluation import evaluate
    from lakehouse.models.gate import decide
    from lakehouse.models.registry import CHAMPION, ModelRegistry
    from lakehouse.models.training import prepare_split
    from lakehouse.platform.session import job_session

    registry = ModelRegistry.of(settings)
    aliases = registry.aliases()
    version = resolve_version(aliases, model)
    model_version = registry.require_version(version)
    with job_session("mlflow-project-evaluate", settings) as job:
        training_set = build_training_set(job.spark, job.settings, job.catalog)
    split = prepare_split(training_set, TrainConfig(holdout_fraction=holdout_fraction))
    metrics = evaluate(registry.load(version), split.X_holdout, split.y_holdout)
    champion = aliases.get(CHAMPION)
    champion_metrics = None
    if champion is not None and champion != version:
        champion_metrics = evaluate(registry.load(champion), split.X_holdout, split.y_holdout)
    passed, reason = decide(
        metrics[gate.metric],
        champion_metrics[gate.metric] if champion_metrics else None,
        gate,
    )
    return Evaluation(
        model_name=registry.name,
        version=version,
        model_run_id=model_version.run_id or "",
        metrics=metrics,
        champion_version=champion if champion_metrics else None,
        champion_metrics=champion_metrics,
        passed=passed,
        reason=reason,
        holdout_rows=len(split.holdout_frame),
        table_versions=split.table_versions,
    )


def log_evaluation(settings: Settings, result: Evaluation, params: dict[str, str]) -> str:
    """Log ``result`` to the project run (resumed) or a new run; return the run's id.

    Params the project run holds already (``mlflow run`` logs the ``-P`` values) are kept.
    """
    import mlflow

    from lakehouse.models.tracking import experiment_id, mlflow_client

    client = mlflow_client(settings)
    name = f"evaluate-{result.model_name}-v{result.version}"
    with mlflow.start_run(run_name=name, experiment_id=experiment_id(settings)) as run:
        held = client.get_run(run.info.run_id).data.params
        mlflow.log_params({k: v for k, v in params.items() if k not in held})
        mlflow.log_params(
            {
                "model_name": result.model_name,
                "model_version": result.version,
                "model_run_id": result.model_run_id,
                "holdout_rows": result.holdout_rows,
                "table_versions": json.dumps(result.table_versions, sort_keys=True),
            }
        )
        mlflow.log_metrics(result.metrics)
        if result.champion_metrics is not None:
            mlflow.log_metrics({f"champion_{k}": v for k, v in result.champion_metrics.items()})
        mlflow.set_tags(
            {
                "lakehouse.evaluated_model": f"models:/{result.model_name}/{result.version}",
                "lakehouse.evaluation.passed": str(result.passed).lower(),
                "lakehouse.evaluation.reason": result.reason,
                **(
                    {"lakehouse.evaluation.champion_version": str(result.champion_version)}
                    if result.champion_version is not None
                    else {}
                ),
                **{f"lakehouse.input.{k}": str(v) for k, v in result.table_versions.items()},
            }
        )
        return str(run.info.run_id)


def run_evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: 0 when evaluated (4 with ``--require-pass true`` and a failing gate)."""
    settings = load_settings()
    try:
        # The training's gate: ml_gate.yaml (or --gate-file), the --gate-* flags over it.
        gate = gate_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        _error(exc)
        return 1
    try:
        check_project_run(settings)
        result = evaluate_version(settings, args.model, args.holdout_fraction, gate)
    except ProjectRunError as exc:
        _error(exc)
        return EXIT_BAD_RUN
    except (ValueError, FileNotFoundError) as exc:
        _error(exc)
        return 1
    params = {
        "model": args.model,
        "holdout_fraction": str(args.holdout_fraction),
        # The thresholds in effect (the -P values may be none: the gate file's).
        "gate.metric": gate.metric,
        "gate.min_value": str(gate.min_value),
        "gate.tolerance": str(gate.tolerance),
    }
    run_id = log_evaluation(settings, result, params)
    lines = [
        f"run {run_id}: {result.model_name} version {result.version} "
        f"on {result.holdout_rows} holdout rows"
    ]
    for name, value in result.metrics.items():
        other = (result.champion_metrics or {}).get(name)
        beside = "" if other is None else f"  (champion v{result.champion_version}: {other:.4f})"
        lines.append(f"  {name:<10} {value:.4f}{beside}")
    lines.append(f"gate: {'passes' if result.passed else 'fails'} ({result.reason})")
    _say(lines)
    return EXIT_GATE if args.require_pass and not result.passed else 0


# --- Command line ------------------------------------------------------------------------------
def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"must be true or false, got {text!r}")
    return lowered == "true"


def _optional(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    """``parse``, with ``none`` (an MLproject parameter left at its default) for no value."""

    def parse_optional(text: str) -> T | None:
        return None if text.lower() == "none" else parse(text)

    return parse_optional


def _metric(text: str) -> str:
    if text not in GATE_METRICS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(GATE_METRICS)}, got {text}")
    return text


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The commands of the ``MLproject`` entry points."""
    parser = argparse.ArgumentParser(
        prog="python -m lakehouse.workflows.project", description=__doc__.splitlines()[0]
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = sub.add_parser("check", help="refuse a project run the training cannot resume")
    check.set_defaults(handler=run_check)
    ingest = sub.add_parser("ingest", help="run the pipeline, apply the feature definitions")
    ingest.add_argument(
        "--stage", choices=("all", "bronze", "silver", "gold"), default="all", help="stage(s)"
    )
    ingest.set_defaults(handler=run_ingest)
    evaluate = sub.add_parser("evaluate", help="evaluate a registered version on the holdout")
    gate, config = GateConfig(), TrainConfig()
    evaluate.set_defaults(auto_promote=None)
    evaluate.add_argument(
        "--model", default="champion", help="alias or version number (default champion)"
    )
    evaluate.add_argument(
        "--holdout-fraction",
        type=_fraction,
        default=config.holdout_fraction,
        help=f"share of the newest applications held out (default {config.holdout_fraction})",
    )
    evaluate.add_argument(
        "--gate-file", type=Path, help="the gate's thresholds (default ./ml_gate.yaml if present)"
    )
    evaluate.add_argument(
        "--gate-metric",
        type=_optional(_metric),
        help=f"metric the gate checks, none: the gate file's (built in {gate.metric})",
    )
    evaluate.add_argument(
        "--gate-floor",
        type=_optional(float),
        help=f"floor of the gate metric, none: the gate file's (built in {gate.min_value})",
    )
    evaluate.add_argument(
        "--gate-tolerance",
        type=_optional(float),
        help=f"tolerance against the champion, none: the gate file's (built in {gate.tolerance})",
    )
    evaluate.add_argument(
        "--require-pass",
        type=_boolean,
        default=False,
        help="true: exit 4 when the version would fail the gate",
    )
    evaluate.set_defaults(handler=run_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code."""
    args = build_parser().parse_args(argv)
    name = f"mlproject-{getattr(args, 'command', None) or 'run'}"
    configure_logging(args.verbose, name)
    return guarded(name, lambda: int(args.handler(args)))


if __name__ == "__main__":
    sys.exit(main())
