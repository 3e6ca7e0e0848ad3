"""The model registry: the evaluation gate, promotion, rollback and history.

A new version of the model passes the gate when, on the same time-based holdout, it reaches an
absolute floor of the gate metric (default ROC AUC >= 0.70) and is not worse than the current
champion by more than a tolerance (default 0.01). The checks are expressed as MLflow
:class:`~mlflow.models.MetricThreshold` objects and run by
:func:`mlflow.validate_evaluation_results`.

Aliases are the source of truth and the legacy stages are kept in step with them, so
``models:/<name>@champion`` and ``models:/<name>/Production`` always load the same version:

==============  ===============  =========================================================
alias           stage            meaning
==============  ===============  =========================================================
``champion``    ``Production``   the model that scores; one version at a time
``challenger``  ``Staging``      passed the gate, waiting for promotion
(none)          ``Archived``     a former champion or challenger
==============  ===============  =========================================================

Every champion is appended to the registered model's tag ``lakehouse.champion_history``
(a JSON list of versions), which :func:`rollback` walks back. Every gate decision is a set of
tags on its model version and, given Spark, a row of ``gold.model_gate_audit``.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lakehouse.models.config import GATE_METRICS as GATE_METRICS
from lakehouse.models.config import LOWER_IS_BETTER as LOWER_IS_BETTER
from lakehouse.models.config import GateConfig as GateConfig
from lakehouse.platform.catalog import GOLD_MODEL_GATE_AUDIT
from lakehouse.platform.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakehouse.platform.catalog import TableCatalog

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PRODUCTION = "Production"
STAGING = "Staging"
ARCHIVED = "Archived"
HISTORY_TAG = "lakehouse.champion_history"
GATE_TAG_PREFIX = "lakehouse.gate."

PROMOTED = "promoted"
CHALLENGER_VERDICT = "challenger"
REJECTED = "rejected"

# GATE_METRICS, LOWER_IS_BETTER and GateConfig are imported above from
# lakehouse.models.config, which the CLI reads without importing MLflow.

#: One row per gate decision.
GATE_AUDIT_SCHEMA = StructType(
    [
        StructField("decided_at", TimestampType(), False),
        StructField("model_name", StringType(), False),
        StructField("candidate_version", LongType(), False),
        StructField("candidate_run_id", StringType(), False),
        StructField("champion_version", LongType(), True),  # null when there was no champion
        StructField("metric", StringType(), False),
        StructField("candidate_value", DoubleType(), False),
        StructField("champion_value", DoubleType(), True),
        StructField("floor", DoubleType(), False),
        StructField("tolerance", DoubleType(), False),
        StructField("passed", BooleanType(), False),
        StructField("verdict", StringType(), False),  # promoted | challenger | rejected
        StructField("reason", StringType(), False),
        StructField("holdout_rows", LongType(), False),
        StructField("candidate_metrics", StringType(), False),  # JSON object
        StructField("champion_metrics", StringType(), True),  # JSON object
        StructField("table_versions", StringType(), False),  # JSON: Delta table -> version
    ]
)


@dataclass(frozen=True)
class GateDecision:
    """The outcome of one gate evaluation."""

    model_name: str
    candidate_version: int
    candidate_run_id: str
    champion_version: int | None
    metric: str
    candidate_value: float
    champion_value: float | None
    floor: float
    tolerance: float
    passed: bool
    verdict: str
    reason: str
    holdout_rows: int
    decided_at: datetime
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    table_versions: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionRecord:
    """One model version as ``lakehouse model history`` shows it."""

    version: int
    run_id: str
    aliases: tuple[str, ...]
    stage: str
    metric_value: float | None
    verdict: str
    reason: str
    created_at: datetime


# --- The decision ----------------------------------------------------------------------------
def decide(
    candidate_value: float, champion_value: float | None, gate: GateConfig | None = None
) -> tuple[bool, str]:
    """Apply the floor and the champion comparison; return (passed, reason).

    Both checks are :class:`~mlflow.models.MetricThreshold` values validated by
    :func:`mlflow.validate_evaluation_results`; the reason joins the failure messages.
    """
    from mlflow.models import EvaluationResult, MetricThreshold
    from mlflow.models.evaluation.validation import (
        ModelValidationFailedException,
        validate_evaluation_results,
    )

    gate = gate or GateConfig()
    if not np.isfinite(candidate_value):
        raise ValueError(f"candidate {gate.metric} is not a number: {candidate_value}")
    better = gate.greater_is_better
    checks = [("floor", float(gate.min_value))]
    if champion_value is not None:
        bound = champion_value - gate.tolerance if better else champion_value + gate.tolerance
        checks.append(("champion", float(bound)))
    candidate = EvaluationResult(metrics={gate.metric: float(candidate_value)}, artifacts={})
    failures: list[str] = []
    for name, bound in checks:
        threshold = MetricThreshold(threshold=bound, greater_is_better=better)
        try:
            validate_evaluation_results({gate.metric: threshold}, candidate)
        except ModelValidationFailedException:
            if name == "floor":
                failures.append(
                    f"{gate.metric} {candidate_value:.4f} is below the floor {gate.min_value}"
                    if better
                    else f"{gate.metric} {candidate_value:.4f} is above the ceiling "
                    f"{gate.min_value}"
                )
            else:
                failures.append(
                    f"{gate.metric} {candidate_value:.4f} is worse than the champion's "
                    f"{champion_value:.4f} by more than {gate.tolerance}"
                )
    if failures:
        return False, "; ".join(failures)
    if champion_value is None:
        return True, f"{gate.metric} {candidate_value:.4f} meets the floor; no champion yet"
    return True, (
        f"{gate.metric} {candidate_value:.4f} meets the floor {gate.min_value} and is within "
        f"{gate.tolerance} of the champion's {champion_value:.4f}"
    )


# --- Registry access -------------------------------------------------------------------------
def client(settings: Settings) -> MlflowClient:
    """An MLflow client on the settings' stores (connecting MLflow to them first)."""
    from lakehouse.models.tracking import connect

    connect(settings)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def alias_version(settings: Settings, alias: str) -> int | None:
    """The version holding ``alias``, or ``None`` (also when the model is not registered)."""
    aliases = _aliases(client(settings), settings.model_name)
    return aliases.get(alias)


def champion_version(settings: Settings) -> int | None:
    """The current champion's version, or ``None``."""
    return alias_version(settings, CHAMPION)


def model_uri(settings: Settings, alias: str = CHAMPION) -> str:
    """``models:/<name>@<alias>``."""
    return f"models:/{settings.model_name}@{alias}"


def load_version(settings: Settings, version: int) -> Any:
    """The scikit-learn pipeline of one registered version (with ``predict_proba``)."""
    import mlflow.sklearn

    client(settings)
    return mlflow.sklearn.load_model(f"models:/{settings.model_name}/{version}")


def _aliases(mlflow_client: MlflowClient, name: str) -> dict[str, int]:
    try:
        model = mlflow_client.get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: int(v) for alias, v in (model.aliases or {}).items()}


def _require_version(mlflow_client: MlflowClient, name: str, version: int) -> Any:
    try:
        return mlflow_client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise ValueError(f"model {name!r} has no version {version}") from exc


def _transition(mlflow_client: MlflowClient, name: str, version: int, stage: str) -> None:
    """Legacy stage transition (deprecated in MLflow, kept in step with the aliases)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow_client.transition_model_version_stage(
            name, str(version), stage, archive_existing_versions=stage != ARCHIVED
        )


def _champion_history(mlflow_client: MlflowClient, name: str) -> list[int]:
    tags = mlflow_client.get_registered_model(name).tags or {}
    return [int(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]


def _now() -> datetime:
    return datetime.now(UTC)


def _set_champion(mlflow_client: MlflowClient, name: str, version: int) -> int | None:
    """Move ``champion`` (and Production) to ``version``; archive the former champion."""
    aliases = _aliases(mlflow_client, name)
    previous = aliases.get(CHAMPION)
    mlflow_client.set_registered_model_alias(name, CHAMPION, str(version))
    _transition(mlflow_client, name, version, PRODUCTION)
    if aliases.get(CHALLENGER) == version:
        mlflow_client.delete_registered_model_alias(name, CHALLENGER)
    if previous is not None and previous != version:
        # archive_existing_versions already archived it when it was in Production.
        current = mlflow_client.get_model_version(name, str(previous)).current_stage
        if current != ARCHIVED:
            _transition(mlflow_client, name, previous, ARCHIVED)
    return previous


def set_challenger(settings: Settings, version: int) -> None:
    """Give ``version`` the ``challenger`` alias and the Staging stage."""
    mlflow_client = client(settings)
    name = settings.model_name
    _require_version(mlflow_client, name, version)
    mlflow_client.set_registered_model_alias(name, CHALLENGER, str(version))
    _transition(mlflow_client, name, version, STAGING)


def promote(settings: Settings, version: int, force: bool = False) -> int | None:
    """Make ``version`` the champion (alias ``champion``, stage Production).

    The former champion is archived and the new one appended to the champion history.
    A version the gate rejected is refused unless ``force``. Returns the former champion.
    """
    mlflow_client = client(settings)
    name = settings.model_name
    model_version = _require_version(mlflow_client, name, version)
    tags = model_version.tags or {}
    if tags.get(f"{GATE_TAG_PREFIX}verdict") == REJECTED and not force:
        raise ValueError(
            f"version {version} of {name} was rejected by the gate "
            f"({tags.get(f'{GATE_TAG_PREFIX}reason', 'no reason recorded')}); "
            "use force to promote it anyway"
        )
    if _aliases(mlflow_client, name).get(CHAMPION) == version:
        log.info("version %s of %s is already the champion", version, name)
        return version
    previous = _set_champion(mlflow_client, name, version)
    history = [*_champion_history(mlflow_client, name), version]
    mlflow_client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    mlflow_client.set_model_version_tag(name, str(version), "lakehouse.promoted_at", str(_now()))
    log.info("promoted %s version %s to champion (was %s)", name, version, previous)
    return previous


def rollback(settings: Settings) -> int:
    """Restore the previous champion; the current one is archived. Returns the restored version."""
    mlflow_client = client(settings)
    name = settings.model_name
    current = _aliases(mlflow_client, name).get(CHAMPION)
    if current is None:
        raise ValueError(f"model {name!r} has no champion to roll back")
    history = _champion_history(mlflow_client, name)
    while history and history[-1] == current:
        history.pop()
    if not history:
        raise ValueError(f"model {name!r} has no previous champion to roll back to")
    target = history[-1]
    _set_champion(mlflow_client, name, target)
    mlflow_client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    mlflow_client.set_model_version_tag(name, str(current), "lakehouse.rolled_back_at", str(_now()))
    log.info("rolled %s back from version %s to version %s", name, current, target)
    return target


def history(settings: Settings) -> list[VersionRecord]:
    """Every version of the model, newest first, with aliases, stage, metric and verdict."""
    mlflow_client = client(settings)
    name = settings.model_name
    by_version: dict[int, list[str]] = {}
    for alias, version in _aliases(mlflow_client, name).items():
        by_version.setdefault(version, []).append(alias)
    records = []
    for mv in mlflow_client.search_model_versions(f"name = '{name}'"):
        tags = mv.tags or {}
        tagged = tags.get(f"{GATE_TAG_PREFIX}candidate_value")
        value = float(tagged) if tagged is not None else None
        if value is None and mv.run_id:
            value = mlflow_client.get_run(mv.run_id).data.metrics.get("roc_auc")
        records.append(
            VersionRecord(
                version=int(mv.version),
                run_id=mv.run_id or "",
                aliases=tuple(sorted(by_version.get(int(mv.version), []))),
                stage=mv.current_stage or "None",
                metric_value=float(value) if value is not None else None,
                verdict=tags.get(f"{GATE_TAG_PREFIX}verdict", ""),
                reason=tags.get(f"{GATE_TAG_PREFIX}reason", ""),
                created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
            )
        )
    return sorted(records, key=lambda r: -r.version)


# --- The gate --------------------------------------------------------------------------------
def run_gate(
    settings: Settings,
    version: int,
    X_holdout: pd.DataFrame,
    y_holdout: np.ndarray | pd.Series,
    gate: GateConfig | None = None,
    table_versions: dict[str, int] | None = None,
) -> GateDecision:
    """Evaluate ``version`` and the champion on the same holdout and act on the verdict.

    A passing candidate becomes ``challenger`` (Staging) and, with ``gate.auto_promote``,
    champion at once; a failing one gets no alias and the champion is kept. The verdict,
    the reason and both models' metrics are recorded as tags on the candidate version.
    """
    from lakehouse.models.training import evaluate

    gate = gate or GateConfig()
    mlflow_client = client(settings)
    name = settings.model_name
    candidate_mv = _require_version(mlflow_client, name, version)
    candidate_metrics = evaluate(load_version(settings, version), X_holdout, y_holdout)
    champion = _aliases(mlflow_client, name).get(CHAMPION)
    champion_metrics = None
    if champion is not None and champion != version:
        champion_metrics = evaluate(load_version(settings, champion), X_holdout, y_holdout)
    candidate_value = candidate_metrics[gate.metric]
    champion_value = champion_metrics[gate.metric] if champion_metrics else None
    passed, reason = decide(candidate_value, champion_value, gate)
    verdict = REJECTED if not passed else PROMOTED if gate.auto_promote else CHALLENGER_VERDICT
    decision = GateDecision(
        model_name=name,
        candidate_version=version,
        candidate_run_id=candidate_mv.run_id or "",
        champion_version=champion if champion_metrics else None,
        metric=gate.metric,
        candidate_value=candidate_value,
        champion_value=champion_value,
        floor=gate.min_value,
        tolerance=gate.tolerance,
        passed=passed,
        verdict=verdict,
        reason=reason,
        holdout_rows=len(X_holdout),
        decided_at=_now(),
        candidate_metrics=candidate_metrics,
        champion_metrics=champion_metrics,
        table_versions=dict(table_versions or {}),
    )
    for key, value in _decision_tags(decision).items():
        mlflow_client.set_model_version_tag(name, str(version), key, value)
    if passed:
        set_challenger(settings, version)
        if gate.auto_promote:
            promote(settings, version)
    log.info("gate on %s version %s: %s (%s)", name, version, verdict, reason)
    return decision


def _decision_tags(decision: GateDecision) -> dict[str, str]:
    tags = {
        "verdict": decision.verdict,
        "passed": str(decision.passed).lower(),
        "reason": decision.reason,
        "metric": decision.metric,
        "candidate_value": repr(decision.candidate_value),
        "floor": repr(decision.floor),
        "tolerance": repr(decision.tolerance),
        "holdout_rows": str(decision.holdout_rows),
        "decided_at": decision.decided_at.isoformat(),
        "candidate_metrics": json.dumps(decision.candidate_metrics, sort_keys=True),
    }
    if decision.champion_version is not None:
        tags["champion_version"] = str(decision.champion_version)
        tags["champion_value"] = repr(decision.champion_value)
        tags["champion_metrics"] = json.dumps(decision.champion_metrics, sort_keys=True)
    return {f"{GATE_TAG_PREFIX}{k}": v for k, v in tags.items()}


def write_gate_audit(spark: SparkSession, catalog: TableCatalog, decision: GateDecision) -> None:
    """Append one row for ``decision`` to ``gold.model_gate_audit`` (created when missing)."""
    from lakehouse.platform.tables import create_if_missing

    row = (
        decision.decided_at,
        decision.model_name,
        decision.candidate_version,
        decision.candidate_run_id,
        decision.champion_version,
        decision.metric,
        float(decision.candidate_value),
        None if decision.champion_value is None else float(decision.champion_value),
        float(decision.floor),
        float(decision.tolerance),
        decision.passed,
        decision.verdict,
        decision.reason,
        decision.holdout_rows,
        json.dumps(decision.candidate_metrics, sort_keys=True),
        None
        if decision.champion_metrics is None
        else json.dumps(decision.champion_metrics, sort_keys=True),
        json.dumps(decision.table_versions, sort_keys=True),
    )
    df = spark.createDataFrame([row], GATE_AUDIT_SCHEMA)
    create_if_missing(
        spark,
        catalog,
        GOLD_MODEL_GATE_AUDIT,
        df,
        comment="One row per evaluation-gate decision of the model registry",
    )
    df.write.format("delta").mode("append").save(catalog.path(GOLD_MODEL_GATE_AUDIT))
