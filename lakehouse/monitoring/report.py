"""An HTML report of a monitor: drift per column over time, the prediction's distribution per
window, and model quality over time with the share of predictions labelled.

One self-contained file: each figure is a matplotlib PNG embedded as base64, so the report can
be mailed or attached to a ticket. The figures read only the metrics tables (a few hundred rows
per window), never the monitored table.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse.monitoring.definition import Granularity, MonitorInfo, load_monitor
from lakehouse.monitoring.metrics import QUANTILES, TABLE_COLUMN
from lakehouse.platform.catalog import TableCatalog

#: Quality metrics drawn over time (classification).
QUALITY_METRICS: tuple[str, ...] = ("roc_auc_score", "pr_auc_score", "brier_score")
#: How many columns the drift figure draws (those that drifted most).
MAX_DRIFT_COLUMNS = 12


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _drift_rows(
    spark: SparkSession, catalog: TableCatalog, info: MonitorInfo, granularity: str
) -> list[Any]:
    if not catalog.exists(spark, info.drift_metrics_table_name):
        return []
    drift_type = "BASELINE" if info.baseline_table_name else "CONSECUTIVE"
    return (
        catalog.read(spark, info.drift_metrics_table_name)
        .where(
            (F.col("granularity") == granularity)
            & F.col("model_id").isNull()
            & F.col("slice_key").isNull()
            & (F.col("drift_type") == drift_type)
            & (F.col("column_name") != TABLE_COLUMN)
        )
        .select(
            F.col("window.start").alias("start"),
            "column_name",
            F.coalesce("population_stability_index", "js_distance").alias("value"),
        )
        .orderBy("start")
        .collect()
    )


def _profile_rows(
    spark: SparkSession, catalog: TableCatalog, info: MonitorInfo, granularity: str
) -> list[Any]:
    return (
        catalog.read(spark, info.profile_metrics_table_name)
        .where(
            (F.col("granularity") == granularity)
            & F.col("model_id").isNull()
            & F.col("slice_key").isNull()
            & (F.col("log_type") == "INPUT")
        )
        .orderBy("window.start")
        .select(F.col("window.start").alias("start"), "*")
        .collect()
    )


def drift_figure(rows: list[Any], title: str) -> str | None:
    """PSI (numeric) or Jensen-Shannon distance (categorical) of each column over time."""
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[datetime, float]]] = {}
    for row in rows:
        if row["value"] is not None:
            series.setdefault(row["column_name"], []).append((row["start"], row["value"]))
    if not series:
        return None
    worst = sorted(series, key=lambda c: -max(v for _, v in series[c]))[:MAX_DRIFT_COLUMNS]
    figure, axis = plt.subplots(figsize=(10, 4.5))
    for column in worst:
        points = series[column]
        days: list[Any] = [p[0] for p in points]
        axis.plot(days, [p[1] for p in points], label=column, linewidth=1.2)
    axis.axhline(0.2, color="grey", linestyle="--", linewidth=0.8)
    axis.set_title(title)
    axis.set_ylabel("PSI (numeric) / JS distance (categorical)")
    axis.legend(fontsize=7, ncol=2, loc="upper left")
    figure.autofmt_xdate()
    return _png(figure)


def score_figure(rows: list[Any], column: str) -> str | None:
    """The prediction's quantiles per window: median, 25-75 % and 5-95 % bands."""
    import matplotlib.pyplot as plt

    points = [r for r in rows if r["column_name"] == column and r["quantiles"]]
    if not points:
        return None
    index = {q: i for i, q in enumerate(QUANTILES)}
    starts = [r["start"] for r in points]

    def level(q: float) -> list[float]:
        return [r["quantiles"][index[q]] for r in points]

    figure, axis = plt.subplots(figsize=(10, 3.5))
    axis.fill_between(starts, level(0.05), level(0.95), alpha=0.2, label="5-95 %")
    axis.fill_between(starts, level(0.25), level(0.75), alpha=0.4, label="25-75 %")
    axis.plot(starts, level(0.5), label="median")
    axis.set_title(f"{column} per window")
    axis.legend(fontsize=8)
    figure.autofmt_xdate()
    return _png(figure)


def quality_figure(rows: list[Any]) -> str | None:
    """Quality metrics over time, and the share of predictions with a label."""
    import matplotlib.pyplot as plt

    table = [r for r in rows if r["column_name"] == TABLE_COLUMN]
    if not table or all(r["percent_labeled"] is None for r in table):
        return None
    starts = [r["start"] for r in table]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    for metric in QUALITY_METRICS:
        top.plot(starts, [r[metric] for r in table], marker=".", label=metric)
    top.set_title("model quality per window (labelled predictions)")
    top.legend(fontsize=8)
    bottom.bar(starts, [r["percent_labeled"] or 0.0 for r in table], width=0.8, color="grey")
    bottom.set_ylabel("share labelled")
    bottom.set_ylim(0, 1)
    figure.autofmt_xdate()
    return _png(figure)


def render_report(
    spark: SparkSession, catalog: TableCatalog, info: MonitorInfo, granularity: str = "1 day"
) -> str:
    """The report of ``info`` as one HTML page."""
    import matplotlib

    matplotlib.use("Agg")
    granularity = Granularity.parse(granularity).text
    if not catalog.exists(spark, info.profile_metrics_table_name):
        raise FileNotFoundError(
            f"{info.profile_metrics_table_name} does not exist: refresh the monitor first"
        )
    profile = _profile_rows(spark, catalog, info, granularity)
    drift = _drift_rows(spark, catalog, info, granularity)
    against = "the baseline" if info.baseline_table_name else "the previous window"
    sections = [
        ("Drift per column", drift_figure(drift, f"drift against {against} ({granularity})")),
    ]
    if info.inference_log is not None:
        prediction = info.inference_log.prediction_col
        sections.append(("Prediction distribution", score_figure(profile, prediction)))
        sections.append(("Quality and label coverage", quality_figure(profile)))
    title = f"Monitor of {info.table_name}"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(info.profile_type)} profile, {granularity} windows, "
        f"{len({r['start'] for r in profile})} windows; generated "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.</p>",
    ]
    for heading, image in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body.append(
            f'<img alt="{html.escape(heading)}" src="data:image/png;base64,{image}">'
            if image
            else "<p>No data yet.</p>"
        )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>" + "\n".join(body) + "</body></html>"
    )


def write_report(
    spark: SparkSession,
    catalog: TableCatalog,
    table_name: str,
    out: str | Path,
    *,
    granularity: str = "1 day",
) -> Path:
    """Write the report of the monitor on ``table_name`` to ``out``."""
    info = load_monitor(spark, catalog, table_name)
    path = Path(out)
    path.write_text(render_report(spark, catalog, info, granularity))
    return path
