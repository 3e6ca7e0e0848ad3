"""A monitor's latest figures as Prometheus gauges, written as a text file at each refresh.

Refreshes are batch jobs (Spark), gone before Prometheus would scrape them; the serving process
is the long-running one Prometheus already scrapes, and it must not import Spark. So each
refresh writes its monitor's figures in the Prometheus text format to
``<home>/metrics/monitoring/<schema>.<table>.prom`` (:attr:`Settings.monitoring_metrics_dir`),
written aside and renamed into place, and the server's ``GET /metrics`` appends every such file
as it is at scrape time: node_exporter's textfile collector, with the server as the exporter.

=========================================================  =======  ===========================
metric                                                     type     labels
=========================================================  =======  ===========================
``lakehouse_monitoring_last_refresh_timestamp_seconds``    gauge    table
``lakehouse_monitoring_window_start_timestamp_seconds``    gauge    table, granularity
``lakehouse_monitoring_rows``                              gauge    table, granularity
``lakehouse_monitoring_drift``                             gauge    table, column, statistic,
                                                                    drift_type, granularity
``lakehouse_monitoring_model_quality``                     gauge    table, model_version, metric
``lakehouse_monitoring_alerts_total``                      counter  table, rule
``lakehouse_monitoring_alert_firing``                      gauge    table, rule, column
=========================================================  =======  ===========================

Window figures are those of the latest window of each granularity (overall rows: no slice, all
models): its start, its rows, and its drift per column and statistic (:data:`DRIFT_STATISTICS`).
Model quality is per model version, on that version's latest window with labels, at the
monitor's longest granularity (:data:`QUALITY_METRICS`). ``alerts_total`` counts the alerts the
alerts table holds per rule, which only grows (alerts are inserted once), hence a counter.
``alert_firing`` is 1 for each column on which a rule fires in the latest window of the rule's
granularity; a rule that does not fire there has one series with an empty ``column`` and 0, so
a panel shows every rule. Missing and non-finite figures are left out.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pyspark.sql import Row, SparkSession, Window
from pyspark.sql import functions as F

from lakehouse.monitoring.alerts import Alert, AlertRule, alerts_table_name
from lakehouse.monitoring.definition import Granularity, MonitorInfo
from lakehouse.monitoring.metrics import INPUT, TABLE_COLUMN
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.settings import Settings

PREFIX = "lakehouse_monitoring_"
SUFFIX = ".prom"
#: ``statistic`` label -> field of ``<table>_drift_metrics``.
DRIFT_STATISTICS: dict[str, str] = {
    "psi": "population_stability_index",
    "ks": "ks_test.statistic",
    "ks_pvalue": "ks_test.pvalue",
    "js": "js_distance",
    "wasserstein": "wasserstein_distance",
    "chi_squared_pvalue": "chi_squared_test.pvalue",
    "tv": "tv_distance",
    "l_infinity": "l_infinity_distance",
}
#: ``metric`` label -> field of ``<table>_profile_metrics``.
QUALITY_METRICS: dict[str, str] = {
    "roc_auc": "roc_auc_score",
    "pr_auc": "pr_auc_score",
    "log_loss": "log_loss",
    "brier": "brier_score",
    "accuracy": "accuracy_score",
    "percent_labeled": "percent_labeled",
    "rmse": "root_mean_squared_error",
    "mae": "mean_absolute_error",
    "r2": "r2_score",
}
#: Every metric name a gauges file holds, as Prometheus stores its samples.
METRIC_NAMES: tuple[str, ...] = tuple(
    PREFIX + name
    for name in (
        "last_refresh_timestamp_seconds",
        "window_start_timestamp_seconds",
        "rows",
        "drift",
        "model_quality",
        "alerts_total",
        "alert_firing",
    )
)


@dataclass(frozen=True)
class DriftFigure:
    """One drift statistic of one column in the latest window of a granularity."""

    column: str
    statistic: str
    drift_type: str
    granularity: str
    value: float


@dataclass(frozen=True)
class QualityFigure:
    """One quality metric of one model version on its latest labelled window."""

    model_version: str
    metric: str
    value: float


@dataclass(frozen=True)
class MonitorFigures:
    """What one gauges file says about one monitor.

    Attributes:
        table: the monitored table (the ``table`` label of every sample).
        refreshed_at: when the refresh ended, epoch seconds.
        windows: granularity (empty for a snapshot) -> (latest window's start, its rows).
        drift: the latest windows' drift figures.
        quality: each model version's latest labelled figures.
        alerts_total: rule -> alerts the alerts table holds.
        firing: rule -> the columns it fires on in its granularity's latest window (every rule
            evaluated has an entry, empty when it does not fire).
    """

    table: str
    refreshed_at: float
    windows: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    drift: Sequence[DriftFigure] = ()
    quality: Sequence[QualityFigure] = ()
    alerts_total: Mapping[str, int] = field(default_factory=dict)
    firing: Mapping[str, Sequence[str]] = field(default_factory=dict)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def families(figures: MonitorFigures) -> Iterator[Metric]:
    """The metric families of ``figures`` (see the module docstring)."""
    table = figures.table
    refreshed = GaugeMetricFamily(
        PREFIX + "last_refresh_timestamp_seconds",
        "When the monitor's last refresh ended, epoch seconds.",
        labels=("table",),
    )
    refreshed.add_metric((table,), figures.refreshed_at)
    yield refreshed

    start = GaugeMetricFamily(
        PREFIX + "window_start_timestamp_seconds",
        "Start of the latest monitored window, epoch seconds.",
        labels=("table", "granularity"),
    )
    rows = GaugeMetricFamily(
        PREFIX + "rows",
        "Rows of the monitored table in the latest window.",
        labels=("table", "granularity"),
    )
    for granularity, (window_start, count) in sorted(figures.windows.items()):
        start.add_metric((table, granularity), window_start)
        rows.add_metric((table, granularity), count)
    yield start
    yield rows

    drift = GaugeMetricFamily(
        PREFIX + "drift",
        "Drift of a column in the latest window, against the baseline or the window before.",
        labels=("table", "column", "statistic", "drift_type", "granularity"),
    )
    for d in figures.drift:
        if _finite(d.value):
            drift.add_metric((table, d.column, d.statistic, d.drift_type, d.granularity), d.value)
    yield drift

    quality = GaugeMetricFamily(
        PREFIX + "model_quality",
        "Quality of a model version on its latest window with labels.",
        labels=("table", "model_version", "metric"),
    )
    for q in figures.quality:
        if _finite(q.value):
            quality.add_metric((table, q.model_version, q.metric), q.value)
    yield quality

    alerts = CounterMetricFamily(
        PREFIX + "alerts",
        "Alerts recorded in the monitor's alerts table, per rule.",
        labels=("table", "rule"),
    )
    for rule, count in sorted(figures.alerts_total.items()):
        alerts.add_metric((table, rule), count)
    yield alerts

    firing = GaugeMetricFamily(
        PREFIX + "alert_firing",
        "1 for each column a rule fires on in the latest window; 0 with no column when it "
        "does not fire.",
        labels=("table", "rule", "column"),
    )
    for rule, columns in sorted(figures.firing.items()):
        if columns:
            for column in sorted(set(columns)):
                firing.add_metric((table, rule, column), 1)
        else:
            firing.add_metric((table, rule, ""), 0)
    yield firing


class _Figures:
    """A collector over fixed figures (what :func:`generate_latest` renders)."""

    def __init__(self, figures: MonitorFigures) -> None:
        self.figures = figures

    def collect(self) -> Iterable[Metric]:
        return families(self.figures)


def render(figures: MonitorFigures) -> str:
    """The Prometheus text exposition of ``figures``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Figures(figures))
    return generate_latest(registry).decode()


def gauges_path(folder: Path, table_name: str) -> Path:
    """``<folder>/<schema>.<table>.prom``."""
    return folder / f"{table_name}{SUFFIX}"


def write_figures(figures: MonitorFigures, folder: Path) -> Path:
    """Write ``figures`` to their file in ``folder``: in a temporary file first (whose name
    does not end in ``.prom``, so no reader takes it), renamed over the old one, so a scrape
    reads either the old file or the new one, whole."""
    folder.mkdir(parents=True, exist_ok=True)
    path = gauges_path(folder, figures.table)
    temporary = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(render(figures))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


# --- Collecting the figures from the metrics tables -----------------------------------------------
def _window_length(text: str) -> int:
    granularity = Granularity.parse(text)
    if granularity.seconds is not None:
        return granularity.seconds
    return (366 if granularity.unit == "year" else 31) * 86400


def collect_figures(
    spark: SparkSession,
    catalog: TableCatalog,
    info: MonitorInfo,
    rules: Sequence[AlertRule],
    alerts: Sequence[Alert],
    refreshed_at: float | None = None,
) -> MonitorFigures:
    """The figures of ``info``'s metrics tables after a refresh; ``alerts`` are the rule
    firings of that refresh's evaluation (all windows), ``rules`` the rules evaluated."""
    start = F.expr("unix_seconds(window.start)").alias("start")
    granularity = F.coalesce(F.col("granularity"), F.lit("")).alias("granularity")
    profile = catalog.read(spark, info.profile_metrics_table_name).where(
        f"slice_key IS NULL AND log_type = '{INPUT}' AND column_name = '{TABLE_COLUMN}'"
    )
    windows: dict[str, tuple[float, int]] = {}
    for row in profile.where("model_id IS NULL").select(granularity, start, "count").collect():
        if row["start"] is None:
            continue
        known = windows.get(row["granularity"])
        if known is None or row["start"] > known[0]:
            windows[row["granularity"]] = (float(row["start"]), int(row["count"] or 0))

    quality: list[QualityFigure] = []
    if info.granularities:
        longest = max(info.granularities, key=_window_length)
        labelled = profile.where(
            f"model_id IS NOT NULL AND num_labeled > 0 AND granularity = '{longest}'"
        ).select("model_id", start, *[F.col(n).alias(m) for m, n in QUALITY_METRICS.items()])
        latest: dict[str, Row] = {}
        for row in labelled.collect():
            model = str(row["model_id"])
            if model not in latest or row["start"] > latest[model]["start"]:
                latest[model] = row
        quality = [
            QualityFigure(model, metric, float(latest[model][metric]))
            for model in sorted(latest)
            for metric in QUALITY_METRICS
            if latest[model][metric] is not None
        ]

    drift: list[DriftFigure] = []
    if catalog.exists(spark, info.drift_metrics_table_name):
        table = catalog.read(spark, info.drift_metrics_table_name).where(
            f"slice_key IS NULL AND model_id IS NULL AND column_name != '{TABLE_COLUMN}'"
        )
        newest = Window.partitionBy("granularity", "drift_type")
        rows = (
            table.withColumn("start", F.expr("unix_seconds(window.start)"))
            .withColumn("newest", F.max("start").over(newest))
            .where("start = newest")
            .select(
                "column_name",
                "drift_type",
                granularity,
                *[F.col(name).alias(statistic) for statistic, name in DRIFT_STATISTICS.items()],
            )
            .collect()
        )
        for row in rows:
            for statistic in DRIFT_STATISTICS:
                value = row[statistic]
                if value is not None:
                    drift.append(
                        DriftFigure(
                            row["column_name"],
                            statistic,
                            row["drift_type"],
                            row["granularity"],
                            float(value),
                        )
                    )
        drift.sort(key=lambda d: (d.granularity, d.drift_type, d.column, d.statistic))

    alerts_total = {rule.name: 0 for rule in rules}
    name = alerts_table_name(info)
    if catalog.exists(spark, name):
        for row in catalog.read(spark, name).groupBy("rule").count().collect():
            alerts_total[row["rule"]] = int(row["count"])

    firing: dict[str, list[str]] = {rule.name: [] for rule in rules}
    for alert in alerts:
        window = windows.get(alert.granularity or "")
        if window is not None and alert.window_start == window[0]:
            firing.setdefault(alert.rule, []).append(alert.column_name)
    return MonitorFigures(
        table=info.table_name,
        refreshed_at=time.time() if refreshed_at is None else refreshed_at,
        windows=windows,
        drift=drift,
        quality=quality,
        alerts_total=alerts_total,
        firing=firing,
    )


def write_gauges(
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    info: MonitorInfo,
    rules: Sequence[AlertRule],
    alerts: Sequence[Alert],
) -> Path:
    """Collect ``info``'s figures and write its gauges file under the settings' folder."""
    figures = collect_figures(spark, catalog, info, rules, alerts)
    return write_figures(figures, settings.monitoring_metrics_dir)
