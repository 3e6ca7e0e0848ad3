"""Alert rules as data, evaluated over a monitor's metrics tables into a Delta alerts table.

A rule names a metric of ``<table>_drift_metrics`` (``population_stability_index``,
``ks_test.pvalue``, ``avg_delta``, ...) or of ``<table>_profile_metrics`` (``roc_auc_score``,
``percent_null``, ...), the rows it reads (granularity, drift type, columns: the model's
``inputs``, its ``label``, its ``prediction``, the ``:table`` row, or names), a threshold
(``above``, ``below``, or ``below_holdout``: that far below the champion's figure on its
holdout, from its MLflow run) and how many consecutive windows must breach it. Rules live in
``monitoring_rules.yaml`` (:data:`DEFAULT_RULES` without one).

A ROC AUC rule against the holdout may also ask for ``significance``: a window then breaches
only where it falls below the threshold by more than the sampling error of the two figures
(Hanley and McNeil's standard error of each ROC AUC, from its positives and negatives, combined),
at that one-sided level. A holdout of a few hundred rows is itself a noisy figure: its standard
error can be 0.02, so a margin of 0.05 alone fires on weeks where nothing but chance moved.

Each firing is one row of ``<schema>.<table>_alerts``, keyed by the rule, column, model and
window, with the figures of every window that made it fire. Rows are inserted once (an
insert-only MERGE on ``alert_id``), so evaluating again after a refresh that changed nothing
adds nothing, and a window that breaches again later keeps its first alert.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lakehouse.monitoring.definition import Granularity, MonitorError, MonitorInfo
from lakehouse.monitoring.metrics import BASELINE, CONSECUTIVE, TABLE_COLUMN, profiled_columns
from lakehouse.platform.catalog import TableCatalog, split_name
from lakehouse.platform.tables import create_if_missing, delta_version

log = logging.getLogger(__name__)

RULES_FILE = "monitoring_rules.yaml"
ALERTS_SUFFIX = "_alerts"
#: ``columns`` of a rule: these words select by role, anything else is a list of names.
COLUMN_ROLES: tuple[str, ...] = ("inputs", "label", "prediction", "table")
ACTIONS: tuple[str, ...] = ("retrain",)
#: ``model`` of a rule: the champion's rows (its version as the monitor's model id).
CHAMPION = "champion"

ALERTS_SCHEMA = StructType(
    [
        StructField("alert_id", StringType(), False),
        StructField("monitor_table", StringType(), False),
        StructField("rule", StringType(), False),
        StructField("metric", StringType(), False),
        StructField("column_name", StringType(), False),
        StructField("granularity", StringType(), True),
        StructField("model_id", StringType(), True),
        StructField(
            "window",
            StructType(
                [
                    StructField("start", TimestampType(), True),
                    StructField("end", TimestampType(), True),
                ]
            ),
            True,
        ),
        StructField("value", DoubleType(), True),
        StructField("threshold", DoubleType(), True),
        StructField("comparison", StringType(), False),  # above | below
        # JSON list of {"window_start", "value"}: every window that made the rule fire.
        StructField("figures", StringType(), False),
        StructField("action", StringType(), True),
        StructField("source_version", LongType(), True),  # the monitored table's Delta version
        StructField("raised_at", TimestampType(), False),
    ]
)


@dataclass(frozen=True)
class AlertRule:
    """One rule (see the module docstring); validated on construction."""

    name: str
    metric: str
    above: float | None = None
    below: float | None = None
    below_holdout: float | None = None
    holdout_metric: str | None = None
    table: str = "drift"
    drift_type: str = BASELINE
    granularity: str = "1 day"
    columns: str | list[str] = "inputs"
    model: str | None = None
    consecutive: int = 1
    #: Windows with fewer rows are passed over: labelled rows for the quality metrics, the
    #: profile's count otherwise, and for drift the column's non-null values in the window.
    min_count: int = 0
    #: With ``below_holdout`` on ``roc_auc_score``: the one-sided level at which the shortfall
    #: must exceed the two figures' sampling error (see the module docstring).
    significance: float | None = None
    action: str | None = None

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}"
        if not self.name:
            raise MonitorError("every rule needs a name")
        thresholds = [t for t in (self.above, self.below, self.below_holdout) if t is not None]
        if len(thresholds) != 1:
            raise MonitorError(f"{where}: give exactly one of above, below, below_holdout")
        if self.table not in ("drift", "profile"):
            raise MonitorError(f"{where}: table must be drift or profile, got {self.table!r}")
        if self.table == "drift" and self.drift_type not in (BASELINE, CONSECUTIVE):
            raise MonitorError(f"{where}: drift_type must be {BASELINE} or {CONSECUTIVE}")
        if self.below_holdout is not None and (self.table != "profile" or not self.holdout_metric):
            raise MonitorError(
                f"{where}: below_holdout reads the profile table and needs a "
                "holdout_metric (the champion run's metric, e.g. roc_auc)"
            )
        Granularity.parse(self.granularity)
        if isinstance(self.columns, str) and self.columns not in COLUMN_ROLES:
            raise MonitorError(
                f"{where}: columns must be one of {', '.join(COLUMN_ROLES)} or a list of names"
            )
        if self.model not in (None, CHAMPION):
            raise MonitorError(f"{where}: model must be {CHAMPION!r} or absent")
        if self.consecutive < 1 or self.min_count < 0:
            raise MonitorError(f"{where}: consecutive must be >= 1 and min_count >= 0")
        if self.action is not None and self.action not in ACTIONS:
            raise MonitorError(f"{where}: action must be one of {', '.join(ACTIONS)}")
        if self.significance is not None:
            if self.below_holdout is None or self.metric != "roc_auc_score":
                raise MonitorError(
                    f"{where}: significance applies to a below_holdout rule on roc_auc_score"
                )
            if not 0 < self.significance < 0.5:
                raise MonitorError(f"{where}: significance must be in (0, 0.5)")

    @property
    def comparison(self) -> str:
        """``above`` or ``below``."""
        return "above" if self.above is not None else "below"

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> AlertRule:
        """A rule from YAML data; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise MonitorError(
                f"rule {body.get('name', '?')!r}: unknown key(s) {', '.join(unknown)}"
            )
        return cls(**dict(body))


#: Windows with fewer values are passed over by the default PSI rule. Over ten decile bins, a
#: window of n values scores about 9/n without any drift, and a bin a small window leaves empty
#: adds about 0.7 (its share is floored at
#: :data:`~lakehouse.monitoring.metrics.PSI_EPSILON`): 20 values score well above 0.2.
PSI_MIN_COUNT = 150

#: The platform's defaults (``monitoring_rules.yaml`` at the repository's root holds the same):
#: input drift against the baseline for two days in a row, by size (PSI, over windows of enough
#: values) or by significance (KS for numbers, chi-squared for categories); the label's share
#: shifted in one day; the champion's ROC AUC a week long below its holdout figure, by more
#: than the two figures' sampling error.
DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(
        name="input_psi",
        metric="population_stability_index",
        above=0.2,
        columns="inputs",
        consecutive=2,
        min_count=PSI_MIN_COUNT,
        action="retrain",
    ),
    AlertRule(
        name="input_ks",
        metric="ks_test.pvalue",
        below=1e-6,
        columns="inputs",
        consecutive=2,
        action="retrain",
    ),
    AlertRule(
        name="input_chi_squared",
        metric="chi_squared_test.pvalue",
        below=1e-6,
        columns="inputs",
        consecutive=2,
        action="retrain",
    ),
    AlertRule(
        name="default_rate_shift",
        metric="chi_squared_test.pvalue",
        below=1e-4,
        columns="label",
        action="retrain",
    ),
    AlertRule(
        name="champion_roc_auc",
        metric="roc_auc_score",
        table="profile",
        granularity="1 week",
        columns="table",
        model=CHAMPION,
        below_holdout=0.05,
        holdout_metric="roc_auc",
        min_count=100,
        significance=0.05,
        action="retrain",
    ),
)


def load_rules(path: str | Path | None = None) -> list[AlertRule]:
    """The rules of ``path``, else of ``monitoring_rules.yaml`` in the working folder if it
    exists, else :data:`DEFAULT_RULES`."""
    if path is None:
        default = Path.cwd() / RULES_FILE
        if not default.exists():
            return list(DEFAULT_RULES)
        path = default
    file = Path(path)
    if not file.exists():
        raise MonitorError(f"no rules file {file}")
    try:
        body = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MonitorError(f"{file}: not YAML ({exc})") from exc
    rules = body.get("rules") if isinstance(body, dict) else None
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise MonitorError(f"{file}: expected a 'rules:' list of mappings")
    parsed = [AlertRule.from_dict(r) for r in rules]
    names = [r.name for r in parsed]
    if len(set(names)) != len(names):
        raise MonitorError(f"{file}: rule names repeat")
    return parsed


def alerts_table_name(info: MonitorInfo) -> str:
    """``<output schema>.<table>_alerts``."""
    return f"{info.output_schema_name}.{split_name(info.table_name)[1]}{ALERTS_SUFFIX}"


# --- Evaluation --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    """One firing of a rule (a row of the alerts table)."""

    alert_id: str
    monitor_table: str
    rule: str
    metric: str
    column_name: str
    granularity: str | None
    model_id: str | None
    window_start: int
    window_end: int
    value: float
    threshold: float
    comparison: str
    figures: list[dict[str, Any]] = field(default_factory=list)
    action: str | None = None
    source_version: int | None = None


@dataclass(frozen=True)
class HoldoutFigure:
    """The champion's version and its figure of one metric on its training run's holdout, with
    the holdout's positives and negatives where the run recorded them."""

    version: int
    value: float | None
    positives: int | None = None
    negatives: int | None = None


def auc_standard_error(auc: float, positives: int, negatives: int) -> float | None:
    """Hanley and McNeil's (1982) standard error of a ROC AUC over ``positives`` and
    ``negatives``; None without both classes."""
    if positives < 1 or negatives < 1:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


def rule_columns(rule: AlertRule, info: MonitorInfo, schema: StructType) -> list[str]:
    """The ``column_name`` values ``rule`` reads on the monitor ``info`` of a table of
    ``schema``."""
    if isinstance(rule.columns, list):
        return list(rule.columns)
    if rule.columns == "table":
        return [TABLE_COLUMN]
    spec = info.inference_log
    if rule.columns in ("label", "prediction"):
        if spec is None:
            return []  # the rule is about a model: nothing to read on this monitor
        name = spec.label_col if rule.columns == "label" else spec.prediction_col
        return [name] if name else []
    outputs = set()
    if spec is not None:
        outputs = {c for c in (spec.prediction_col, spec.label_col, spec.prediction_proba_col) if c}
    return [c.name for c in profiled_columns(info, schema) if c.name not in outputs]


def _metric_column(metric: str) -> Any:
    return F.col(".".join(f"`{part}`" for part in metric.split(".")))


def _alert_id(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


def evaluate_rule(
    spark: SparkSession,
    catalog: TableCatalog,
    info: MonitorInfo,
    rule: AlertRule,
    columns: Sequence[str],
    *,
    champion: HoldoutFigure | None = None,
    source_version: int | None = None,
) -> list[Alert]:
    """Every window where ``rule`` fires on ``columns``.

    Args:
        champion: the champion's version and holdout figure of ``rule.holdout_metric``, for
            rules on the champion's rows or its holdout figure.
    """
    if (
        rule.granularity not in info.granularities
        and Granularity.parse(rule.granularity).text not in info.granularities
    ):
        return []
    granularity = Granularity.parse(rule.granularity)
    threshold: float
    if rule.below_holdout is not None:
        if champion is None or champion.value is None:
            return []
        threshold = champion.value - rule.below_holdout
    else:
        threshold = float(rule.above if rule.above is not None else rule.below)  # type: ignore[arg-type]
    name = (
        info.drift_metrics_table_name if rule.table == "drift" else info.profile_metrics_table_name
    )
    if not catalog.exists(spark, name) or not columns:
        return []
    rows = catalog.read(spark, name).where(
        (F.col("granularity") == granularity.text)
        & F.col("slice_key").isNull()
        & F.col("column_name").isin(list(columns))
    )
    if rule.table == "drift":
        rows = rows.where(F.col("drift_type") == rule.drift_type)
    else:
        rows = rows.where(F.col("log_type") == "INPUT")
    if rule.model == CHAMPION:
        if champion is None:
            return []
        rows = rows.where(F.col("model_id") == str(champion.version))
    else:
        rows = rows.where(F.col("model_id").isNull())
    count = F.col("num_labeled") if rule.metric in _QUALITY else F.col("count")
    if rule.table == "drift":
        count = F.lit(None).cast("long")
    collected = rows.select(
        "column_name",
        "model_id",
        F.unix_seconds("window.start").alias("start"),
        F.unix_seconds("window.end").alias("end"),
        _metric_column(rule.metric).cast("double").alias("value"),
        count.alias("n"),
        *(
            [
                (F.col("confusion_matrix.tp") + F.col("confusion_matrix.fn")).alias("positives"),
                (F.col("confusion_matrix.fp") + F.col("confusion_matrix.tn")).alias("negatives"),
            ]
            if rule.significance is not None
            else []
        ),
    ).collect()
    window_counts = (
        _window_counts(spark, catalog, info, granularity.text, columns)
        if rule.table == "drift" and rule.min_count
        else None
    )
    breach: Callable[[float], bool] = (
        (lambda v: v > threshold) if rule.comparison == "above" else (lambda v: v < threshold)
    )
    # A rule that weighs the sampling error: its z and the holdout's share of the error, once.
    z: float | None = None
    held_error = 0.0
    if rule.significance is not None and champion is not None:
        z = statistics.NormalDist().inv_cdf(1 - rule.significance)
        held_error = _holdout_error(champion)
    # (end, value, the shortfall's standard error where the rule weighs it)
    by_column: dict[tuple[str, str | None], dict[int, tuple[int, float, float | None]]] = {}
    for row in collected:
        value = row["value"]
        if value is None or math.isnan(value):
            continue
        if row["n"] is not None and row["n"] < rule.min_count:
            continue
        if window_counts is not None:
            # A drift row has no count of its own: its window's values (non-null, what the
            # statistic compared) are in the profile (a window it does not know counts as empty).
            key = (row["column_name"], row["model_id"], int(row["start"]))
            if window_counts.get(key, 0) < rule.min_count:
                continue
        if not breach(value):
            continue
        error = None
        if z is not None:
            error = _shortfall_error(held_error, value, row["positives"], row["negatives"])
            if error is None or threshold - value <= z * error:
                continue
        by_column.setdefault((row["column_name"], row["model_id"]), {})[int(row["start"])] = (
            int(row["end"]),
            float(value),
            error,
        )
    alerts: list[Alert] = []
    for (column, model_id), breached in sorted(
        by_column.items(), key=lambda i: (i[0][0], i[0][1] or "")
    ):
        for start in sorted(breached):
            run = [start]
            while len(run) < rule.consecutive:
                previous = granularity.shift(run[0], -1)
                if previous not in breached:
                    break
                run.insert(0, previous)
            if len(run) < rule.consecutive:
                continue
            end, value, _ = breached[start]
            alerts.append(
                Alert(
                    alert_id=_alert_id(
                        info.table_name, rule.name, column, granularity.text, model_id, start
                    ),
                    monitor_table=info.table_name,
                    rule=rule.name,
                    metric=rule.metric,
                    column_name=column,
                    granularity=granularity.text,
                    model_id=model_id,
                    window_start=start,
                    window_end=end,
                    value=value,
                    threshold=threshold,
                    comparison=rule.comparison,
                    figures=[_figure(s, *breached[s][1:]) for s in run],
                    action=rule.action,
                    source_version=source_version,
                )
            )
    return alerts


def _figure(start: int, value: float, error: float | None) -> dict[str, Any]:
    figure: dict[str, Any] = {"window_start": start, "value": value}
    if error is not None:
        figure["standard_error"] = error
    return figure


def _holdout_error(holdout: HoldoutFigure) -> float:
    """The standard error of the holdout's ROC AUC; nought when its run did not record its
    classes."""
    if holdout.value is None or not holdout.positives or not holdout.negatives:
        return 0.0
    return auc_standard_error(holdout.value, holdout.positives, holdout.negatives) or 0.0


def _shortfall_error(
    held: float, value: float, positives: int | None, negatives: int | None
) -> float | None:
    """The standard error of (holdout figure - window's ROC AUC), ``held`` being the holdout's;
    None when the window's classes are unknown."""
    if positives is None or negatives is None:
        return None
    window = auc_standard_error(value, int(positives), int(negatives))
    return None if window is None else math.sqrt(window * window + held * held)


def _window_counts(
    spark: SparkSession,
    catalog: TableCatalog,
    info: MonitorInfo,
    granularity: str,
    columns: Sequence[str],
) -> dict[tuple[str, str | None, int], int]:
    """(column, model id, window start) -> the window's non-null values, from the profile."""
    name = info.profile_metrics_table_name
    if not catalog.exists(spark, name):
        return {}
    rows = (
        catalog.read(spark, name)
        .where(
            (F.col("granularity") == granularity)
            & F.col("slice_key").isNull()
            & (F.col("log_type") == "INPUT")
            & F.col("column_name").isin(list(columns))
        )
        .select(
            "column_name",
            "model_id",
            F.unix_seconds("window.start").alias("start"),
            (F.coalesce("count", F.lit(0)) - F.coalesce("num_nulls", F.lit(0))).alias("n"),
        )
        .collect()
    )
    return {(r["column_name"], r["model_id"], int(r["start"])): int(r["n"]) for r in rows}


#: Profile metrics computed over labelled rows only: ``min_count`` counts those.
_QUALITY = frozenset(
    {
        "roc_auc_score",
        "pr_auc_score",
        "log_loss",
        "brier_score",
        "accuracy_score",
        "precision",
        "recall",
        "f1_score",
        "calibration_error",
    }
)


def evaluate_rules(
    spark: SparkSession,
    catalog: TableCatalog,
    info: MonitorInfo,
    rules: Iterable[AlertRule],
    *,
    champion: HoldoutFigure | Callable[[str], HoldoutFigure | None] | None = None,
) -> list[Alert]:
    """Every firing of ``rules`` on the monitor's current metrics tables.

    ``champion`` is the champion's holdout figure, or a function of the holdout metric's name
    returning it (called only for rules that need it).
    """
    schema = catalog.read(spark, info.table_name).schema
    version = delta_version(spark, catalog, info.table_name)
    alerts: list[Alert] = []
    for rule in rules:
        figures = None
        if rule.model == CHAMPION or rule.below_holdout is not None:
            figures = champion(rule.holdout_metric or "") if callable(champion) else champion
        alerts += evaluate_rule(
            spark,
            catalog,
            info,
            rule,
            rule_columns(rule, info, schema),
            champion=figures,
            source_version=version,
        )
    return alerts


def _alert_frame(spark: SparkSession, alerts: Sequence[Alert], raised_at: datetime) -> DataFrame:
    rows = [
        (
            a.alert_id,
            a.monitor_table,
            a.rule,
            a.metric,
            a.column_name,
            a.granularity,
            a.model_id,
            (
                datetime.fromtimestamp(a.window_start, UTC),
                datetime.fromtimestamp(a.window_end, UTC),
            ),
            a.value,
            a.threshold,
            a.comparison,
            json.dumps(a.figures),
            a.action,
            a.source_version,
            raised_at,
        )
        for a in alerts
    ]
    return spark.createDataFrame(rows, ALERTS_SCHEMA)


def record_alerts(
    spark: SparkSession, catalog: TableCatalog, info: MonitorInfo, alerts: Sequence[Alert]
) -> list[Alert]:
    """Insert the alerts the alerts table lacks; return those (the new ones)."""
    name = alerts_table_name(info)
    create_if_missing(
        spark,
        catalog,
        name,
        spark.createDataFrame([], ALERTS_SCHEMA),
        comment=f"Alerts raised by the rules on the monitor of {info.table_name}",
    )
    known = {r[0] for r in catalog.read(spark, name).select("alert_id").collect()}
    new = [a for a in alerts if a.alert_id not in known]
    if new:
        (
            DeltaTable.forPath(spark, catalog.path(name))
            .alias("t")
            .merge(
                _alert_frame(spark, new, datetime.now(UTC)).alias("s"), "t.alert_id = s.alert_id"
            )
            .whenNotMatchedInsertAll()
            .execute()
        )
    log.info("%s: %d alerts, %d new", info.table_name, len(alerts), len(new))
    return new


def alert_lines(alerts: Sequence[Alert]) -> list[str]:
    """One line per alert for the console."""
    lines = []
    for a in alerts:
        day = datetime.fromtimestamp(a.window_start, UTC).strftime("%Y-%m-%d")
        model = f" model {a.model_id}" if a.model_id else ""
        lines.append(
            f"{a.rule}: {a.column_name}{model} {a.metric} {a.value:.4g} {a.comparison} "
            f"{a.threshold:.4g} in the {a.granularity} window of {day}"
            + (f" ({len(a.figures)} windows in a row)" if len(a.figures) > 1 else "")
        )
    return lines


def as_record(alert: Alert) -> dict[str, Any]:
    """The alert as JSON-ready data."""
    return asdict(alert)
