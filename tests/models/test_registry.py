"""The registry: the gate, aliases and stages in step, promotion, rollback, the audit table."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual, assertSchemaEqual

from lakehouse.cli import main as cli_main
from lakehouse.models.audit import GATE_AUDIT_SCHEMA
from lakehouse.models.config import GateConfig
from lakehouse.models.gate import decide
from lakehouse.models.registry import (
    champion_version,
    history,
    promote,
    rollback,
)
from lakehouse.models.training import (
    TrainConfig,
    model_columns,
    prepare_inputs,
    split_columns,
    train,
)
from lakehouse.platform.catalog import GOLD_MODEL_GATE_AUDIT, TableCatalog
from lakehouse.platform.settings import Settings
from tests.models.test_training import SyntheticTrainingSet, synthetic_frame, synthetic_set

GOOD = TrainConfig(n_estimators=20, max_depth=5, min_samples_leaf=3, seed=11)
#: One stump: learns a little, enough for a lowered floor, clearly below GOOD.
STUMP = TrainConfig(n_estimators=1, max_depth=1, min_samples_leaf=20, seed=11)
LOW_FLOOR = GateConfig(min_value=0.55)


def shuffled_set() -> SyntheticTrainingSet:
    """The synthetic set with its labels permuted: nothing left to learn."""
    frame = synthetic_frame()
    frame["defaulted"] = np.random.default_rng(0).permutation(frame["defaulted"].to_numpy())
    return synthetic_set(frame, {"gold.labels": 4})


def stages(settings: Settings) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Version -> (stage, aliases)."""
    return {r.version: (r.stage, r.aliases) for r in history(settings)}


def version_tags(settings: Settings, version: int) -> dict[str, str]:
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    return dict(client.get_model_version(settings.model_name, str(version)).tags)


# --- The decision ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("candidate", "champion", "passed", "reason"),
    [
        (0.80, None, True, "roc_auc 0.8000 meets the floor; no champion yet"),
        (0.70, None, True, "roc_auc 0.7000 meets the floor; no champion yet"),
        (0.69, None, False, "roc_auc 0.6900 is below the floor 0.7"),
        (0.795, 0.80, True, "within 0.01 of the champion's 0.8000"),
        (0.85, 0.80, True, "within 0.01 of the champion's 0.8000"),
        (0.78, 0.80, False, "worse than the champion's 0.8000 by more than 0.01"),
        (
            0.65,
            0.80,
            False,
            "below the floor 0.7; roc_auc 0.6500 is worse than the champion's 0.8000",
        ),
    ],
)
def test_decide(candidate: float, champion: float | None, passed: bool, reason: str) -> None:
    verdict, text = decide(candidate, champion, GateConfig())
    assert verdict is passed
    assert reason in text


@pytest.mark.parametrize(
    ("candidate", "champion", "passed"),
    [(0.30, None, True), (0.36, None, False), (0.305, 0.30, True), (0.32, 0.30, False)],
)
def test_decide_lower_is_better_metric(
    candidate: float, champion: float | None, passed: bool
) -> None:
    gate = GateConfig(metric="log_loss", min_value=0.35, tolerance=0.01)
    assert decide(candidate, champion, gate)[0] is passed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"metric": "auc"}, "gate metric must be one of"), ({"tolerance": -0.1}, "tolerance must")],
)
def test_gate_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GateConfig(**kwargs)  # type: ignore[arg-type]


# --- The gate in the registry ----------------------------------------------------------------
@pytest.mark.mlflow
def test_gate_rejects_a_model_trained_on_shuffled_labels_and_keeps_the_champion(
    settings: Settings,
) -> None:
    good = train(synthetic_set(), GOOD, settings)
    weak = train(shuffled_set(), GOOD, settings)

    assert good.decision is not None and good.decision.verdict == "promoted"
    assert weak.decision is not None and weak.decision.verdict == "rejected"
    assert weak.decision.passed is False
    assert "below the floor 0.7" in weak.decision.reason
    assert weak.decision.champion_version == 1
    assert champion_version(settings) == 1
    assert stages(settings) == {1: ("Production", ("champion",)), 2: ("None", ())}
    tags = version_tags(settings, 2)
    assert tags["lakehouse.gate.verdict"] == "rejected"
    assert float(tags["lakehouse.gate.candidate_value"]) == weak.decision.candidate_value
    assert float(tags["lakehouse.gate.champion_value"]) == weak.decision.champion_value
    assert tags["lakehouse.gate.champion_version"] == "1"


@pytest.mark.mlflow
def test_gate_promotes_a_better_model_compared_on_the_same_holdout(settings: Settings) -> None:
    first = train(synthetic_set(), STUMP, settings, gate=LOW_FLOOR)
    second = train(synthetic_set(), GOOD, settings, gate=LOW_FLOOR)

    assert first.decision is not None and first.decision.verdict == "promoted"
    decision = second.decision
    assert decision is not None and decision.verdict == "promoted"
    assert decision.champion_version == 1
    # Same frame, same split: the champion's holdout score is the one of its own run.
    assert decision.champion_value == first.metrics["roc_auc"]
    assert decision.candidate_value == second.metrics["roc_auc"]
    assert decision.candidate_value > decision.champion_value
    assert stages(settings) == {2: ("Production", ("champion",)), 1: ("Archived", ())}


@pytest.mark.mlflow
def test_champion_alias_and_production_stage_load_the_same_model(settings: Settings) -> None:
    train(synthetic_set(), STUMP, settings, gate=LOW_FLOOR)
    result = train(synthetic_set(), GOOD, settings, gate=LOW_FLOOR)
    frame = synthetic_frame(30, seed=99)
    numeric, categorical = split_columns(frame, model_columns(synthetic_set(frame)))
    X = prepare_inputs(frame, numeric, categorical)

    by_alias = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@champion")
    by_stage = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/Production")

    assert by_alias.metadata.run_id == by_stage.metadata.run_id == result.run_id
    np.testing.assert_array_equal(by_alias.predict(X), by_stage.predict(X))
    assert np.asarray(by_alias.predict(X)).shape == (30, 2)


@pytest.mark.mlflow
def test_no_promote_leaves_a_challenger_until_promoted(settings: Settings) -> None:
    train(synthetic_set(), STUMP, settings, gate=LOW_FLOOR)
    held = GateConfig(min_value=0.55, auto_promote=False)
    result = train(synthetic_set(), GOOD, settings, gate=held)

    assert result.decision is not None and result.decision.verdict == "challenger"
    assert stages(settings) == {
        2: ("Staging", ("challenger",)),
        1: ("Production", ("champion",)),
    }
    assert promote(settings, 2) == 1
    assert stages(settings) == {2: ("Production", ("champion",)), 1: ("Archived", ())}


@pytest.mark.mlflow
def test_rollback_restores_the_previous_champion(settings: Settings) -> None:
    train(synthetic_set(), STUMP, settings, gate=LOW_FLOOR)
    train(synthetic_set(), GOOD, settings, gate=LOW_FLOOR)
    assert champion_version(settings) == 2

    assert rollback(settings) == 1

    assert stages(settings) == {2: ("Archived", ()), 1: ("Production", ("champion",))}
    loaded = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/Production")
    assert loaded.metadata.run_id == history(settings)[-1].run_id
    with pytest.raises(ValueError, match="no previous champion to roll back to"):
        rollback(settings)


@pytest.mark.mlflow
def test_rollback_without_a_champion_is_an_error(settings: Settings) -> None:
    train(shuffled_set(), GOOD, settings)
    with pytest.raises(ValueError, match="has no champion to roll back"):
        rollback(settings)


@pytest.mark.mlflow
def test_promote_refuses_rejected_and_unknown_versions(settings: Settings) -> None:
    train(synthetic_set(), GOOD, settings)
    train(shuffled_set(), GOOD, settings)

    with pytest.raises(ValueError, match="version 2 of credit_risk_model was rejected"):
        promote(settings, 2)
    with pytest.raises(ValueError, match="has no version 9"):
        promote(settings, 9)
    assert promote(settings, 2, force=True) == 1
    assert champion_version(settings) == 2
    assert rollback(settings) == 1


@pytest.mark.mlflow
def test_training_and_its_gate_point_mlflow_at_the_stores_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    set_tracking_uri = mlflow.set_tracking_uri

    def counting(uri: str) -> None:
        calls.append(uri)
        set_tracking_uri(uri)

    monkeypatch.setattr(mlflow, "set_tracking_uri", counting)
    train(synthetic_set(), STUMP, settings, gate=LOW_FLOOR)
    assert calls == [settings.tracking_uri]  # the client's first use connects it

    calls.clear()
    result = train(synthetic_set(), GOOD, settings, gate=LOW_FLOOR)
    assert result.decision is not None and result.decision.champion_version == 1
    assert calls == []  # the gate loads both models and moves aliases on the same client


# --- The audit table -------------------------------------------------------------------------
def test_every_gate_decision_appends_one_audit_row(
    spark: SparkSession, settings: Settings, catalog: TableCatalog
) -> None:
    train(synthetic_set(), GOOD, settings, spark=spark, catalog=catalog)
    train(shuffled_set(), GOOD, settings, spark=spark, catalog=catalog)
    train(synthetic_set(), GOOD, settings, spark=spark, catalog=catalog)

    audit = catalog.read(spark, GOLD_MODEL_GATE_AUDIT)
    assertSchemaEqual(audit.schema, GATE_AUDIT_SCHEMA)
    expected = spark.createDataFrame(
        [
            (
                1,
                None,
                "promoted",
                True,
                0.7,
                0.01,
                80,
                '{"gold.customer_profile_features": 5, "gold.labels": 3}',
            ),
            (2, 1, "rejected", False, 0.7, 0.01, 80, '{"gold.labels": 4}'),
            (
                3,
                1,
                "promoted",
                True,
                0.7,
                0.01,
                80,
                '{"gold.customer_profile_features": 5, "gold.labels": 3}',
            ),
        ],
        "candidate_version long, champion_version long, verdict string, passed boolean, "
        "floor double, tolerance double, holdout_rows long, table_versions string",
    )
    assertDataFrameEqual(audit.select(*expected.columns), expected)
    # The same frame and config give the same model, within tolerance of itself.
    row = audit.where("candidate_version = 3").first()
    assert row is not None and row["candidate_value"] == row["champion_value"]


# --- The CLI ---------------------------------------------------------------------------------
@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point the CLI's own settings at this test's home."""
    monkeypatch.setenv("LAKEHOUSE_HOME", str(settings.home))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "LAKEHOUSE_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return settings


@pytest.mark.mlflow
def test_model_commands(cli_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    settings = cli_env
    train(synthetic_set(), STUMP, settings, gate=LOW_FLOOR)
    train(synthetic_set(), GOOD, settings, gate=LOW_FLOOR)
    capsys.readouterr()

    assert cli_main(["model", "rollback"]) == 0
    assert capsys.readouterr().out == "credit_risk_model version 1 is champion again\n"
    assert cli_main(["model", "promote", "2"]) == 0
    assert capsys.readouterr().out == "credit_risk_model version 2 is champion (was 1)\n"
    assert cli_main(["model", "promote", "7"]) == 1
    assert "has no version 7" in capsys.readouterr().err

    assert cli_main(["model", "history"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "version",
        "aliases",
        "stage",
        "metric",
        "verdict",
        "created",
        "(UTC)",
        "run",
    ]
    assert len(lines) == 4
    assert lines[2].split()[:3] == ["2", "champion", "Production"]
    assert lines[3].split()[:2] == ["1", "Archived"]
    assert all("promoted" in line for line in lines[2:])


@pytest.mark.mlflow
def test_history_lists_versions_newest_first(settings: Settings) -> None:
    assert history(settings) == []
    good = train(synthetic_set(), GOOD, settings)
    train(shuffled_set(), GOOD, settings)
    records = history(settings)
    assert [(r.version, r.aliases, r.stage, r.verdict) for r in records] == [
        (2, (), "None", "rejected"),
        (1, ("champion",), "Production", "promoted"),
    ]
    assert records[1].run_id == good.run_id
    assert records[1].metric_value == good.metrics["roc_auc"]
