"""Monitoring in the lifecycle: refresh, evaluate the alert rules, act on new alerts.

:func:`refresh_and_evaluate` is what ``lakehouse monitor refresh``, ``jobs/monitor.py`` and the
demo run: the platform's inference table is brought up to date first
(:mod:`lakehouse.monitoring.sources`), a champion baseline follows the champion
(:mod:`lakehouse.monitoring.baseline`), the monitor is refreshed, the rules are evaluated into
the alerts table and, when asked, the actions of the new alerts run.

The action ``retrain`` trains a challenger with the champion's configuration on the latest
data and gates it through the platform's own training (:func:`lakehouse.models.training.train`
with the team's gate file) with auto-promotion off: a passing candidate becomes
``challenger``, never champion by itself. Each action is one row of
``<schema>.<table>_actions``: which alerts it answered, when, the run and version it produced
and the gate's verdict. An alert is acted on once: alerts named by an earlier action are not
acted on again, however often the rules are evaluated.

With a :class:`CanaryRequest`, a challenger that passed the gate is then served as the canary
of a serving endpoint, through the running server's REST API (as ``lakehouse endpoint
canary``). The action's ``detail`` says which endpoint, version and share, or, when the server
could not start it, why (one line); the gate's outcome stands either way, and the canary can be
started by hand.

After the rules are evaluated, before any action, the monitor's gauges file for Prometheus is
written (:mod:`lakehouse.monitoring.gauges`), so a failing action still leaves the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    IntegerType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lakehouse.monitoring.alerts import (
    Alert,
    AlertRule,
    HoldoutFigure,
    alert_lines,
    alerts_table_name,
    evaluate_rules,
    load_rules,
    record_alerts,
)
from lakehouse.monitoring.baseline import (
    CHAMPION_BASELINE,
    BaselineReport,
    baseline_table_name,
    build_champion_baseline,
)
from lakehouse.monitoring.definition import MonitorError, MonitorInfo, load_monitor, save_monitor
from lakehouse.monitoring.gauges import write_gauges
from lakehouse.monitoring.refresh import RefreshReport, refresh_monitor
from lakehouse.monitoring.sources import (
    MONITORED_PREDICTIONS,
    SourceReport,
    build_monitored_predictions,
    inference_monitor,
)
from lakehouse.platform.catalog import TableCatalog, split_name
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import create_if_missing
from lakehouse.scoring.canary import EndpointClient, ServingError, start_canary
from lakehouse.workflows.canary_flags import CanaryRequest

log = logging.getLogger(__name__)

ACTIONS_SUFFIX = "_actions"
RETRAIN = "retrain"

ACTIONS_SCHEMA = StructType(
    [
        StructField("action_id", StringType(), False),
        StructField("monitor_table", StringType(), False),
        StructField("action", StringType(), False),
        StructField("alert_ids", ArrayType(StringType()), False),
        StructField("started_at", TimestampType(), False),
        StructField("finished_at", TimestampType(), False),
        StructField("status", StringType(), False),  # challenger | rejected | failed
        StructField("run_id", StringType(), True),
        StructField("model_version", IntegerType(), True),
        StructField("verdict", StringType(), True),
        StructField("detail", StringType(), True),
    ]
)


def actions_table_name(info: MonitorInfo) -> str:
    """``<output schema>.<table>_actions``."""
    return f"{info.output_schema_name}.{split_name(info.table_name)[1]}{ACTIONS_SUFFIX}"


@dataclass(frozen=True)
class ActionRecord:
    """One action taken (a row of the actions table)."""

    action_id: str
    action: str
    alert_ids: list[str]
    status: str
    run_id: str | None = None
    model_version: int | None = None
    verdict: str | None = None
    detail: str | None = None
    #: Why the canary asked for was not started (the same words are in ``detail``).
    canary_error: str | None = None

    def line(self) -> str:
        """One line for the console."""
        produced = (
            f"run {self.run_id}, version {self.model_version}, gate: {self.verdict}"
            if self.run_id
            else self.detail or ""
        )
        if self.run_id and self.detail:
            produced += f"; {self.detail}"
        return f"{self.action} for {len(self.alert_ids)} alerts: {self.status} ({produced})"


@dataclass(frozen=True)
class MonitoringOutcome:
    """What :func:`refresh_and_evaluate` did."""

    info: MonitorInfo
    refresh: RefreshReport
    source: SourceReport | None = None
    baseline: BaselineReport | None = None
    alerts: list[Alert] = field(default_factory=list)
    new_alerts: list[Alert] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    gauges: Path | None = None

    @property
    def errors(self) -> list[str]:
        """What was asked and not done (a canary the server did not start)."""
        return [a.canary_error for a in self.actions if a.canary_error]

    def lines(self) -> list[str]:
        """The console summary."""
        out = []
        if self.source is not None:
            out.append(self.source.summary())
        if self.baseline is not None:
            out.append(self.baseline.summary())
        out.append(self.refresh.summary())
        out.append(
            f"{len(self.alerts)} rule firings, {len(self.new_alerts)} new alerts "
            f"-> {alerts_table_name(self.info)}"
        )
        out += [f"  {line}" for line in alert_lines(self.new_alerts)]
        out += [f"  action {a.line()}" for a in self.actions]
        if self.gauges is not None:
            out.append(f"gauges -> {self.gauges}")
        return out


# --- Actions -----------------------------------------------------------------------------------
def acted_alert_ids(spark: SparkSession, catalog: TableCatalog, info: MonitorInfo) -> set[str]:
    """The alerts an earlier action answered."""
    name = actions_table_name(info)
    if not catalog.exists(spark, name):
        return set()
    rows = catalog.read(spark, name).select(F.explode("alert_ids").alias("a")).collect()
    return {r["a"] for r in rows}


def pending_alerts(spark: SparkSession, catalog: TableCatalog, info: MonitorInfo) -> list[str]:
    """The ids of the alerts with an action that no action has answered yet, oldest first."""
    name = alerts_table_name(info)
    if not catalog.exists(spark, name):
        return []
    done = acted_alert_ids(spark, catalog, info)
    rows = (
        catalog.read(spark, name)
        .where(F.col("action").isNotNull())
        .orderBy("raised_at", "alert_id")
        .select("alert_id", "action")
        .collect()
    )
    return [r["alert_id"] for r in rows if r["alert_id"] not in done and r["action"] == RETRAIN]


def retrain(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, *, gate_file: Path | None = None
) -> tuple[str, int | None, str | None]:
    """Train a challenger with the champion's configuration on the latest data; gate it with
    auto-promotion off. Returns the run id, the registered version and the gate's verdict."""
    from lakehouse.features.store import build_training_set
    from lakehouse.models.config import TrainConfig
    from lakehouse.models.registry import ModelRegistry, champion_version
    from lakehouse.models.tracking import connect
    from lakehouse.models.training import run_inputs, train
    from lakehouse.workflows.training import gate_from_args

    connect(settings)
    config = TrainConfig()
    champion = champion_version(settings)
    if champion is not None:
        run_id = ModelRegistry.of(settings).require_version(champion).run_id
        if run_id:
            try:
                config = TrainConfig.from_params(run_inputs(run_id, settings)["params"])
            except ValueError:
                log.warning("champion run %s has no training configuration; defaults used", run_id)
    gate = replace(gate_from_args(argparse.Namespace(gate_file=gate_file)), auto_promote=False)
    result = train(
        build_training_set(spark, settings, catalog),
        config,
        settings,
        gate=gate,
        spark=spark,
        catalog=catalog,
        run_name="monitoring-retrain",
        extra_tags={"lakehouse.trigger": "monitoring"},
    )
    verdict = result.decision.verdict if result.decision is not None else None
    return result.run_id, result.version, verdict


#: ``action(spark, settings, catalog) -> (run id, version, verdict)``.
RetrainFn = Callable[[SparkSession, Settings, TableCatalog], tuple[str, int | None, str | None]]


def run_actions(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    info: MonitorInfo,
    *,
    retrain_fn: RetrainFn | None = None,
    canary: CanaryRequest | None = None,
) -> list[ActionRecord]:
    """Run the action of the alerts no action answered yet (one retrain for all of them) and
    record it in the actions table; with ``canary``, a challenger that passed the gate is
    started as that endpoint's canary first (see the module docstring)."""
    pending = pending_alerts(spark, catalog, info)
    if not pending:
        return []
    started = datetime.now(UTC)
    action_id = uuid.uuid4().hex
    try:
        run_id, version, verdict = (retrain_fn or retrain)(spark, settings, catalog)
        status = "challenger" if verdict and verdict != "rejected" else "rejected"
        record = ActionRecord(action_id, RETRAIN, pending, status, run_id, version, verdict)
        if canary is not None and status == "challenger" and version is not None:
            record = start_challenger_canary(settings, record, version, canary)
    except Exception as exc:  # recorded, then raised: the audit trail shows the failure
        record = ActionRecord(action_id, RETRAIN, pending, "failed", detail=str(exc)[:2000])
        _record_action(spark, catalog, info, record, started)
        raise
    _record_action(spark, catalog, info, record, started)
    return [record]


def start_challenger_canary(
    settings: Settings, record: ActionRecord, version: int, canary: CanaryRequest
) -> ActionRecord:
    """``record`` with the outcome of starting ``version`` as ``canary``'s canary in ``detail``
    (and ``canary_error`` when the server did not start it)."""
    try:
        client = EndpointClient.from_env(canary.url)
        decision = start_canary(client, settings, canary.endpoint, version, canary.percent)
    except (ServingError, ValueError, OSError) as exc:
        error = (
            f"canary on endpoint {canary.endpoint!r} not started: {exc} (start it with "
            f"`lakehouse endpoint canary {canary.endpoint} --version {version} "
            f"--percent {canary.percent}`)"
        )
        log.warning("%s", error)
        return replace(record, detail=error, canary_error=error)
    detail = (
        f"canary on endpoint {canary.endpoint!r}: {decision.reason} "
        f"(decision {decision.decision_id})"
    )
    return replace(record, detail=detail)


def _record_action(
    spark: SparkSession,
    catalog: TableCatalog,
    info: MonitorInfo,
    record: ActionRecord,
    started: datetime,
) -> None:
    name = actions_table_name(info)
    create_if_missing(
        spark,
        catalog,
        name,
        spark.createDataFrame([], ACTIONS_SCHEMA),
        comment=f"Actions taken on the alerts of the monitor of {info.table_name}",
    )
    row = (
        record.action_id,
        info.table_name,
        record.action,
        record.alert_ids,
        started,
        datetime.now(UTC),
        record.status,
        record.run_id,
        record.model_version,
        record.verdict,
        record.detail,
    )
    (
        DeltaTable.forPath(spark, catalog.path(name))
        .alias("t")
        .merge(spark.createDataFrame([row], ACTIONS_SCHEMA).alias("s"), "t.action_id = s.action_id")
        .whenNotMatchedInsertAll()
        .execute()
    )


# --- Refresh, evaluate, act --------------------------------------------------------------------
def champion_holdout(settings: Settings) -> Callable[[str], HoldoutFigure | None]:
    """A function of a metric name: the champion's version and figure of that metric in its
    training run, with the run's holdout classes; None without a champion."""
    cache: dict[str, HoldoutFigure | None] = {}

    def figures(metric: str) -> HoldoutFigure | None:
        if metric not in cache:
            from lakehouse.models.registry import ModelRegistry, champion_version
            from lakehouse.models.tracking import mlflow_client

            version = champion_version(settings)
            if version is None:
                cache[metric] = None
                return None
            run_id = ModelRegistry.of(settings).require_version(version).run_id
            if not run_id:
                cache[metric] = HoldoutFigure(version, None)
                return cache[metric]
            data = mlflow_client(settings).get_run(run_id).data
            rows, positives = (
                _int_param(data.params, name) for name in ("holdout_rows", "holdout_positives")
            )
            cache[metric] = HoldoutFigure(
                version,
                data.metrics.get(metric),
                positives,
                rows - positives if rows is not None and positives is not None else None,
            )
        return cache[metric]

    return figures


def _int_param(params: dict[str, str], name: str) -> int | None:
    try:
        return int(params[name])
    except (KeyError, ValueError):
        return None


def ensure_platform_monitor(
    spark: SparkSession, catalog: TableCatalog, table_name: str = MONITORED_PREDICTIONS
) -> MonitorInfo:
    """The monitor on the platform's inference table; created (champion baseline, daily and
    weekly windows) when there is none."""
    try:
        return load_monitor(spark, catalog, table_name)
    except MonitorError:
        pass
    info = replace(
        inference_monitor(table_name, baseline_table_name=baseline_table_name(table_name)),
        baseline_source=CHAMPION_BASELINE,
    )
    save_monitor(spark, catalog, info)
    return info


def refresh_and_evaluate(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    table_name: str = MONITORED_PREDICTIONS,
    *,
    act: bool = False,
    rules: Sequence[AlertRule] | None = None,
    retrain_fn: RetrainFn | None = None,
    canary: CanaryRequest | None = None,
) -> MonitoringOutcome:
    """Refresh the monitor on ``table_name`` and evaluate the rules; with ``act``, run the
    actions of the alerts not acted on yet, ``canary`` saying where a passing challenger is
    served (see the module docstring). The monitor's gauges file is written before the actions.

    The platform's inference table (``gold.monitored_predictions``) is rebuilt first and gets
    its monitor on first use.
    """
    source = None
    if table_name == MONITORED_PREDICTIONS:
        source = build_monitored_predictions(spark, settings, catalog)
        info = ensure_platform_monitor(spark, catalog, table_name)
    else:
        info = load_monitor(spark, catalog, table_name)
    baseline = None
    if info.baseline_source == CHAMPION_BASELINE and info.baseline_table_name:
        baseline = build_champion_baseline(spark, settings, catalog, info.baseline_table_name)
    report = refresh_monitor(spark, catalog, info)
    rule_list = list(rules) if rules is not None else load_rules()
    alerts = evaluate_rules(spark, catalog, info, rule_list, champion=champion_holdout(settings))
    new = record_alerts(spark, catalog, info, alerts)
    gauges = write_gauges(spark, settings, catalog, info, rule_list, alerts)
    actions = (
        run_actions(spark, settings, catalog, info, retrain_fn=retrain_fn, canary=canary)
        if act
        else []
    )
    return MonitoringOutcome(info, report, source, baseline, alerts, new, actions, gauges)


def latest_figures(
    spark: SparkSession,
    catalog: TableCatalog,
    info: MonitorInfo,
    granularity: str = "1 day",
    min_rows: int = 0,
) -> dict[str, Any]:
    """The latest window's figures for a summary: its start, rows, label coverage, ROC AUC,
    and the largest baseline PSI among the columns (column and value).

    With ``min_rows``, the latest window holding that many rows: a window just begun (or a day
    of a small world) has too few for its drift figures to mean anything.
    """
    profile = catalog.read(spark, info.profile_metrics_table_name).where(
        "column_name = ':table' AND model_id IS NULL AND slice_key IS NULL "
        f"AND log_type = 'INPUT' AND granularity = '{granularity}'"
    )
    ordered = profile.orderBy(F.desc("window.start"))
    latest = ordered.where(F.col("count") >= min_rows).limit(1).collect() or (
        ordered.limit(1).collect()
    )
    if not latest:
        return {}
    row = latest[0]
    out: dict[str, Any] = {
        "granularity": granularity,
        "window_start": row["window"]["start"],
        "rows": row["count"],
        "percent_labeled": row["percent_labeled"],
        "roc_auc_score": row["roc_auc_score"],
    }
    labelled = (
        profile.where("roc_auc_score IS NOT NULL AND num_labeled >= 50")
        .orderBy(F.desc("window.start"))
        .limit(1)
        .collect()
    )
    if labelled:
        out["latest_labelled_window"] = labelled[0]["window"]["start"]
        out["latest_labelled_roc_auc"] = labelled[0]["roc_auc_score"]
    if catalog.exists(spark, info.drift_metrics_table_name):
        log = info.inference_log
        # The model's inputs only: the score and the label are figures of their own.
        outputs = [c for c in (log.prediction_col, log.label_col) if c] if log else []
        drift = (
            catalog.read(spark, info.drift_metrics_table_name)
            .where(~F.col("column_name").isin(*outputs, ":table"))
            .where(
                "model_id IS NULL AND slice_key IS NULL AND drift_type = 'BASELINE' "
                f"AND granularity = '{granularity}' AND population_stability_index IS NOT NULL "
                f"AND window.start = timestamp'{row['window']['start']}'"
            )
            .orderBy(F.desc("population_stability_index"))
            .limit(1)
            .collect()
        )
        if drift:
            out["max_psi_column"] = drift[0]["column_name"]
            out["max_psi"] = drift[0]["population_stability_index"]
    return out


def summary_line(figures: dict[str, Any]) -> str:
    """The demo's one line of monitoring figures."""
    if not figures:
        return "no monitored window yet"
    unit = str(figures.get("granularity", "1 day")).removeprefix("1 ")
    text = f"latest {unit} of {figures['window_start']:%Y-%m-%d}: {figures['rows']} predictions"
    if figures.get("percent_labeled") is not None:
        text += f", {figures['percent_labeled']:.0%} labelled"
    if "max_psi" in figures:
        text += f"; largest input PSI {figures['max_psi']:.3f} ({figures['max_psi_column']})"
    if "latest_labelled_roc_auc" in figures:
        text += (
            f"; ROC AUC {figures['latest_labelled_roc_auc']:.3f} on "
            f"{figures['latest_labelled_window']:%Y-%m-%d}"
        )
    return text


def outcome_json(outcome: MonitoringOutcome) -> str:
    """The outcome as JSON (alerts and actions) for scripts."""
    return json.dumps(
        {
            "table": outcome.info.table_name,
            "new_alerts": [a.alert_id for a in outcome.new_alerts],
            "actions": [a.__dict__ for a in outcome.actions],
        }
    )
