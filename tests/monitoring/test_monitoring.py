"""Monitors: exact statistics against scipy and scikit-learn, and incremental, idempotent,
interruptible refreshes."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import replace

import numpy as np
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from lakehouse.monitoring.definition import (
    Granularity,
    MonitorError,
    MonitorInferenceLog,
    MonitorInfo,
    MonitorTimeSeries,
    list_monitors,
    load_monitor,
    save_monitor,
)
from lakehouse.monitoring.refresh import (
    FAULT_AFTER_DRIFT,
    FAULT_ENV,
    RefreshInterrupted,
    RefreshReport,
    refresh,
)
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.tables import delta_version
from tests.conftest import copy_tables

MONDAY = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
DAY = 86400
START = int(MONDAY.timestamp())
TOL = 1e-9  # exact statistics: agree with scipy / scikit-learn to rounding

SCORED = "gold.scored"
BASELINE_TABLE = "gold.scored_baseline"
SCORED_SCHEMA = (
    "application_id string, scored_at timestamp, model_version int, score double, "
    "defaulted int, income double, purpose string"
)


def _rows(day: int, n: int, seed: int, shift: float = 0.0, labelled: bool = True) -> list:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        score = float(np.round(rng.uniform(0, 1), 3))
        label = int(rng.uniform() < score) if labelled else None
        rows.append(
            (
                f"a{day}-{i}",
                MONDAY + dt.timedelta(days=day, hours=1 + i % 20),
                1 + i % 2,
                score,
                label,
                float(np.round(rng.normal(50 + shift, 10), 1)) if i % 17 else None,
                ["car", "home", "cash"][int(rng.integers(0, 3 if shift == 0 else 2))],
            )
        )
    return rows


def _write(spark: SparkSession, catalog: TableCatalog, name: str, rows: list, mode: str) -> None:
    df = spark.createDataFrame(rows, SCORED_SCHEMA)
    df.write.format("delta").mode(mode).save(catalog.path(name))


def _inference_monitor(baseline: bool = True) -> MonitorInfo:
    return MonitorInfo(
        table_name=SCORED,
        output_schema_name="gold",
        inference_log=MonitorInferenceLog(
            timestamp_col="scored_at",
            granularities=["1 day", "1 week"],
            model_id_col="model_version",
            prediction_col="score",
            label_col="defaulted",
        ),
        baseline_table_name=BASELINE_TABLE if baseline else None,
        slicing_exprs=["purpose"],
    )


@pytest.fixture(scope="module")
def seeded(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> TableCatalog:
    """Three days of predictions (the third drifted) and a baseline, refreshed once."""
    catalog = TableCatalog(str(tmp_path_factory.mktemp("monitoring")))
    rows = _rows(0, 60, 1) + _rows(1, 60, 2) + _rows(2, 60, 3, shift=15.0)
    _write(spark, catalog, SCORED, rows, "overwrite")
    _write(spark, catalog, BASELINE_TABLE, _rows(-30, 120, 4), "overwrite")
    save_monitor(spark, catalog, _inference_monitor())
    refresh(spark, catalog, SCORED)
    return catalog


def _copy(seeded: TableCatalog, catalog: TableCatalog) -> None:
    info = _inference_monitor()
    copy_tables(
        seeded,
        catalog,
        [SCORED, BASELINE_TABLE, info.profile_metrics_table_name, info.drift_metrics_table_name],
    )
    shutil.copytree(f"{seeded.root}/_monitors", f"{catalog.root}/_monitors")


def _day_values(spark: SparkSession, catalog: TableCatalog, day: int, column: str) -> list:
    rows = (
        catalog.read(spark, SCORED)
        .where(F.to_date("scored_at") == (MONDAY + dt.timedelta(days=day)).date())
        .select(column)
        .collect()
    )
    return [r[0] for r in rows]


# --- Definitions ---------------------------------------------------------------------------------
def test_granularities_parse_and_shift() -> None:
    assert Granularity.parse("1 day").shift(START, -1) == START - DAY
    assert Granularity.parse("2 weeks").seconds == 14 * DAY
    month = Granularity.parse("1 month")
    jan = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())
    assert month.shift(jan, -1) == int(dt.datetime(2025, 12, 1, tzinfo=dt.UTC).timestamp())
    for bad in ("day", "0 days", "3 months", "1 fortnight"):
        with pytest.raises(MonitorError, match="granularity"):
            Granularity.parse(bad)


def test_a_monitor_needs_exactly_one_profile_and_a_known_problem_type() -> None:
    with pytest.raises(MonitorError, match="exactly one"):
        MonitorInfo(table_name=SCORED, output_schema_name="gold")
    with pytest.raises(MonitorError, match="problem_type"):
        MonitorInfo(
            table_name=SCORED,
            output_schema_name="gold",
            inference_log=MonitorInferenceLog("t", ["1 day"], "m", "p", problem_type="RANKING"),
        )


def test_definition_round_trips_through_the_store(spark: SparkSession, catalog) -> None:
    info = _inference_monitor()
    save_monitor(spark, catalog, info)
    assert load_monitor(spark, catalog, SCORED) == info
    assert [m.table_name for m in list_monitors(spark, catalog)] == [SCORED]
    with pytest.raises(MonitorError, match=r"no monitor on silver\.x"):
        load_monitor(spark, catalog, "silver.x")


# --- Exact small cases ---------------------------------------------------------------------------
def test_time_series_drift_matches_scipy(spark: SparkSession, catalog: TableCatalog) -> None:
    rng = np.random.default_rng(7)
    day0 = np.round(rng.normal(0, 1, 200), 2)
    day1 = np.round(rng.normal(0.4, 1.3, 150), 2)
    cats0 = rng.choice(["a", "b", "c", "d"], 200, p=[0.4, 0.3, 0.2, 0.1])
    cats1 = rng.choice(["a", "b", "c", "e"], 150, p=[0.2, 0.3, 0.3, 0.2])
    rows = [
        (MONDAY + dt.timedelta(minutes=i), float(x), str(c))
        for i, (x, c) in enumerate(zip(day0, cats0, strict=True))
    ]
    rows += [
        (MONDAY + dt.timedelta(days=1, minutes=i), float(x), str(c))
        for i, (x, c) in enumerate(zip(day1, cats1, strict=True))
    ]
    spark.createDataFrame(rows, "ts timestamp, x double, c string").write.format("delta").save(
        catalog.path("silver.events")
    )
    info = MonitorInfo(
        table_name="silver.events",
        output_schema_name="silver",
        time_series=MonitorTimeSeries("ts", ["1 day"]),
    )
    save_monitor(spark, catalog, info)
    refresh(spark, catalog, "silver.events")

    drift = catalog.read(spark, info.drift_metrics_table_name)
    x = drift.where("column_name = 'x'").collect()
    assert len(x) == 1 and x[0]["drift_type"] == "CONSECUTIVE"
    x = x[0]
    ks = ks_2samp(day1, day0, method="asymp")
    assert x["ks_test"]["statistic"] == pytest.approx(ks.statistic, abs=TOL)
    assert x["ks_test"]["pvalue"] == pytest.approx(ks.pvalue, rel=1e-6)
    assert x["wasserstein_distance"] == pytest.approx(wasserstein_distance(day1, day0), rel=1e-9)
    edges = np.unique(np.quantile(day0, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]))
    p = np.bincount(np.searchsorted(edges, day1, side="left"), minlength=len(edges) + 1) / len(day1)
    q = np.bincount(np.searchsorted(edges, day0, side="left"), minlength=len(edges) + 1) / len(day0)
    p_eps, q_eps = np.where(p == 0, 1e-4, p), np.where(q == 0, 1e-4, q)
    psi = float(np.sum((p_eps - q_eps) * np.log(p_eps / q_eps)))
    assert x["population_stability_index"] == pytest.approx(psi, rel=1e-9)
    assert x["js_distance"] == pytest.approx(jensenshannon(p, q, base=2), rel=1e-9)
    assert x["avg_delta"] == pytest.approx(day1.mean() - day0.mean(), rel=1e-9)
    assert x["count_delta"] == -50

    c = drift.where("column_name = 'c'").first()
    cats = sorted(set(cats0) | set(cats1))
    table = np.array([[np.sum(cats1 == k) for k in cats], [np.sum(cats0 == k) for k in cats]])
    chi = chi2_contingency(table, correction=False)
    assert c["chi_squared_test"]["statistic"] == pytest.approx(chi.statistic, rel=1e-9)
    assert c["chi_squared_test"]["pvalue"] == pytest.approx(chi.pvalue, rel=1e-6)
    shares1, shares0 = table[0] / table[0].sum(), table[1] / table[1].sum()
    assert c["tv_distance"] == pytest.approx(0.5 * np.abs(shares1 - shares0).sum(), rel=1e-9)
    assert c["l_infinity_distance"] == pytest.approx(np.abs(shares1 - shares0).max(), rel=1e-9)
    assert c["js_distance"] == pytest.approx(jensenshannon(shares1, shares0, base=2), rel=1e-9)
    assert c["ks_test"] is None and c["population_stability_index"] is None

    profile = catalog.read(spark, info.profile_metrics_table_name)
    day1_x = profile.where(
        f"column_name = 'x' AND unix_seconds(window.start) = {START + DAY}"
    ).first()
    assert day1_x["count"] == 150 and day1_x["num_nulls"] == 0
    assert day1_x["avg"] == pytest.approx(day1.mean(), rel=1e-9)
    assert day1_x["stddev"] == pytest.approx(day1.std(ddof=1), rel=1e-9)
    assert day1_x["min"] == day1.min() and day1_x["max"] == day1.max()
    assert day1_x["median"] == pytest.approx(np.median(day1), abs=TOL)
    assert day1_x["quantiles"][3] == pytest.approx(np.quantile(day1, 0.1), abs=TOL)
    assert day1_x["distinct_count"] == len(np.unique(day1))
    day1_c = profile.where(
        f"column_name = 'c' AND unix_seconds(window.start) = {START + DAY}"
    ).first()
    values, counts = np.unique(cats1, return_counts=True)
    expected = sorted(zip(values, counts, strict=True), key=lambda vc: (-vc[1], vc[0]))
    assert [(i["item"], i["count"]) for i in day1_c["frequent_items"]] == [
        (str(v), int(n)) for v, n in expected
    ]


def test_model_quality_matches_scikit_learn(spark: SparkSession, seeded: TableCatalog) -> None:
    info = _inference_monitor()
    row = catalog_read_table_row(spark, seeded, info, START + DAY, model_id="2")
    source = (
        seeded.read(spark, SCORED)
        .where(F.to_date("scored_at") == (MONDAY + dt.timedelta(days=1)).date())
        .where("model_version = 2")
        .select("score", "defaulted")
        .toPandas()
    )
    y, p = source["defaulted"].to_numpy(), source["score"].to_numpy()
    y_hat = (p >= 0.5).astype(int)
    assert row["count"] == len(y) and row["percent_labeled"] == 1.0
    assert row["roc_auc_score"] == pytest.approx(roc_auc_score(y, p), rel=1e-9)
    assert row["pr_auc_score"] == pytest.approx(average_precision_score(y, p), rel=1e-9)
    assert row["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-9)
    assert row["brier_score"] == pytest.approx(brier_score_loss(y, p), rel=1e-9)
    assert row["accuracy_score"] == pytest.approx(accuracy_score(y, y_hat), rel=1e-9)
    assert row["precision"] == pytest.approx(precision_score(y, y_hat), rel=1e-9)
    assert row["recall"] == pytest.approx(recall_score(y, y_hat), rel=1e-9)
    assert row["f1_score"] == pytest.approx(f1_score(y, y_hat), rel=1e-9)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10)
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], p), minlength=10)
    ece = float(np.sum(counts[counts > 0] * np.abs(prob_true - prob_pred)) / len(p))
    assert row["calibration_error"] == pytest.approx(ece, rel=1e-9)


def catalog_read_table_row(spark, catalog, info, start, model_id=None, granularity="1 day"):
    where = (
        f"column_name = ':table' AND granularity = '{granularity}' AND slice_key IS NULL "
        f"AND unix_seconds(window.start) = {start} AND log_type = 'INPUT' AND "
        + ("model_id IS NULL" if model_id is None else f"model_id = '{model_id}'")
    )
    rows = catalog.read(spark, info.profile_metrics_table_name).where(where).collect()
    assert len(rows) == 1
    return rows[0]


def test_drift_against_baseline_and_slices(spark: SparkSession, seeded: TableCatalog) -> None:
    info = _inference_monitor()
    drift = seeded.read(spark, info.drift_metrics_table_name)
    income = (
        drift.where(
            "column_name = 'income' AND granularity = '1 day' AND model_id IS NULL "
            "AND slice_key IS NULL AND drift_type = 'BASELINE'"
        )
        .orderBy("window.start")
        .collect()
    )
    assert len(income) == 3
    psi = [r["population_stability_index"] for r in income]
    assert psi[2] > 0.5 and psi[2] > 2 * max(psi[:2])  # the drifted day stands out
    baseline = np.array([r[5] for r in _rows(-30, 120, 4) if r[5] is not None])
    day2 = np.array([v for v in _day_values(spark, seeded, 2, "income") if v is not None])
    assert income[2]["ks_test"]["statistic"] == pytest.approx(
        ks_2samp(day2, baseline).statistic, abs=TOL
    )
    slices = (
        drift.where("slice_key = 'purpose' AND column_name = ':table'")
        .select("slice_value")
        .distinct()
    )
    assert {r[0] for r in slices.collect()} == {"car", "home", "cash"}


# --- Incremental refresh -------------------------------------------------------------------------
def _grow(spark: SparkSession, catalog: TableCatalog) -> None:
    """Append a day without labels yet (day 3, in the first week) and a day of the next week."""
    _write(spark, catalog, SCORED, _rows(3, 40, 9, labelled=False), "append")
    _write(spark, catalog, SCORED, _rows(8, 30, 10), "append")


@pytest.fixture(scope="module")
def grown(
    spark: SparkSession, seeded: TableCatalog, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TableCatalog, RefreshReport]:
    """The seeded monitor after two new days and one uninterrupted refresh, and its report."""
    catalog = TableCatalog(str(tmp_path_factory.mktemp("grown")))
    _copy(seeded, catalog)
    _grow(spark, catalog)
    return catalog, refresh(spark, catalog, SCORED)


def test_second_refresh_changes_nothing(spark: SparkSession, seeded: TableCatalog) -> None:
    info = _inference_monitor()
    outputs = (info.profile_metrics_table_name, info.drift_metrics_table_name)
    versions = [delta_version(spark, seeded, n) for n in outputs]
    report = refresh(spark, seeded, SCORED)
    assert not report.changed and report.profile_windows == []
    assert [delta_version(spark, seeded, n) for n in outputs] == versions


def test_new_days_recompute_only_their_windows(
    spark: SparkSession, seeded: TableCatalog, grown: tuple[TableCatalog, RefreshReport]
) -> None:
    catalog, report = grown
    info = _inference_monitor()
    week1 = START + 7 * DAY
    assert report.profile_windows == [
        ("1 day", START + 3 * DAY),
        ("1 day", START + 8 * DAY),
        ("1 week", START),
        ("1 week", week1),
    ]
    # Day 8 has no day 7 before it, so only the new days and the weeks get drift rows.
    assert report.drift_windows == report.profile_windows

    def first_days(root: TableCatalog) -> list[str]:
        rows = (
            root.read(spark, info.profile_metrics_table_name)
            .where(f"unix_seconds(window.start) < {START + 3 * DAY} AND granularity = '1 day'")
            .collect()
        )
        return sorted(map(str, rows))

    assert first_days(catalog) == first_days(seeded)  # untouched
    new_day = catalog_read_table_row(spark, catalog, info, START + 3 * DAY)
    assert new_day["count"] == 40 and new_day["percent_labeled"] == 0.0
    assert new_day["roc_auc_score"] is None
    weekly = (
        catalog.read(spark, info.drift_metrics_table_name)
        .where(
            "granularity = '1 week' AND drift_type = 'CONSECUTIVE' AND column_name = ':table' "
            "AND model_id IS NULL AND slice_key IS NULL"
        )
        .select(
            F.unix_seconds("window.start").alias("start"),
            F.unix_seconds("window_cmp.start").alias("cmp"),
            "count_delta",
        )
        .collect()
    )
    assert [(r["start"], r["cmp"]) for r in weekly] == [(week1, START)]
    assert weekly[0]["count_delta"] == 30 - (3 * 60 + 40)


def test_late_labels_reopen_their_window(
    spark: SparkSession, grown: tuple[TableCatalog, RefreshReport], catalog: TableCatalog
) -> None:
    info = _inference_monitor()
    _copy(grown[0], catalog)
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, catalog.path(SCORED)).update(
        "to_date(scored_at) = date'2026-01-08'", {"defaulted": "cast(score > 0.5 as int)"}
    )
    report = refresh(spark, catalog, SCORED)
    assert report.profile_windows == [("1 day", START + 3 * DAY), ("1 week", START)]
    row = catalog_read_table_row(spark, catalog, info, START + 3 * DAY)
    assert row["percent_labeled"] == 1.0 and row["accuracy_score"] == 1.0


def _snapshot(
    spark: SparkSession, catalog: TableCatalog, name: str, drop: tuple[str, ...] = ()
) -> list[str]:
    df = catalog.read(spark, name).drop(*drop)
    doubles = [f.name for f in df.schema.fields if f.dataType.simpleString() == "double"]
    rounded = df.select(
        *[F.round(c, 9).alias(c) if c in doubles else F.col(f"`{c}`") for c in df.columns]
    )
    return sorted(r[0] for r in rounded.select(F.to_json(F.struct(*rounded.columns))).collect())


def test_an_incremental_refresh_ends_where_a_full_one_does(
    spark: SparkSession, catalog: TableCatalog
) -> None:
    # Daily windows only: a late label on day 1 recomputes day 1 and day 2's drift (against day
    # 1), reading the rows of days 0-2 alone; days 3-5 are not read.
    info = replace(
        _inference_monitor(),
        inference_log=replace(_inference_monitor().inference_log, granularities=["1 day"]),
    )
    _write(spark, catalog, SCORED, [r for d in range(6) for r in _rows(d, 30, 20 + d)], "overwrite")
    _write(spark, catalog, BASELINE_TABLE, _rows(-30, 90, 4), "overwrite")
    save_monitor(spark, catalog, info)
    refresh(spark, catalog, SCORED)
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, catalog.path(SCORED)).update(
        "to_date(scored_at) = date'2026-01-06'", {"defaulted": "1 - defaulted"}
    )
    report = refresh(spark, catalog, SCORED)
    assert report.profile_windows == [("1 day", START + DAY)]
    assert report.drift_windows == [("1 day", START + DAY), ("1 day", START + 2 * DAY)]
    full = TableCatalog(f"{catalog.root}-full")
    copy_tables(catalog, full, [SCORED, BASELINE_TABLE])
    shutil.copytree(f"{catalog.root}/_monitors", f"{full.root}/_monitors")
    assert len(refresh(spark, full, SCORED).profile_windows) == 6
    # Only the table version each window was computed at differs.
    kept = ("logging_table_commit_version",)
    for name in (info.profile_metrics_table_name, info.drift_metrics_table_name):
        assert _snapshot(spark, catalog, name, kept) == _snapshot(spark, full, name, kept)


def test_a_refresh_killed_half_way_is_completed_by_the_next(
    spark: SparkSession,
    seeded: TableCatalog,
    grown: tuple[TableCatalog, RefreshReport],
    catalog: TableCatalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    info = _inference_monitor()
    outputs = [info.profile_metrics_table_name, info.drift_metrics_table_name]
    _copy(seeded, catalog)
    _grow(spark, catalog)
    monkeypatch.setenv(FAULT_ENV, FAULT_AFTER_DRIFT)
    with pytest.raises(RefreshInterrupted):
        refresh(spark, catalog, SCORED)
    monkeypatch.delenv(FAULT_ENV)
    assert _snapshot(spark, catalog, outputs[1]) != _snapshot(spark, seeded, outputs[1])
    assert _snapshot(spark, catalog, outputs[0]) == _snapshot(spark, seeded, outputs[0])
    refresh(spark, catalog, SCORED)
    clean = grown[0]  # the same rows refreshed without interruption
    for name in outputs:
        assert _snapshot(spark, catalog, name) == _snapshot(spark, clean, name)
    assert not refresh(spark, catalog, SCORED).changed


# --- Report and command line ---------------------------------------------------------------------
def test_report_draws_drift_scores_and_quality(
    spark: SparkSession, seeded: TableCatalog, tmp_path
) -> None:
    from lakehouse.monitoring.report import write_report

    path = write_report(spark, seeded, SCORED, tmp_path / "report.html")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and f"Monitor of {SCORED}" in text
    for heading in ("Drift per column", "Prediction distribution", "Quality and label coverage"):
        assert f"<h2>{heading}</h2>" in text
    assert text.count('src="data:image/png;base64,') == 3
    assert "3 windows" in text


def test_monitor_commands_reject_bad_flags_without_a_traceback(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("lakehouse")
    bad_rules = tmp_path / "rules.yaml"
    bad_rules.write_text("rules:\n  - name: r\n    metric: m\n")
    for argv, message in (
        (["refresh", "gold.x", "--rules", str(tmp_path / "none.yaml")], "no rules file"),
        (["refresh", "gold.x", "--rules", str(bad_rules)], "exactly one of above, below"),
        (["report", "gold.x", "--granularity", "fortnight"], "granularity must look like"),
        (["create", "gold.x", "--profile", "inference"], "needs --timestamp-col"),
    ):
        done = subprocess.run(
            [str(exe), "monitor", *argv], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, (argv, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
