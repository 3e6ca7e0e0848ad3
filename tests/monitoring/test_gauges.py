"""The monitors' Prometheus gauges: the text of given figures, the file's replacement, and the
figures a real refresh leaves."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyspark.sql import SparkSession
from sklearn.metrics import roc_auc_score

from lakehouse.monitoring.alerts import AlertRule
from lakehouse.monitoring.definition import save_monitor
from lakehouse.monitoring.gauges import (
    METRIC_NAMES,
    DriftFigure,
    MonitorFigures,
    QualityFigure,
    gauges_path,
    render,
    write_figures,
)
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.settings import Settings
from lakehouse.workflows.monitoring import refresh_and_evaluate
from tests.monitoring.test_monitoring import (
    BASELINE_TABLE,
    DAY,
    SCORED,
    START,
    _inference_monitor,
    _rows,
    _write,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (f"lakehouse_monitoring_{name}", tuple(sorted(labels.items())))


FIGURES = MonitorFigures(
    table="gold.scored",
    refreshed_at=1767225600.5,
    windows={"1 day": (1767139200.0, 120), "1 week": (1766966400.0, 800)},
    drift=[
        DriftFigure("income", "psi", "BASELINE", "1 day", 0.31),
        DriftFigure('odd "name"\\', "ks", "CONSECUTIVE", "1 day", 0.12),
        DriftFigure("purpose", "chi_squared_pvalue", "BASELINE", "1 day", math.nan),
    ],
    quality=[QualityFigure("3", "roc_auc", 0.81), QualityFigure("4", "log_loss", math.inf)],
    alerts_total={"input_psi": 4, "champion_roc_auc": 0},
    firing={"input_psi": ["income", "age", "income"], "champion_roc_auc": []},
)


def test_the_text_of_given_figures_parses_to_exactly_those_samples() -> None:
    text = render(FIGURES)
    assert samples(text) == {
        key("last_refresh_timestamp_seconds", table="gold.scored"): 1767225600.5,
        key("window_start_timestamp_seconds", table="gold.scored", granularity="1 day"): (
            1767139200.0
        ),
        key("window_start_timestamp_seconds", table="gold.scored", granularity="1 week"): (
            1766966400.0
        ),
        key("rows", table="gold.scored", granularity="1 day"): 120,
        key("rows", table="gold.scored", granularity="1 week"): 800,
        key(
            "drift",
            table="gold.scored",
            column="income",
            statistic="psi",
            drift_type="BASELINE",
            granularity="1 day",
        ): 0.31,
        key(
            "drift",
            table="gold.scored",
            column='odd "name"\\',
            statistic="ks",
            drift_type="CONSECUTIVE",
            granularity="1 day",
        ): 0.12,
        key("model_quality", table="gold.scored", model_version="3", metric="roc_auc"): 0.81,
        key("alerts_total", table="gold.scored", rule="input_psi"): 4,
        key("alerts_total", table="gold.scored", rule="champion_roc_auc"): 0,
        key("alert_firing", table="gold.scored", rule="input_psi", column="income"): 1,
        key("alert_firing", table="gold.scored", rule="input_psi", column="age"): 1,
        key("alert_firing", table="gold.scored", rule="champion_roc_auc", column=""): 0,
    }
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["lakehouse_monitoring_alerts"] == "counter"
    assert {t for n, t in types.items() if n != "lakehouse_monitoring_alerts"} == {"gauge"}
    assert {name for name, _ in samples(text)} == set(METRIC_NAMES)


def test_a_new_file_replaces_the_old_one_by_rename(tmp_path: Path) -> None:
    folder = tmp_path / "metrics" / "monitoring"
    path = write_figures(FIGURES, folder)
    assert path == gauges_path(folder, "gold.scored") == folder / "gold.scored.prom"
    first = path.stat().st_ino
    assert samples(path.read_text())[key("rows", table="gold.scored", granularity="1 day")] == 120

    write_figures(replace(FIGURES, windows={"1 day": (1767225600.0, 95)}), folder)
    # A new inode: the file was renamed over, never rewritten where a scrape could read half.
    assert path.stat().st_ino != first
    assert samples(path.read_text())[key("rows", table="gold.scored", granularity="1 day")] == 95
    assert [p.name for p in folder.iterdir()] == ["gold.scored.prom"]


def test_a_refresh_writes_the_latest_window_s_figures(
    spark: SparkSession, settings: Settings, catalog: TableCatalog
) -> None:
    rows = _rows(0, 60, 1) + _rows(1, 60, 2) + _rows(2, 60, 3, shift=15.0)
    _write(spark, catalog, SCORED, rows, "overwrite")
    _write(spark, catalog, BASELINE_TABLE, _rows(-30, 120, 4), "overwrite")
    save_monitor(spark, catalog, replace(_inference_monitor(), slicing_exprs=[]))
    rules = [
        AlertRule(name="income_psi", metric="population_stability_index", above=1.0),
        AlertRule(name="never", metric="population_stability_index", above=1000.0),
    ]

    outcome = refresh_and_evaluate(spark, settings, catalog, SCORED, rules=rules)

    assert outcome.gauges == settings.monitoring_metrics_dir / f"{SCORED}.prom"
    got = samples(outcome.gauges.read_text())
    table = {"table": SCORED}
    assert got[key("rows", granularity="1 day", **table)] == 60  # day 2, the latest
    assert got[key("rows", granularity="1 week", **table)] == 180
    assert got[key("window_start_timestamp_seconds", granularity="1 day", **table)] == (
        START + 2 * DAY
    )
    drift = catalog.read(spark, f"{SCORED}_drift_metrics")
    day2 = drift.where(
        "column_name = 'income' AND drift_type = 'BASELINE' AND granularity = '1 day' AND "
        f"slice_key IS NULL AND model_id IS NULL AND unix_seconds(window.start) = {START + 2 * DAY}"
    ).first()
    psi = key(
        "drift",
        column="income",
        statistic="psi",
        drift_type="BASELINE",
        granularity="1 day",
        **table,
    )
    assert got[psi] == day2["population_stability_index"] > 1.0
    # The drifted day fires, the days before do not reach 1.0.
    assert [a.window_start for a in outcome.alerts if a.rule == "income_psi"] == [START + 2 * DAY]
    assert got[key("alerts_total", rule="income_psi", **table)] == 1
    assert got[key("alerts_total", rule="never", **table)] == 0
    assert got[key("alert_firing", rule="income_psi", column="income", **table)] == 1
    assert got[key("alert_firing", rule="never", column="", **table)] == 0

    # Quality per version on the weekly window (the three days), against scikit-learn.
    for version in (1, 2):
        mine = [r for r in rows if r[2] == version]
        expected = roc_auc_score([r[4] for r in mine], [r[3] for r in mine])
        got_auc = got[key("model_quality", model_version=str(version), metric="roc_auc", **table)]
        assert got_auc == pytest.approx(expected, abs=1e-9)
        labelled = got[
            key("model_quality", model_version=str(version), metric="percent_labeled", **table)
        ]
        assert labelled == 1.0
