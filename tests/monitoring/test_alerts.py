"""Alert rules: parsing, consecutive windows, the alerts table and the actions' bookkeeping."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakehouse.monitoring.alerts import (
    DEFAULT_RULES,
    PSI_MIN_COUNT,
    AlertRule,
    HoldoutFigure,
    alerts_table_name,
    auc_standard_error,
    evaluate_rules,
    load_rules,
    record_alerts,
)
from lakehouse.monitoring.definition import MonitorError, MonitorInfo, MonitorTimeSeries
from lakehouse.monitoring.metrics import DRIFT_SCHEMA, PROFILE_SCHEMA
from lakehouse.monitoring.refresh import _frame
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.tables import delta_version
from lakehouse.workflows.monitoring import actions_table_name, pending_alerts, run_actions
from tests.conftest import REPO_ROOT

DAY = 86400
START = int(dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp())
INFO = MonitorInfo(
    table_name="silver.events",
    output_schema_name="silver",
    time_series=MonitorTimeSeries("ts", ["1 day"]),
    baseline_table_name="silver.events_baseline",
)


def test_the_default_rules_are_the_repository_s_rules_file() -> None:
    assert tuple(load_rules(REPO_ROOT / "monitoring_rules.yaml")) == DEFAULT_RULES
    rules = {r.name: r for r in DEFAULT_RULES}
    psi, auc = rules["input_psi"], rules["champion_roc_auc"]
    assert (psi.metric, psi.above, psi.consecutive, psi.granularity, psi.drift_type) == (
        "population_stability_index",
        0.2,
        2,
        "1 day",
        "BASELINE",
    )
    assert psi.columns == "inputs" and psi.action == "retrain" and psi.min_count == PSI_MIN_COUNT
    assert (auc.metric, auc.below_holdout, auc.granularity, auc.model, auc.significance) == (
        "roc_auc_score",
        0.05,
        "1 week",
        "champion",
        0.05,
    )
    assert rules["default_rate_shift"].columns == "label"


def test_rules_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - name: psi\n    metric: population_stability_index\n    above: 0.3\n"
        "    consecutive: 3\n    columns: [income]\n"
    )
    (rule,) = load_rules(path)
    assert rule == AlertRule(
        name="psi",
        metric="population_stability_index",
        above=0.3,
        consecutive=3,
        columns=["income"],
    )
    path.write_text("rules:\n  - name: x\n    metric: m\n    above: 1\n    colour: red\n")
    with pytest.raises(MonitorError, match=r"unknown key.*colour"):
        load_rules(path)
    path.write_text("rules:\n  - name: x\n    metric: m\n    above: 1\n    below: 0\n")
    with pytest.raises(MonitorError, match="exactly one of above, below"):
        load_rules(path)
    path.write_text("rules:\n  - name: x\n    metric: m\n    above: 1\n    action: page\n")
    with pytest.raises(MonitorError, match="action must be one of retrain"):
        load_rules(path)
    path.write_text("rules:\n  - name: x\n    metric: m\n    above: 1\n    significance: 0.05\n")
    with pytest.raises(MonitorError, match="significance applies to a below_holdout rule"):
        load_rules(path)
    with pytest.raises(MonitorError, match="no rules file"):
        load_rules(tmp_path / "missing.yaml")


def _drift_rows(column: str, values: list[float | None]) -> list[dict]:
    return [
        {
            "window_start": START + i * DAY,
            "window_end": START + (i + 1) * DAY,
            "granularity": "1 day",
            "column_name": column,
            "data_type": "double",
            "drift_type": "BASELINE",
            "monitor_version": 1,
            "population_stability_index": value,
        }
        for i, value in enumerate(values)
    ]


@pytest.fixture
def drifted(spark: SparkSession, catalog: TableCatalog) -> TableCatalog:
    """A monitored table and a hand-written drift table: x breaches 0.2 on days 1, 2, 4, 5, 6;
    y on day 3 alone."""
    spark.createDataFrame(
        [(dt.datetime(2026, 1, 5), 1.0, 2.0)], "ts timestamp, x double, y double"
    ).write.format("delta").save(catalog.path(INFO.table_name))
    rows = _drift_rows("x", [0.1, 0.3, 0.25, 0.2, 0.5, 0.21, 0.9])
    rows += _drift_rows("y", [0.0, 0.1, 0.05, 0.4, None, 0.1, 0.1])
    _frame(spark, rows, DRIFT_SCHEMA, with_cmp=True).write.format("delta").save(
        catalog.path(INFO.drift_metrics_table_name)
    )
    _frame(spark, [], PROFILE_SCHEMA, with_cmp=False).write.format("delta").save(
        catalog.path(INFO.profile_metrics_table_name)
    )
    return catalog


PSI_TWICE = AlertRule(
    name="psi",
    metric="population_stability_index",
    above=0.2,
    consecutive=2,
    action="retrain",
)


def test_a_rule_fires_on_consecutive_breaches_only(
    spark: SparkSession, drifted: TableCatalog
) -> None:
    alerts = evaluate_rules(spark, drifted, INFO, [PSI_TWICE])
    assert [(a.column_name, (a.window_start - START) // DAY) for a in alerts] == [
        ("x", 2),
        ("x", 5),
        ("x", 6),
    ]
    day2 = alerts[0]
    assert day2.value == 0.25 and day2.threshold == 0.2 and day2.comparison == "above"
    assert day2.figures == [
        {"window_start": START + DAY, "value": 0.3},
        {"window_start": START + 2 * DAY, "value": 0.25},
    ]
    # The default PSI rule passes over windows of fewer values than PSI_MIN_COUNT (nothing is
    # profiled here); without that floor it fires where PSI_TWICE does. The model's rules have
    # nothing to read on a time-series monitor.
    assert evaluate_rules(spark, drifted, INFO, DEFAULT_RULES) == []
    uncounted = [replace(r, min_count=0) for r in DEFAULT_RULES]
    defaults = evaluate_rules(spark, drifted, INFO, uncounted)
    assert [(a.rule, a.window_start) for a in defaults] == [
        ("input_psi", a.window_start) for a in alerts
    ]
    once = AlertRule(name="once", metric="population_stability_index", above=0.35)
    fired = evaluate_rules(spark, drifted, INFO, [once])
    assert sorted((a.column_name, (a.window_start - START) // DAY) for a in fired) == [
        ("x", 4),
        ("x", 6),
        ("y", 3),
    ]


def test_alerts_are_recorded_once_and_acted_on_once(
    spark: SparkSession, drifted: TableCatalog
) -> None:
    alerts = evaluate_rules(spark, drifted, INFO, [PSI_TWICE])
    assert len(record_alerts(spark, drifted, INFO, alerts)) == 3
    version = delta_version(spark, drifted, alerts_table_name(INFO))
    assert record_alerts(spark, drifted, INFO, alerts) == []
    assert delta_version(spark, drifted, alerts_table_name(INFO)) == version
    stored = drifted.read(spark, alerts_table_name(INFO)).orderBy("window.start").collect()
    assert [r["rule"] for r in stored] == ["psi"] * 3 and stored[0]["source_version"] == 0

    calls: list[int] = []

    def retrain(spark, settings, catalog):  # the action's effect, recorded for the check
        calls.append(1)
        return "run-1", 7, "challenger"

    (record,) = run_actions(spark, None, drifted, INFO, retrain_fn=retrain)  # type: ignore[arg-type]
    assert (record.status, record.run_id, record.model_version) == ("challenger", "run-1", 7)
    assert sorted(record.alert_ids) == sorted(a.alert_id for a in alerts)
    assert run_actions(spark, None, drifted, INFO, retrain_fn=retrain) == []  # type: ignore[arg-type]
    assert calls == [1] and pending_alerts(spark, drifted, INFO) == []
    row = drifted.read(spark, actions_table_name(INFO)).first()
    assert row["verdict"] == "challenger" and row["model_version"] == 7


def test_min_count_of_a_drift_rule_counts_the_window_s_values(
    spark: SparkSession, drifted: TableCatalog
) -> None:
    # x breaches 0.2 on days 1, 2, 4, 5, 6; its profile holds 40 values on day 2 and 500 rows
    # of which 450 null on day 5; y (breaching on day 3) has no profile row.
    counts = [500, 500, 40, 500, 500, 500, 500]
    nulls = [0, 0, 0, 0, 0, 450, 0]
    profile = [
        {
            "window_start": START + i * DAY,
            "window_end": START + (i + 1) * DAY,
            "granularity": "1 day",
            "column_name": "x",
            "data_type": "double",
            "log_type": "INPUT",
            "monitor_version": 1,
            "count": count,
            "num_nulls": nulls[i],
        }
        for i, count in enumerate(counts)
    ]
    _frame(spark, profile, PROFILE_SCHEMA, with_cmp=False).write.format("delta").mode(
        "overwrite"
    ).save(drifted.path(INFO.profile_metrics_table_name))
    once = AlertRule(name="once", metric="population_stability_index", above=0.2)
    counted = AlertRule(
        name="counted", metric="population_stability_index", above=0.2, min_count=100
    )
    days = {
        rule.name: sorted(
            (a.column_name, (a.window_start - START) // DAY)
            for a in evaluate_rules(spark, drifted, INFO, [rule])
        )
        for rule in (once, counted)
    }
    assert days == {
        "once": [("x", 1), ("x", 2), ("x", 4), ("x", 5), ("x", 6), ("y", 3)],
        "counted": [("x", 1), ("x", 4), ("x", 6)],
    }


def test_auc_standard_error_is_hanley_and_mcneil_s() -> None:
    # Their worked example (Radiology 143, 1982): an area of 0.893 over 58 abnormal and 51
    # normal images has a standard error of 0.032.
    assert auc_standard_error(0.893, 58, 51) == pytest.approx(0.032, abs=0.001)
    assert auc_standard_error(0.9, 0, 10) is None


def test_the_quality_rule_weighs_the_sampling_error_of_both_figures(
    spark: SparkSession, drifted: TableCatalog
) -> None:
    # The champion (version 3) scored 0.866 on a holdout of 90 defaults and 494 repaid loans
    # (standard error 0.025): the threshold is 0.816. Week 0 sits 0.016 under it over 2,250
    # labelled rows (combined error 0.029), week 1 0.116 under it, week 2 0.056 under it over
    # 100 rows (combined error 0.071).
    weeks = [(0.80, 350, 1900), (0.70, 350, 1900), (0.76, 20, 80)]
    profile = [
        {
            "window_start": START + i * 7 * DAY,
            "window_end": START + (i + 1) * 7 * DAY,
            "granularity": "1 week",
            "model_id": "3",
            "column_name": ":table",
            "data_type": None,
            "log_type": "INPUT",
            "monitor_version": 1,
            "count": positives + negatives,
            "num_labeled": positives + negatives,
            "roc_auc_score": auc,
            # Classified at 0.5, a fifth of each class on the wrong side.
            "confusion_matrix": {
                "tp": positives * 4 // 5,
                "fn": positives - positives * 4 // 5,
                "tn": negatives * 4 // 5,
                "fp": negatives - negatives * 4 // 5,
            },
        }
        for i, (auc, positives, negatives) in enumerate(weeks)
    ]
    _frame(spark, profile, PROFILE_SCHEMA, with_cmp=False).write.format("delta").mode(
        "overwrite"
    ).save(drifted.path(INFO.profile_metrics_table_name))
    info = replace(INFO, time_series=MonitorTimeSeries("ts", ["1 day", "1 week"]))
    auc = {r.name: r for r in DEFAULT_RULES}["champion_roc_auc"]
    holdout = HoldoutFigure(version=3, value=0.866, positives=90, negatives=494)

    def weeks_fired(rule: AlertRule, champion: HoldoutFigure) -> list[int]:
        alerts = evaluate_rules(spark, drifted, info, [rule], champion=champion)
        return [(a.window_start - START) // (7 * DAY) for a in alerts]

    assert weeks_fired(auc, holdout) == [1]
    (alert,) = evaluate_rules(spark, drifted, info, [auc], champion=holdout)
    assert (alert.value, alert.threshold) == (0.70, pytest.approx(0.816))
    assert alert.figures[0]["standard_error"] == pytest.approx(0.030, abs=0.002)
    # Without the significance, every week under 0.816 fires; another champion's rows are not
    # read; a run that did not record its holdout's classes counts the window's error alone.
    assert weeks_fired(replace(auc, significance=None), holdout) == [0, 1, 2]
    assert weeks_fired(auc, replace(holdout, version=4)) == []
    assert weeks_fired(auc, HoldoutFigure(version=3, value=0.866)) == [1]
    # A higher holdout figure (threshold 0.85) puts week 0 beyond its error too.
    assert weeks_fired(auc, HoldoutFigure(version=3, value=0.90)) == [0, 1]
