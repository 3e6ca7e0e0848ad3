"""Ground truth from the generator: drift injected from day D is flagged, and only then.

Two small worlds of the same seed go through the lifecycle: a champion is trained and scores
the applications of days 0..D-1, then the rest of the days land, are ingested and scored. One
world drifts from day D (``lakehouse datagen --drift-from-day D``), the other does not. Each
gets the platform's inference monitor (champion baseline) refreshed with the retrain action on,
and a time-series monitor on ``silver.transactions`` whose baseline is the transactions the
champion's world had seen. At the default rules (``monitoring_rules.yaml``):

* drift: the transaction amounts and the gambling share (the merchant category) are flagged in
  the first window after D that makes two in a row, the default rate in the first labelled
  window from D on, nothing before D; the retrain action records a gated challenger;
* no drift: no rule fires on the transactions nor on the label or the champion's quality.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakehouse.features import store
from lakehouse.medallion.pipeline import run_pipeline
from lakehouse.models.config import GateConfig
from lakehouse.models.registry import alias_version, champion_version
from lakehouse.models.tracking import connect
from lakehouse.models.training import TrainConfig, train
from lakehouse.monitoring.alerts import Alert, evaluate_rules, load_rules, record_alerts
from lakehouse.monitoring.baseline import CHAMPION_BASELINE, baseline_table_name
from lakehouse.monitoring.definition import MonitorInfo, MonitorTimeSeries, save_monitor
from lakehouse.monitoring.refresh import refresh_monitor
from lakehouse.monitoring.sources import MONITORED_PREDICTIONS, inference_monitor
from lakehouse.platform.catalog import SILVER_TRANSACTIONS, TableCatalog
from lakehouse.platform.settings import Settings
from lakehouse.scoring.batch import score_batch
from lakehouse.simulation.generator import GeneratorConfig, generate
from lakehouse.workflows.monitoring import MonitoringOutcome, refresh_and_evaluate
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.mlflow]

START = date(2026, 1, 5)
DAYS = 90
DRIFT_DAY = 45
TRANSACTIONS_BASELINE = "silver.transactions_baseline"
TRANSACTION_COLUMNS = ["amount", "merchant_category", "channel"]
INFERENCE_COLUMNS = [
    "score",
    "defaulted",
    "loan_amount",
    "annual_income",
    "txn_amount_sum_7d",
    "gambling_share_30d",
]


CODEGEN = {"spark.sql.codegen.wholeStage": "true", "spark.sql.codegen.factoryMode": "FALLBACK"}


@dataclass
class World:
    """What one world's monitoring produced."""

    settings: Settings
    catalog: TableCatalog
    inference: MonitoringOutcome
    transactions: list[Alert]
    champion: int


def _config(drift: bool) -> GeneratorConfig:
    # Many applications per customer and few customers: daily windows of a few hundred
    # applications (and labels) for a small pipeline.
    return GeneratorConfig(
        seed=11,
        customers=1000,
        days=DAYS,
        start_date=START,
        application_rate=0.6,
        drift_from_day=DRIFT_DAY if drift else None,
    )


def _lifecycle(spark: SparkSession, settings: Settings, drift: bool) -> World:
    catalog = TableCatalog(settings.tables_root)
    config = _config(drift)
    generate(settings.landing_dir, config, days=range(DRIFT_DAY))
    run_pipeline(spark, settings, catalog)
    store.apply(settings)
    connect(settings)
    # The first champion learns from the first week's outcomes only: a lower floor lets it in.
    first = train(
        store.build_training_set(spark, settings, catalog),
        TrainConfig(n_estimators=60),
        settings,
        gate=GateConfig(min_value=0.6),
        spark=spark,
        catalog=catalog,
    )
    print("champion", first.version, first.metrics, first.train_rows)
    score_batch(spark, settings, catalog)
    # What the champion's world had seen of the transactions: the baseline of their monitor.
    catalog.read(spark, SILVER_TRANSACTIONS).select(*TRANSACTION_COLUMNS).write.format(
        "delta"
    ).save(catalog.path(TRANSACTIONS_BASELINE))

    generate(settings.landing_dir, config, days=range(DRIFT_DAY, DAYS))
    run_pipeline(spark, settings, catalog)
    score_batch(spark, settings, catalog)

    rules = load_rules(REPO_ROOT / "monitoring_rules.yaml")
    champion = champion_version(settings)
    assert champion is not None
    # The platform's monitor, on the columns the generator drifts and a few others: the same
    # statistics as on every input, for a fraction of the work.
    save_monitor(
        spark,
        catalog,
        replace(
            inference_monitor(baseline_table_name=baseline_table_name(MONITORED_PREDICTIONS)),
            baseline_source=CHAMPION_BASELINE,
            columns=INFERENCE_COLUMNS,
        ),
    )
    inference = refresh_and_evaluate(
        spark, settings, catalog, MONITORED_PREDICTIONS, act=True, rules=rules
    )
    info = MonitorInfo(
        table_name=SILVER_TRANSACTIONS,
        output_schema_name="silver",
        time_series=MonitorTimeSeries("transaction_ts", ["1 day"]),
        baseline_table_name=TRANSACTIONS_BASELINE,
        columns=TRANSACTION_COLUMNS,
    )
    save_monitor(spark, catalog, info)
    refresh_monitor(spark, catalog, info)
    transactions = record_alerts(spark, catalog, info, evaluate_rules(spark, catalog, info, rules))
    return World(settings, catalog, inference, transactions, champion)


@pytest.fixture(scope="module")
def worlds(
    spark: SparkSession, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[bool, World]]:
    root = Path(tmp_path_factory.mktemp("acceptance"))
    # Thousands of rows a day: compiled queries pay back here (the other tests run without).
    saved = {key: spark.conf.get(key) for key in CODEGEN}
    for key, value in CODEGEN.items():
        spark.conf.set(key, value)
    try:
        built = {}
        for drift in (True, False):
            home = base_settings.with_home(root / f"drift-{drift}")
            built[drift] = _lifecycle(spark, home, drift)
            print("drift" if drift else "no drift")
            print(" inference", _describe(built[drift].inference.alerts))
            print(" transactions", _describe(built[drift].transactions))
            print(" actions", [a.line() for a in built[drift].inference.actions])
    finally:
        for key, value in saved.items():
            spark.conf.set(key, value)
    yield built


def _day(alert: Alert) -> int:
    start = datetime.fromtimestamp(alert.window_start, UTC).date()
    return (start - START).days


def _first(alerts: list[Alert], rule: str, column: str) -> int | None:
    days = [_day(a) for a in alerts if a.rule == rule and a.column_name == column]
    return min(days) if days else None


def _describe(alerts: list[Alert]) -> list[tuple[str, str, int]]:
    return sorted({(a.rule, a.column_name, _day(a)) for a in alerts})


def test_drift_is_flagged_in_the_first_window_after_it_starts(worlds: dict[bool, World]) -> None:
    drifted = worlds[True]
    tx = drifted.transactions
    assert _first(tx, "input_ks", "amount") == DRIFT_DAY + 1, _describe(tx)
    assert _first(tx, "input_chi_squared", "merchant_category") == DRIFT_DAY + 1, _describe(tx)
    assert all(_day(a) >= DRIFT_DAY for a in tx), _describe(tx)
    labelled = [a for a in drifted.inference.alerts if a.rule == "default_rate_shift"]
    assert labelled and min(_day(a) for a in labelled) in (DRIFT_DAY, DRIFT_DAY + 1), _describe(
        labelled
    )
    assert all(_day(a) >= DRIFT_DAY for a in labelled), _describe(labelled)


def test_the_retrain_action_produces_a_gated_challenger(
    spark: SparkSession, worlds: dict[bool, World]
) -> None:
    drifted = worlds[True]
    (action,) = drifted.inference.actions
    assert action.run_id and action.model_version not in (None, drifted.champion)
    assert action.verdict in ("challenger", "rejected")
    # Auto-promotion is off: the champion stays; a passing candidate is the challenger.
    assert champion_version(drifted.settings) == drifted.champion
    if action.verdict == "challenger":
        assert alias_version(drifted.settings, "challenger") == action.model_version
    recorded = drifted.catalog.read(spark, "gold.monitored_predictions_actions").collect()
    assert [(r["run_id"], r["model_version"], r["verdict"]) for r in recorded] == [
        (action.run_id, action.model_version, action.verdict)
    ]
    alerts = drifted.catalog.read(spark, "gold.monitored_predictions_alerts")
    assert set(recorded[0]["alert_ids"]) == {r[0] for r in alerts.select("alert_id").collect()}


def test_the_baseline_is_the_champion_s_training_rows(
    spark: SparkSession, worlds: dict[bool, World]
) -> None:
    from lakehouse.models.registry import ModelRegistry
    from lakehouse.models.tracking import mlflow_client

    world = worlds[True]
    run_id = ModelRegistry.of(world.settings).require_version(world.champion).run_id
    params = mlflow_client(world.settings).get_run(run_id).data.params
    baseline = world.catalog.read(spark, "gold.monitored_predictions_baseline")
    assert baseline.count() == int(params["train_rows"])
    assert {r[0] for r in baseline.select("run_id").distinct().collect()} == {run_id}
    assert world.inference.baseline is not None and world.inference.baseline.rebuilt


def test_without_drift_no_rule_fires(worlds: dict[bool, World]) -> None:
    calm = worlds[False]
    assert calm.transactions == [], _describe(calm.transactions)
    quality = [
        a for a in calm.inference.alerts if a.rule in ("default_rate_shift", "champion_roc_auc")
    ]
    assert quality == [], _describe(quality)
