"""The evaluation gate between training and the registry's aliases.

A new version of the model passes the gate when, on the same time-based holdout, it reaches an
absolute floor of the gate metric (default ROC AUC >= 0.70) and is not worse than the current
champion by more than a tolerance (default 0.01). The checks are expressed as MLflow
:class:`~mlflow.models.MetricThreshold` objects and run by
:func:`mlflow.validate_evaluation_results`. Every decision is a set of tags on its model version
and, given Spark, a row of ``gold.model_gate_audit`` (:mod:`lakehouse.models.audit`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from mlflow.models import EvaluationResult, MetricThreshold
from mlflow.models.evaluation.validation import (
    ModelValidationFailedException,
    validate_evaluation_results,
)

from lakehouse.models.config import GateConfig
from lakehouse.models.evaluation import evaluate
from lakehouse.models.registry import (
    CHALLENGER_VERDICT,
    CHAMPION,
    GATE_TAG_PREFIX,
    PROMOTED,
    REJECTED,
    ModelRegistry,
)
from lakehouse.platform.settings import Settings

log = logging.getLogger(__name__)


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


def decide(
    candidate_value: float, champion_value: float | None, gate: GateConfig | None = None
) -> tuple[bool, str]:
    """Apply the floor and the champion comparison; return (passed, reason).

    Both checks are :class:`~mlflow.models.MetricThreshold` values validated by
    :func:`mlflow.validate_evaluation_results`; the reason joins the failure messages.
    """
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
    gate = gate or GateConfig()
    registry = ModelRegistry.of(settings)  # one client for every step below
    candidate_mv = registry.require_version(version)
    candidate_metrics = evaluate(registry.load(version), X_holdout, y_holdout)
    champion = registry.aliases().get(CHAMPION)
    champion_metrics = None
    if champion is not None and champion != version:
        champion_metrics = evaluate(registry.load(champion), X_holdout, y_holdout)
    candidate_value = candidate_metrics[gate.metric]
    champion_value = champion_metrics[gate.metric] if champion_metrics else None
    passed, reason = decide(candidate_value, champion_value, gate)
    verdict = REJECTED if not passed else PROMOTED if gate.auto_promote else CHALLENGER_VERDICT
    decision = GateDecision(
        model_name=registry.name,
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
        decided_at=datetime.now(UTC),
        candidate_metrics=candidate_metrics,
        champion_metrics=champion_metrics,
        table_versions=dict(table_versions or {}),
    )
    registry.tag_version(version, decision_tags(decision))
    if passed:
        registry.set_challenger(version)
        if gate.auto_promote:
            registry.promote(version)
    log.info("gate on %s version %s: %s (%s)", registry.name, version, verdict, reason)
    return decision


def decision_tags(decision: GateDecision) -> dict[str, str]:
    """The model version tags that record ``decision`` (``lakehouse.gate.*``)."""
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
