"""Canary analysis: the verdict against thresholds, on a synthetic inference log, and its record."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse.medallion.contracts import GOLD_LABELS_SCHEMA
from lakehouse.platform.catalog import (
    GOLD_LABELS,
    GOLD_SERVING_DECISIONS,
    SILVER_QUARANTINE,
    TableCatalog,
)
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import overwrite
from lakehouse.scoring.canary import (
    PROMOTE,
    ROLLBACK,
    WAIT,
    CanaryThresholds,
    Decision,
    EndpointConfig,
    EntityStats,
    judge,
    load_thresholds,
    psi,
    record_decision,
)
from lakehouse.scoring.inference_log import (
    SERVING_DECISIONS_SCHEMA,
    SpoolIngest,
    application_ids,
    compare,
    ingest_decisions,
    ingest_inference_log,
)
from tests.scoring.test_inference_log import T0, line, log_record, write_sealed


def stats(
    entity: str,
    requests: int = 400,
    errors: int = 0,
    p50: float | None = 2.0,
    p99: float | None = 8.0,
    scores: np.ndarray | None = None,
    outcomes: np.ndarray | None = None,
) -> EntityStats:
    rng = np.random.default_rng(1 if entity == "canary" else 2)
    return EntityStats(
        entity,
        2 if entity == "canary" else 1,
        requests,
        errors,
        p50,
        p99,
        rng.beta(2, 5, 2000) if scores is None else scores,
        np.empty((0, 2)) if outcomes is None else outcomes,
    )


# --- The verdict (no JVM) ------------------------------------------------------------------------
def test_psi_is_near_zero_for_one_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.beta(2, 5, 5000)
    assert psi(reference, rng.beta(2, 5, 5000)) < 0.02
    assert psi(reference, rng.beta(5, 2, 5000)) > 1.0
    assert psi(np.full(100, 0.5), np.full(100, 0.5)) == pytest.approx(0.0)


def test_judge_promotes_a_canary_like_its_champion() -> None:
    verdict = judge(stats("canary"), stats("champion"), CanaryThresholds())
    assert verdict.verdict == PROMOTE
    assert {c.name: c.passed for c in verdict.checks} == {
        "error_rate": True,
        "latency_p50": True,
        "latency_p99": True,
        "score_psi": True,
        "score_ks": True,
        "outcome_auc": None,  # no labels
    }
    assert verdict.reason == "every check passed (outcome_auc skipped)"


@pytest.mark.parametrize(
    ("canary", "failed"),
    [
        ({"errors": 20}, ["error_rate"]),  # 5% against 0%, 1 point allowed
        ({"p50": 8.0}, ["latency_p50"]),  # limit 2 x 1.25 + 5 = 7.5 ms
        ({"p99": 17.5}, ["latency_p99"]),  # limit 8 x 1.5 + 5 = 17 ms
        ({"scores": np.random.default_rng(3).beta(5, 2, 2000)}, ["score_psi", "score_ks"]),
    ],
)
def test_judge_rolls_back_on_each_failed_check(canary: dict[str, Any], failed: list[str]) -> None:
    verdict = judge(stats("canary", **canary), stats("champion"), CanaryThresholds())
    assert verdict.verdict == ROLLBACK
    assert [c.name for c in verdict.checks if c.passed is False] == failed
    assert verdict.reason.startswith(f"{failed[0]} failed: ")


def test_judge_compares_outcomes_once_both_sides_have_enough_labels() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 100).astype(float)
    informative = np.column_stack([labels * 0.5 + rng.uniform(0, 0.5, 100), labels])
    noise = np.column_stack([rng.uniform(0, 1, 100), labels])
    bad = judge(
        stats("canary", outcomes=noise), stats("champion", outcomes=informative), CanaryThresholds()
    )
    assert bad.verdict == ROLLBACK
    assert [c.name for c in bad.checks if c.passed is False] == ["outcome_auc"]
    few = judge(
        stats("canary", outcomes=noise[:10]),
        stats("champion", outcomes=informative),
        CanaryThresholds(),
    )
    assert few.verdict == PROMOTE


def test_judge_waits_for_enough_traffic_whatever_the_checks_say() -> None:
    verdict = judge(
        stats("canary", requests=150, errors=150), stats("champion"), CanaryThresholds()
    )
    assert verdict.verdict == WAIT
    assert verdict.reason == "too few requests (canary 150; 200 needed)"
    assert (
        judge(
            stats("canary", requests=150), stats("champion"), CanaryThresholds(min_requests=100)
        ).verdict
        == PROMOTE
    )


def test_thresholds_from_a_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text("min_requests: 500\nmax_psi: 0.1\n")
    loaded = load_thresholds(path)
    assert loaded == CanaryThresholds(min_requests=500, max_psi=0.1)
    assert loaded.override({"max_psi": 0.3, "max_ks": None}).max_psi == 0.3

    path.write_text("max_psy: 0.1\n")
    with pytest.raises(ValueError, match="unknown key\\(s\\) max_psy"):
        load_thresholds(path)
    path.write_text("min_requests: many\n")
    with pytest.raises(ValueError, match="min_requests must be an integer"):
        load_thresholds(path)
    with pytest.raises(ValueError, match="max_psi must be >= 0"):
        CanaryThresholds(max_psi=-1)


def test_thresholds_from_the_canary_section_of_the_gate_file(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    assert load_thresholds(repo / "ml_gate.yaml") == CanaryThresholds()
    path = tmp_path / "ml_gate.yaml"
    path.write_text("metric: roc_auc\ncanary:\n  max_ks: 0.12\n  min_requests: 40\n")
    assert load_thresholds(path) == CanaryThresholds(max_ks=0.12, min_requests=40)
    path.write_text("metric: roc_auc\ncanary:\n  max_kss: 0.12\n")
    with pytest.raises(ValueError, match="unknown key\\(s\\) max_kss"):
        load_thresholds(path)


def test_endpoint_config_keeps_the_alias_an_entity_follows() -> None:
    answer = {
        "name": "credit",
        "state": {"ready": "READY", "config_update": "NOT_UPDATING"},
        "config": {
            "served_entities": [
                {
                    "name": "champion",
                    "entity_name": "m",
                    "entity_version": "3",
                    "entity_alias": "champion",
                    "workload_size": "Small",
                },
                {"name": "canary", "entity_name": "m", "entity_version": "4"},
            ],
            "traffic_config": {
                "routes": [
                    {"served_entity_name": "champion", "traffic_percentage": 90},
                    {"served_entity_name": "canary", "traffic_percentage": 10},
                ],
                "shadow": {"served_entity_name": "canary", "percentage": 5},
            },
        },
    }
    config = EndpointConfig.of(answer)
    assert config.served == {"champion": 3, "canary": 4}
    assert config.champion()["entity_version"] == "champion"
    assert config.body() == {
        "served_entities": [
            {"name": "champion", "entity_name": "m", "entity_version": "champion"},
            {"name": "canary", "entity_name": "m", "entity_version": "4"},
        ],
        "traffic_config": {
            "routes": [
                {"served_entity_name": "champion", "traffic_percentage": 90},
                {"served_entity_name": "canary", "traffic_percentage": 10},
            ],
            "shadow": {"served_entity_name": "canary", "percentage": 5},
        },
    }
    # Without the canary, its shadow goes too.
    alone = config.with_entities([config.champion()], {"champion": 100})
    assert alone.shadow is None


def test_a_decision_is_written_whole_into_the_spool(settings: Settings) -> None:
    decision = Decision(
        "credit",
        "canary",
        "manual",
        True,
        "why",
        {"x": np.float64(0.5)},
        canary_version=2,
        canary_percent=10,
    )
    path = record_decision(settings, decision)
    assert path.parent == settings.landing_dir / "serving_decisions"
    assert list((path.parent / "_open").iterdir()) == []
    record = json.loads(path.read_text())
    assert record["decision_id"] == decision.decision_id
    assert record["decided_at_ms"] == int(decision.decided_at.timestamp() * 1000)
    assert json.loads(record["evidence"]) == {"x": 0.5}


def test_the_endpoint_moves_import_no_spark_and_no_ml_library() -> None:
    probe = (
        "import json, sys, lakehouse.scoring.canary\n"
        "print(json.dumps([m for m in ('pyspark', 'mlflow', 'sklearn', 'scipy') "
        "if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(done.stdout.splitlines()[-1]) == []


# --- On the inference log ------------------------------------------------------------------------
def test_application_ids_are_read_from_every_request_format(spark: SparkSession) -> None:
    requests = [
        {
            "dataframe_split": {
                "columns": ["loan_amount", "application_id"],
                "data": [[1, "A1"], [2, "A2"]],
            }
        },
        {"dataframe_records": [{"application_id": "B1"}, {"application_id": 7}]},
        {"instances": [{"application_id": "C1", "loan_amount": 5}]},
        {"inputs": [{"application_id": "D1"}]},
        {"inputs": {"application_id": ["E1", "E2"], "loan_amount": [1, 2]}},
        {"dataframe_records": [{"customer_id": "X"}]},
    ]
    df = spark.createDataFrame([(json.dumps(r),) for r in requests], "request string")
    ids = [r[0] for r in df.select(application_ids(F.col("request"))).collect()]
    assert ids == [["A1", "A2"], ["B1", "7"], ["C1"], ["D1"], ["E1", "E2"], None]


def side(
    rng: np.random.Generator,
    endpoint: str,
    entity: str,
    version: int,
    n: int,
    *,
    informative: bool,
    shift: float = 0.0,
    error_every: int = 0,
    latency: float = 2.0,
) -> tuple[list[str], list[tuple[str, int]]]:
    """Spool lines of ``n`` requests answered by one entity, and their applications' labels.

    Half the requests name the application in their row, the other half in their
    ``client_request_id``.
    """
    lines, labels = [], []
    for i in range(n):
        app = f"{endpoint}-{entity}-{i}"
        label = int(rng.uniform() < 0.3)
        base = 0.2 + (0.35 * label if informative else 0.0) + shift
        score = float(np.clip(base + rng.normal(0, 0.12), 0.001, 0.999))
        failed = error_every and i % error_every == 0
        in_row = i % 2 == 0
        row = {"customer_id": f"C{i}", **({"application_id": app} if in_row else {})}
        lines.append(
            line(
                log_record(
                    f"{endpoint}-{entity}-{i}",
                    entity,
                    endpoint_name=endpoint,
                    model_version=version,
                    timestamp_ms=T0 + 1000 * i,
                    client_request_id=None if in_row else app,
                    status_code=503 if failed else 200,
                    execution_duration_ms=latency + rng.uniform(0, 1),
                    request=json.dumps({"dataframe_records": [row]}),
                    response=json.dumps(
                        {"error_code": "UNAVAILABLE"} if failed else {"predictions": [score]}
                    ),
                )
            )
        )
        labels.append((app, label))
    return lines, labels


@pytest.fixture(scope="module")
def canary_log(
    spark: SparkSession, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, TableCatalog]:
    """One inference log, two endpoints: ``good`` (a canary like its champion) and ``bad`` (a
    canary with server errors, slow, shifted scores unrelated to the outcomes); the labels of
    every application."""
    settings = base_settings.with_home(tmp_path_factory.mktemp("canary-home"))
    catalog = TableCatalog(settings.tables_root)
    rng = np.random.default_rng(42)
    labels: list[tuple[str, int]] = []
    for endpoint, canary_options in (
        ("good", {"informative": True}),
        ("bad", {"informative": False, "shift": 0.3, "error_every": 10, "latency": 30.0}),
    ):
        for entity, version, n, options in (
            ("champion", 1, 300, {"informative": True}),
            ("canary", 2, 260, canary_options),
        ):
            lines, known = side(rng, endpoint, entity, version, n, **options)  # type: ignore[arg-type]
            write_sealed(settings, f"{endpoint}-{entity}.jsonl", lines)
            labels += known
    # Requests of the champion before the canary started are left out of the comparison.
    write_sealed(
        settings,
        "before.jsonl",
        [
            line(
                log_record(
                    f"old-{i}", endpoint_name="good", timestamp_ms=T0 - 60_000, status_code=503
                )
            )
            for i in range(50)
        ],
    )
    ingest = ingest_inference_log(spark, settings, catalog)
    assert (ingest.inserted, ingest.quarantined) == (2 * 560 + 50, 0)
    now = datetime(2026, 4, 1)
    rows = [(app, "C", now, 1000.0, 12, "CAR", label, now) for app, label in labels]
    overwrite(spark, catalog, GOLD_LABELS, spark.createDataFrame(rows, GOLD_LABELS_SCHEMA))
    return settings, catalog


def test_a_canary_like_its_champion_is_promoted(
    spark: SparkSession, canary_log: tuple[Settings, TableCatalog]
) -> None:
    _, catalog = canary_log
    verdict = compare(spark, catalog, "good", ("champion", 1), ("canary", 2), CanaryThresholds())

    assert verdict.verdict == PROMOTE, verdict.reason
    assert (verdict.champion.requests, verdict.canary.requests) == (300, 260)
    assert (verdict.champion.errors, verdict.canary.errors) == (0, 0)
    assert (len(verdict.champion.scores), len(verdict.canary.outcomes)) == (300, 260)
    checks = {c.name: c for c in verdict.checks}
    assert all(c.passed for c in checks.values())
    assert checks["outcome_auc"].value is not None and checks["outcome_auc"].value > 0.8


def test_a_failing_canary_is_rolled_back_with_every_reason(
    spark: SparkSession, canary_log: tuple[Settings, TableCatalog]
) -> None:
    _, catalog = canary_log
    verdict = compare(spark, catalog, "bad", ("champion", 1), ("canary", 2), CanaryThresholds())

    assert verdict.verdict == ROLLBACK
    assert verdict.canary.errors == 26
    assert verdict.canary.error_rate == pytest.approx(0.1)
    assert [c.name for c in verdict.checks if c.passed is False] == [
        "error_rate",
        "latency_p50",
        "latency_p99",
        "score_psi",
        "score_ks",
        "outcome_auc",
    ]
    # The labelled scores of the failed requests are missing, the rest are joined.
    assert len(verdict.canary.outcomes) == 260 - 26
    # Not enough traffic for these thresholds: no verdict yet.
    waiting = compare(
        spark, catalog, "bad", ("champion", 1), ("canary", 2), CanaryThresholds(min_requests=1000)
    )
    assert waiting.verdict == WAIT


def test_every_decision_is_one_row_of_the_audit_table_with_its_evidence(
    spark: SparkSession, canary_log: tuple[Settings, TableCatalog]
) -> None:
    settings, catalog = canary_log
    thresholds = CanaryThresholds(max_psi=0.2)
    verdicts = {
        name: compare(spark, catalog, name, ("champion", 1), ("canary", 2), thresholds)
        for name in ("good", "bad")
    }
    decisions = [
        Decision(
            name,
            "analyze",
            "automatic",
            False,
            v.reason,
            v.evidence(),
            model_name="credit_risk_model",
            champion_version=1,
            canary_version=2,
            canary_percent=10,
            verdict=v.verdict,
        )
        for name, v in verdicts.items()
    ]
    for decision in decisions:
        record_decision(settings, decision)
    spool = settings.landing_dir / "serving_decisions"
    (spool / "broken.jsonl").write_text('{"decision_id": "x", "action": "promote"\n')

    report = ingest_decisions(spark, settings, catalog)
    assert report == SpoolIngest(
        GOLD_SERVING_DECISIONS, files=3, lines_read=3, inserted=2, quarantined=1
    )
    assert ingest_decisions(spark, settings, catalog) == SpoolIngest(GOLD_SERVING_DECISIONS)

    table = catalog.read(spark, GOLD_SERVING_DECISIONS)
    assert table.schema == SERVING_DECISIONS_SCHEMA
    rows = {r["endpoint_name"]: r for r in table.collect()}
    assert {
        n: (r["verdict"], r["action"], r["trigger"], r["applied"]) for n, r in rows.items()
    } == {
        "good": (PROMOTE, "analyze", "automatic", False),
        "bad": (ROLLBACK, "analyze", "automatic", False),
    }
    evidence = json.loads(rows["bad"]["evidence"])
    assert evidence["thresholds"]["max_psi"] == 0.2
    assert evidence["canary"]["requests"] == 260
    assert evidence["canary"]["errors"] == 26
    assert {c["name"]: c["passed"] for c in evidence["checks"]}["error_rate"] is False
    assert rows["good"]["decision_id"] == decisions[0].decision_id
    assert rows["good"]["decided_at"].timestamp() == pytest.approx(
        decisions[0].decided_at.timestamp(), abs=0.001
    )
    broken = catalog.read(spark, SILVER_QUARANTINE).where("entity = 'serving_decisions'").collect()
    assert [(r["rule"], r["_source_file"].rsplit("/", 1)[-1]) for r in broken] == [
        ("malformed", "broken.jsonl")
    ]
