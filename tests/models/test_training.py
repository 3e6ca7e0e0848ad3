"""Training: data preparation, metrics, the tracked run, reproduction, a real MLflow server."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from pyspark.sql import SparkSession

from lakehouse.cli import main as cli_main
from lakehouse.models.evaluation import evaluate
from lakehouse.models.tracking import connect
from lakehouse.models.training import (
    TrainConfig,
    build_pipeline,
    labels,
    model_columns,
    prepare_inputs,
    reproduce,
    time_split,
    train,
)
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import overwrite
from lakehouse.workflows.training import summary_lines

FEATURES = [
    "age",
    "annual_income",
    "employment_years",
    "credit_score",
    "home_ownership",
    "region",
    "txn_count_7d",
    "txn_amount_sum_30d",
    "gambling_share_30d",
    "online_share_30d",
]
SMALL = TrainConfig(n_estimators=10, max_depth=4, min_samples_leaf=3, seed=11)


@dataclass(frozen=True)
class SyntheticTrainingSet:
    """Shaped like ``lakehouse.features.store.TrainingSet``."""

    frame: pd.DataFrame
    feature_columns: list[str]
    table_versions: dict[str, int] = field(default_factory=dict)
    feature_service: str = "credit_risk_v1"


def synthetic_frame(n: int = 400, seed: int = 7) -> pd.DataFrame:
    """Labelled applications whose default risk depends on score, gambling and loan size."""
    rng = np.random.default_rng(seed)
    credit = rng.integers(300, 851, n)
    gambling = rng.beta(1, 8, n)
    income = rng.lognormal(10.8, 0.4, n)
    loan = rng.uniform(1000, 40000, n).round(2)
    risk = -0.012 * (credit - 600) + 6 * gambling + 1.5 * (loan / income) - 1.0
    defaulted = (rng.uniform(size=n) < 1 / (1 + np.exp(-risk))).astype(int)
    age = rng.integers(21, 70, n).astype(float)
    age[rng.uniform(size=n) < 0.05] = np.nan
    ownership = pd.Series(rng.choice(["RENT", "OWN", "MORTGAGE"], n), dtype=object)
    return pd.DataFrame(
        {
            "application_id": [f"A{i:08d}" for i in range(n)],
            "customer_id": [f"C{i % 150:06d}" for i in range(n)],
            "application_timestamp": pd.Timestamp("2026-01-01")
            + pd.to_timedelta(np.arange(n) * 3, unit="h"),
            "loan_amount": loan,
            "term_months": rng.choice([12, 24, 36, 48, 60], n).astype("int32"),
            "purpose": rng.choice(["CAR", "HOME_IMPROVEMENT", "DEBT_CONSOLIDATION", "OTHER"], n),
            "defaulted": defaulted.astype("int32"),
            "age": age,
            "annual_income": income.round(2),
            "employment_years": rng.uniform(0, 30, n).round(1),
            "credit_score": credit.astype("int32"),
            "home_ownership": ownership.where(rng.uniform(size=n) > 0.03, None),
            "region": rng.choice(["NORTH", "SOUTH", "EAST", "WEST", "CENTRAL"], n),
            "txn_count_7d": rng.poisson(5, n),
            "txn_amount_sum_30d": rng.gamma(2, 500, n).round(2),
            "gambling_share_30d": gambling,
            "online_share_30d": rng.uniform(0, 1, n),
        }
    )


def synthetic_set(
    frame: pd.DataFrame | None = None, versions: dict[str, int] | None = None
) -> SyntheticTrainingSet:
    """A training set over the synthetic frame."""
    return SyntheticTrainingSet(
        synthetic_frame() if frame is None else frame,
        list(FEATURES),
        {"gold.labels": 3, "gold.customer_profile_features": 5} if versions is None else versions,
    )


class FixedModel:
    """A stand-in classifier with known probabilities, for exact metric checks."""

    def __init__(self, proba: list[float]) -> None:
        self.proba = np.array(proba)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.column_stack([1 - self.proba, self.proba])


# --- Configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_type": "xgboost"}, "model_type must be one of"),
        ({"n_estimators": 0}, "n_estimators must be >= 1"),
        ({"max_depth": 0}, "max_depth must be >= 1"),
        ({"learning_rate": 0.0}, "learning_rate must be in"),
        ({"min_samples_leaf": 0}, "min_samples_leaf must be >= 1"),
        ({"holdout_fraction": 1.0}, "holdout_fraction must be in"),
    ],
)
def test_train_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_train_config_round_trips_through_params() -> None:
    config = TrainConfig("hist_gradient_boosting", 7, None, 0.3, 2, 5, 0.25)
    params = config.to_params()
    assert params == {
        "model_type": "hist_gradient_boosting",
        "n_estimators": "7",
        "max_depth": "None",
        "learning_rate": "0.3",
        "min_samples_leaf": "2",
        "seed": "5",
        "holdout_fraction": "0.25",
    }
    assert TrainConfig.from_params(params) == config


def test_train_config_from_params_names_missing_keys() -> None:
    with pytest.raises(ValueError, match=r"lack the training configuration: .*seed"):
        TrainConfig.from_params({"model_type": "random_forest"})


# --- Data preparation ------------------------------------------------------------------------
def test_time_split_holds_out_the_newest_applications() -> None:
    frame = pd.DataFrame(
        {
            "application_id": ["A1", "A2", "A3", "A4", "A5"],
            "application_timestamp": pd.to_datetime(
                ["2026-01-03", "2026-01-01", "2026-01-05", "2026-01-02", "2026-01-05"]
            ),
        }
    )
    older, newest = time_split(frame, 0.4)
    assert older["application_id"].tolist() == ["A2", "A4", "A1"]
    assert newest["application_id"].tolist() == ["A3", "A5"]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_time_split_rejects_bad_fraction(fraction: float) -> None:
    frame = synthetic_frame(10)
    with pytest.raises(ValueError, match="holdout_fraction must be in"):
        time_split(frame, fraction)


def test_time_split_needs_the_time_column() -> None:
    with pytest.raises(ValueError, match="lacks the time column 'application_timestamp'"):
        time_split(pd.DataFrame({"application_id": ["A1", "A2"]}), 0.5)


def test_prepare_inputs_makes_numbers_float_and_missing_categories_none() -> None:
    frame = pd.DataFrame(
        {
            "term_months": pd.Series([12, 36], dtype="int32"),
            "credit_score": pd.Series([700, None], dtype="Int64"),
            "region": pd.Series(["NORTH", np.nan], dtype=object),
        }
    )
    out = prepare_inputs(frame, ["term_months", "credit_score"], ["region"])
    assert out.dtypes.astype(str).to_dict() == {
        "term_months": "float64",
        "credit_score": "float64",
        "region": "object",
    }
    assert out["term_months"].tolist() == [12.0, 36.0]
    assert out["credit_score"].iloc[0] == 700.0 and math.isnan(out["credit_score"].iloc[1])
    assert out["region"].tolist() == ["NORTH", None]


def test_model_columns_are_request_columns_then_features() -> None:
    columns = model_columns(synthetic_set())
    assert columns == ["loan_amount", "term_months", "purpose", *FEATURES]


def test_model_columns_name_missing_features() -> None:
    training_set = SyntheticTrainingSet(synthetic_frame(10), [*FEATURES, "txn_count_90d"])
    with pytest.raises(ValueError, match="lacks feature columns: txn_count_90d"):
        model_columns(training_set)


@pytest.mark.parametrize(
    ("values", "message"),
    [([0, None, 1], "has 1 null values"), ([0, 2, 1], r"must hold 0/1, found \[0, 1, 2\]")],
)
def test_labels_reject_bad_values(values: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        labels(pd.DataFrame({"defaulted": values}))


# --- Model and metrics -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model_type", "classifier"),
    [
        ("random_forest", "RandomForestClassifier"),
        ("hist_gradient_boosting", "HistGradientBoostingClassifier"),
    ],
)
def test_build_pipeline_is_seeded_and_deterministic(model_type: str, classifier: str) -> None:
    config = TrainConfig(model_type=model_type, n_estimators=5, max_depth=3, seed=3)
    frame = synthetic_frame(200)
    numeric = ["loan_amount", "age", "credit_score"]
    categorical = ["purpose", "home_ownership"]
    X, y = prepare_inputs(frame, numeric, categorical), labels(frame)
    first = build_pipeline(config, numeric, categorical).fit(X, y)
    second = build_pipeline(config, numeric, categorical).fit(X, y)
    assert [name for name, _ in first.steps] == ["preprocess", "classifier"]
    assert type(first.steps[-1][1]).__name__ == classifier
    assert first.steps[-1][1].random_state == 3
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))


def test_evaluate_gives_exact_metrics_of_known_probabilities() -> None:
    # Ranked 0.9 (1), 0.6 (0), 0.4 (1), 0.1 (0); at 0.5 the predictions are 0, 1, 0, 1.
    model = FixedModel([0.1, 0.6, 0.4, 0.9])
    metrics = evaluate(model, pd.DataFrame({"x": [0, 0, 0, 0]}), np.array([0, 0, 1, 1]))
    expected = {
        "roc_auc": 0.75,
        "pr_auc": 0.5 * 1.0 + 0.5 * (2 / 3),
        "accuracy": 0.5,
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "log_loss": -(2 * math.log(0.9) + 2 * math.log(0.4)) / 4,
        "brier": (0.01 + 0.36 + 0.36 + 0.01) / 4,
    }
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-12), name


def test_evaluate_needs_both_classes() -> None:
    with pytest.raises(ValueError, match=r"evaluation needs both classes .* found only \[1\]"):
        evaluate(FixedModel([0.2, 0.7]), pd.DataFrame({"x": [0, 0]}), np.array([1, 1]))


# --- The tracked run -------------------------------------------------------------------------
@pytest.mark.mlflow
def test_train_logs_params_inputs_metrics_plots_and_model(settings: Settings) -> None:
    result = train(synthetic_set(), SMALL, settings)

    assert result.version == 1
    assert (result.train_rows, result.holdout_rows) == (320, 80)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    run = client.get_run(result.run_id)
    params, tags = run.data.params, run.data.tags
    assert params["table_versions"] == '{"gold.customer_profile_features": 5, "gold.labels": 3}'
    assert params["feature_service"] == "credit_risk_v1"
    assert tags["lakehouse.input.gold.labels"] == "3"
    assert tags["lakehouse.input.gold.customer_profile_features"] == "5"
    assert params["n_estimators"] == "10" and params["model_type"] == "random_forest"
    assert params["holdout_start"] == "2026-02-10 00:00:00"  # row 320 at 3-hour steps
    assert {k: run.data.metrics[k] for k in result.metrics} == result.metrics
    assert result.metrics["roc_auc"] > 0.7
    assert tags["lakehouse.gate_verdict"] == "promoted"
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert artifacts == {
        "plots/roc_curve.png",
        "plots/pr_curve.png",
        "plots/confusion_matrix.png",
        "plots/calibration.png",
        "plots/feature_importance.png",
    }
    assert run.inputs is not None
    inputs = run.inputs.dataset_inputs
    contexts = sorted(t.value for d in inputs for t in d.tags if t.key == "mlflow.data.context")
    assert contexts == ["evaluation", "training"]

    info = mlflow.models.get_model_info(f"models:/{settings.model_name}/1")
    assert info.signature is not None
    assert info.signature.inputs.input_names() == [
        "loan_amount",
        "term_months",
        "age",
        "annual_income",
        "employment_years",
        "credit_score",
        "txn_count_7d",
        "txn_amount_sum_30d",
        "gambling_share_30d",
        "online_share_30d",
        "purpose",
        "home_ownership",
        "region",
    ]
    assert info.run_id == result.run_id
    # Artifacts stay under the settings' home, not the working directory.
    assert Path(settings.mlflow_dir / "artifacts").is_dir()


def test_a_gate_that_fails_withdraws_the_version_it_was_judging(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No unjudged version is left behind: the next training finds none to promote by mistake."""
    import lakehouse.models.training as training

    def lost(*args: object, **kwargs: object) -> None:
        raise ConnectionError("the tracking server went away")

    monkeypatch.setattr(training, "run_gate", lost)
    with pytest.raises(ConnectionError):
        train(synthetic_set(), SMALL, settings)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    assert client.search_model_versions(f"name = '{settings.model_name}'") == []
    monkeypatch.undo()
    assert train(synthetic_set(), SMALL, settings).decision.verdict == "promoted"  # type: ignore[union-attr]


def test_train_refuses_a_holdout_with_one_class(settings: Settings) -> None:
    frame = synthetic_frame(100)
    frame.loc[frame.index[-20:], "defaulted"] = 0
    with pytest.raises(ValueError, match="the holdout needs both classes"):
        train(synthetic_set(frame), SMALL, settings)


# --- Reproduction ----------------------------------------------------------------------------
TRAINING_TABLE = "gold.training_frame"


def test_reproduce_retrains_from_the_recorded_delta_versions(
    spark: SparkSession, settings: Settings, catalog: TableCatalog
) -> None:
    # overwrite() creates the empty table (version 0), then writes the data (version 1).
    overwrite(spark, catalog, TRAINING_TABLE, spark.createDataFrame(synthetic_frame(seed=7)))
    calls: list[dict[str, int] | None] = []

    def build(
        spark: SparkSession,
        settings: Settings,
        catalog: TableCatalog,
        table_versions: dict[str, int] | None = None,
    ) -> SyntheticTrainingSet:
        calls.append(table_versions)
        version = (table_versions or {}).get(TRAINING_TABLE)
        if version is None:
            version = catalog.version(spark, TRAINING_TABLE)
        frame = catalog.read(spark, TRAINING_TABLE, version=version).toPandas()
        return SyntheticTrainingSet(frame, list(FEATURES), {TRAINING_TABLE: version})

    original = train(build(spark, settings, catalog), SMALL, settings)
    # The table moves on: another day of data replaces it.
    overwrite(spark, catalog, TRAINING_TABLE, spark.createDataFrame(synthetic_frame(seed=8)))
    assert catalog.version(spark, TRAINING_TABLE) == 2

    again = reproduce(original.run_id, spark, settings, catalog, build=build)

    assert original.table_versions == {TRAINING_TABLE: 1}
    assert calls[-1] == {TRAINING_TABLE: 1}
    assert again.table_versions == {TRAINING_TABLE: 1}
    assert again.metrics == original.metrics
    assert again.version is None  # a reproduction registers nothing
    run = MlflowClient(tracking_uri=settings.tracking_uri).get_run(again.run_id)
    assert run.data.tags["lakehouse.reproduces"] == original.run_id
    assert (
        run.data.params["data_digest"]
        == (
            MlflowClient(tracking_uri=settings.tracking_uri)
            .get_run(original.run_id)
            .data.params["data_digest"]
        )
    )


def never_build(*args: object, **kwargs: object) -> SyntheticTrainingSet:
    raise AssertionError("the training set must not be built")


def test_reproduce_rejects_a_run_without_recorded_inputs(
    spark: SparkSession, settings: Settings, catalog: TableCatalog
) -> None:
    connect(settings)
    with mlflow.start_run() as run:
        mlflow.log_param("n_estimators", "5")
    with pytest.raises(ValueError, match="not logged by lakehouse training"):
        reproduce(run.info.run_id, spark, settings, catalog, build=never_build)
    with pytest.raises(ValueError, match="no MLflow run 'f00' in sqlite:"):
        reproduce("f00", spark, settings, catalog, build=never_build)


# --- The CLI ---------------------------------------------------------------------------------
def test_env_prints_export_lines(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAKEHOUSE_HOME", str(settings.home))
    monkeypatch.setenv("LAKEHOUSE_PROFILE", "local")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    assert cli_main(["env"]) == 0
    db = f"sqlite:///{settings.home}/mlflow/mlflow.db"
    lines = capsys.readouterr().out.splitlines()
    # The platform's start-up folder on PYTHONPATH is lakehouse.models.tracking's to check.
    assert [line for line in lines if not line.startswith("export PYTHONPATH=")] == [
        f"export LAKEHOUSE_HOME={settings.home}",
        "export LAKEHOUSE_PROFILE=local",
        f"export MLFLOW_TRACKING_URI={db}",
        f"export MLFLOW_REGISTRY_URI={db}",
        "export MLFLOW_EXPERIMENT_NAME=credit_risk_model",
        "export MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--model-type", "svm"], "invalid choice: 'svm'"),
        (["train", "--n-estimators", "0"], "must be a positive integer"),
        (["train", "--holdout-fraction", "1"], "must be between 0 and 1"),
        (["train", "--gate-tolerance", "-1"], "must be >= 0"),
        (["train", "--gate-metric", "mse"], "invalid choice: 'mse'"),
        (["train", "--sweep-grid"], "expected one argument"),
        (["train", "--reproduce", "abc", "--sweep"], "not allowed with argument --reproduce"),
        (["model", "promote", "one"], "invalid int value: 'one'"),
    ],
)
def test_bad_training_flags_print_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and message in err


def test_training_summary_lines() -> None:
    decision = SimpleNamespace(verdict="promoted", reason="roc_auc 0.8000 meets the floor")
    result = SimpleNamespace(
        run_id="abc",
        version=3,
        train_rows=320,
        holdout_rows=80,
        table_versions={"gold.labels": 3, "gold.customer_profile_features": 5},
        metrics={"roc_auc": 0.8, "log_loss": 0.41234},
        decision=decision,
    )
    settings = SimpleNamespace(model_name="credit_risk_model")
    assert summary_lines(result, settings) == [  # type: ignore[arg-type]
        "run abc: credit_risk_model version 3",
        "rows: 320 training, 80 holdout",
        'inputs: {"gold.customer_profile_features": 5, "gold.labels": 3}',
        "  roc_auc    0.8000",
        "  log_loss   0.4123",
        "gate: promoted (roc_auc 0.8000 meets the floor)",
    ]
    reproduction = SimpleNamespace(**{**vars(result), "version": None, "decision": None})
    lines = summary_lines(reproduction, settings, reproduced="f00")  # type: ignore[arg-type]
    assert lines[0] == "reproduced run f00 as run abc"
    assert not any(line.startswith("gate:") for line in lines)


# --- A real tracking server ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server not ready at {url} after {timeout} s")


@pytest.mark.service
def test_training_against_a_real_mlflow_server(settings: Settings, tmp_path: Path) -> None:
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    log_file = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--default-artifact-root",
            str(tmp_path / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_ready(f"{uri}/health", process, timeout=120)
        remote = replace(settings, mlflow_tracking_uri=uri, mlflow_registry_uri=None)

        result = train(synthetic_set(), SMALL, remote)

        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        run = client.get_run(result.run_id)
        assert run.data.tags["lakehouse.input.gold.labels"] == "3"
        assert run.data.metrics["roc_auc"] == result.metrics["roc_auc"]
        versions = client.search_model_versions(f"name = '{settings.model_name}'")
        assert [(v.version, v.run_id) for v in versions] == [("1", result.run_id)]
        champion = client.get_model_version_by_alias(settings.model_name, "champion")
        assert champion.version == "1"
        assert not (settings.mlflow_dir / "mlflow.db").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log_file.close()
