"""Batch and streaming scoring into gold.predictions, on a real MLflow registry and Delta.

Each test registers a small scikit-learn pipeline in an MLflow SQLite store under its own
folder, writes small gold feature tables and ``silver.loan_applications`` by hand, and scores
with :func:`pit_features`: a point-in-time join over the gold tables in Spark (the latest
feature row at or before the application time), which stands in for Feast.
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import skops.io
from mlflow import MlflowClient
from mlflow.models import infer_signature
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from lakehouse.cli import main
from lakehouse.medallion.contracts import (
    GOLD_CUSTOMER_PROFILE_SCHEMA,
    GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
    GOLD_LABELS_SCHEMA,
    SILVER_SCHEMAS,
    TRANSACTION_WINDOWS,
)
from lakehouse.models.tracking import connect
from lakehouse.models.training import model_pip_requirements
from lakehouse.platform.catalog import (
    GOLD_CUSTOMER_PROFILE,
    GOLD_CUSTOMER_TRANSACTIONS,
    GOLD_LABELS,
    GOLD_PREDICTIONS,
    SILVER_LOAN_APPLICATIONS,
    TableCatalog,
)
from lakehouse.platform.settings import Settings
from lakehouse.scoring.batch import score_batch, select_applications
from lakehouse.scoring.decisions import DecisionThresholds
from lakehouse.scoring.predictions import (
    PREDICTIONS_SCHEMA,
    ModelCache,
    prediction_outcomes,
    score_applications,
    write_predictions,
)
from lakehouse.scoring.resolution import parse_model_uri, resolve_model
from lakehouse.scoring.stream import start_scoring_stream
from tests.conftest import copy_tables, written_once

REPO = Path(__file__).resolve().parents[2]
FEATURES_SPEC = "tests.scoring.test_scoring:pit_features"
NUMERIC = [
    "loan_amount",
    "term_months",
    "age",
    "annual_income",
    "credit_score",
    "txn_count_30d",
    "txn_amount_sum_30d",
]
CATEGORICAL = ["purpose", "home_ownership"]
FEATURE_VERSIONS = {GOLD_CUSTOMER_PROFILE: 0, GOLD_CUSTOMER_TRANSACTIONS: 0}
TIMEOUT = 300


def ts(text: str) -> datetime:
    """A UTC timestamp from ``YYYY-MM-DD[THH:MM]``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- The point-in-time feature provider (Feast's role in these tests) -----------------------
def _feature_columns(schema: Any) -> list[str]:
    return [
        f.name
        for f in schema.fields
        if f.name not in ("customer_id", "event_timestamp", "created_at")
    ]


def pit_features(spark: SparkSession, settings: Settings, entity_df: DataFrame) -> DataFrame:
    """``entity_df`` with, per gold table, the latest feature row at or before its event time."""
    catalog = TableCatalog(settings.tables_root)
    keys = entity_df.select("customer_id", "event_timestamp").distinct()
    out = entity_df
    for table, schema in (
        (GOLD_CUSTOMER_PROFILE, GOLD_CUSTOMER_PROFILE_SCHEMA),
        (GOLD_CUSTOMER_TRANSACTIONS, GOLD_CUSTOMER_TRANSACTIONS_SCHEMA),
    ):
        columns = _feature_columns(schema)
        feats = catalog.read(spark, table).select(
            F.col("customer_id").alias("f_customer_id"),
            F.col("event_timestamp").alias("f_ts"),
            F.col("created_at").alias("f_created"),
            *columns,
        )
        candidates = keys.join(
            feats,
            (keys["customer_id"] == feats["f_customer_id"])
            & (feats["f_ts"] <= keys["event_timestamp"]),
        )
        latest = Window.partitionBy("customer_id", "event_timestamp").orderBy(
            F.col("f_ts").desc(), F.col("f_created").desc()
        )
        picked = (
            candidates.withColumn("_rank", F.row_number().over(latest))
            .where("_rank = 1")
            .select("customer_id", "event_timestamp", *columns)
        )
        out = out.join(picked, ["customer_id", "event_timestamp"], "left")
    return out


# --- Inline world ----------------------------------------------------------------------------
CREATED = ts("2026-01-20")

PROFILES = [
    # customer, event time, age, income, employment years, credit score, home, region
    ("C1", "2026-01-01", 30, 50000.0, 2.0, 700, "RENT", "NORTH"),
    ("C1", "2026-01-10", 30, 52000.0, 2.5, 640, "RENT", "NORTH"),
    ("C2", "2026-01-01", 45, 90000.0, 10.0, 780, "OWN", "SOUTH"),
    ("C3", "2026-01-05", 22, 20000.0, 0.5, 560, "RENT", "EAST"),
]

TRANSACTIONS = [
    # customer, event time, txn_count_30d, txn_amount_sum_30d
    ("C1", "2026-01-02", 3, 300.0),
    ("C1", "2026-01-09", 8, 1200.0),
    ("C2", "2026-01-03", 1, 50.0),
    ("C4", "2026-01-06", 20, 5000.0),
]

APPLICATIONS = [
    ("A1", "C1", "2026-01-05T12:00", 10000.0, 36, "CAR"),
    ("A2", "C1", "2026-01-10T00:00", 5000.0, 12, "EDUCATION"),
    ("A3", "C2", "2026-01-02T08:00", 20000.0, 60, "HOME_IMPROVEMENT"),
    ("A4", "C3", "2026-01-04T00:00", 3000.0, 24, "OTHER"),
    ("A5", "C4", "2026-01-07T00:00", 15000.0, 48, "DEBT_CONSOLIDATION"),
    ("A6", "C3", "2026-01-06T00:00", 7000.0, 36, None),
]

#: The model inputs of each application, worked out by hand from the rows above (point in
#: time: a row stamped exactly at the application time counts; later rows do not).
EXPECTED_INPUTS = pd.DataFrame(
    [
        # loan, term, age, income, score, n30, sum30, purpose, home
        ("A1", 10000.0, 36.0, 30.0, 50000.0, 700.0, 3.0, 300.0, "CAR", "RENT"),
        ("A2", 5000.0, 12.0, 30.0, 52000.0, 640.0, 8.0, 1200.0, "EDUCATION", "RENT"),
        ("A3", 20000.0, 60.0, 45.0, 90000.0, 780.0, math.nan, math.nan, "HOME_IMPROVEMENT", "OWN"),
        ("A4", 3000.0, 24.0, math.nan, math.nan, math.nan, math.nan, math.nan, "OTHER", None),
        (
            "A5",
            15000.0,
            48.0,
            math.nan,
            math.nan,
            math.nan,
            20.0,
            5000.0,
            "DEBT_CONSOLIDATION",
            None,
        ),
        ("A6", 7000.0, 36.0, 22.0, 20000.0, 560.0, math.nan, math.nan, None, "RENT"),
    ],
    columns=["application_id", *NUMERIC, *CATEGORICAL],
)


def _profile_rows() -> list[tuple[Any, ...]]:
    return [
        (c, ts(t), age, inc, emp, score, home, region, CREATED)
        for c, t, age, inc, emp, score, home, region in PROFILES
    ]


def _transaction_rows() -> list[tuple[Any, ...]]:
    rows = []
    for customer, t, n30, sum30 in TRANSACTIONS:
        values: list[Any] = [customer, ts(t)]
        for days in TRANSACTION_WINDOWS:
            n = n30 if days == 30 else n30 * days // 30
            total = sum30 if days == 30 else sum30 * days / 30
            values += [n, total, total / n if n else None]
        values += [sum30, 0.0, 0.5, CREATED]
        rows.append(tuple(values))
    return rows


def application_rows(apps: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Silver rows of ``(id, customer, applied_at, amount, term, purpose)`` tuples."""
    return [
        (a, c, ts(t), amt, term, purpose, "landing/x.json", CREATED)
        for a, c, t, amt, term, purpose in apps
    ]


def append_applications(
    spark: SparkSession, catalog: TableCatalog, apps: list[tuple[Any, ...]]
) -> None:
    """Append applications to ``silver.loan_applications`` (as the pipeline would)."""
    frame = spark.createDataFrame(application_rows(apps), SILVER_SCHEMAS["loan_applications"])
    frame.write.format("delta").mode("append").save(catalog.path(SILVER_LOAN_APPLICATIONS))


def write_world(spark: SparkSession, catalog: TableCatalog) -> None:
    """The gold feature tables and silver applications above, each at Delta version 0."""
    for name, rows, schema in (
        (GOLD_CUSTOMER_PROFILE, _profile_rows(), GOLD_CUSTOMER_PROFILE_SCHEMA),
        (GOLD_CUSTOMER_TRANSACTIONS, _transaction_rows(), GOLD_CUSTOMER_TRANSACTIONS_SCHEMA),
        (
            SILVER_LOAN_APPLICATIONS,
            application_rows(APPLICATIONS),
            SILVER_SCHEMAS["loan_applications"],
        ),
    ):
        spark.createDataFrame(rows, schema).write.format("delta").save(catalog.path(name))


# --- A real registered model -----------------------------------------------------------------
def _training_frame(seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 200
    frame = pd.DataFrame(
        {
            "loan_amount": rng.uniform(1000, 30000, n),
            "term_months": rng.choice([12.0, 24.0, 36.0, 48.0, 60.0], n),
            "age": rng.uniform(20, 70, n),
            "annual_income": rng.uniform(15000, 120000, n),
            "credit_score": rng.uniform(300, 850, n),
            "txn_count_30d": rng.integers(0, 40, n).astype("float64"),
            "txn_amount_sum_30d": rng.uniform(0, 8000, n),
            "purpose": rng.choice(["CAR", "EDUCATION", "HOME_IMPROVEMENT", "OTHER"], n).astype(
                object
            ),
            "home_ownership": rng.choice(["RENT", "OWN", "MORTGAGE"], n).astype(object),
        }
    )
    risk = frame["loan_amount"] / 30000 - (frame["credit_score"] - 575) / 275
    y = (risk + rng.normal(0, 0.3, n) > 0).astype("int64").to_numpy()
    return frame, y


def register_model(settings: Settings, seed: int, c: float, alias: str | None = "champion") -> int:
    """Fit a small pipeline, log it like training does, register it; return its version."""
    connect(settings)
    X, y = _training_frame(seed)
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    model = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("numeric", numeric, NUMERIC),
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                    ]
                ),
            ),
            ("classifier", LogisticRegression(C=c, max_iter=500)),
        ]
    ).fit(X, y)
    signature = infer_signature(X.head(5), model.predict_proba(X.head(5)))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=list(skops.io.get_untrusted_types(data=skops.io.dumps(model))),
            registered_model_name=settings.model_name,
            pip_requirements=model_pip_requirements(),
        )
    version = int(info.registered_model_version)
    if alias:
        set_alias(settings, alias, version)
    return version


def set_alias(settings: Settings, alias: str, version: int) -> None:
    """Point ``alias`` at ``version``."""
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    client.set_registered_model_alias(settings.model_name, alias, str(version))


def direct_scores(settings: Settings, version: int, inputs: pd.DataFrame) -> dict[str, float]:
    """Probability of class 1 from ``mlflow.pyfunc.load_model(...).predict`` in pandas."""
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{version}")
    proba = np.asarray(model.predict(inputs[[*NUMERIC, *CATEGORICAL]]))
    return dict(zip(inputs["application_id"], proba[:, 1].tolist(), strict=True))


@dataclass
class World:
    settings: Settings
    catalog: TableCatalog
    version: int


WORLD_TABLES = [GOLD_CUSTOMER_PROFILE, GOLD_CUSTOMER_TRANSACTIONS, SILVER_LOAN_APPLICATIONS]


@pytest.fixture(scope="module")
def world_tables(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> TableCatalog:
    """:func:`write_world`'s tables, written once for the module (tests get copies)."""
    return written_once(tmp_path_factory, "scoring-tables", lambda c: write_world(spark, c))


@pytest.fixture
def world(settings: Settings, catalog: TableCatalog, world_tables: TableCatalog) -> World:
    """Gold features, silver applications and a champion model version 1."""
    copy_tables(world_tables, catalog, WORLD_TABLES)
    return World(settings, catalog, register_model(settings, seed=1, c=1.0))


def predictions(spark: SparkSession, catalog: TableCatalog) -> pd.DataFrame:
    """``gold.predictions`` as pandas, ordered by version then application."""
    frame: pd.DataFrame = catalog.read(spark, GOLD_PREDICTIONS).toPandas()
    return frame.sort_values(["model_version", "application_id"]).reset_index(drop=True)


def expected_decision(score: float, approve_below: float = 0.2, decline_at: float = 0.5) -> str:
    if score < approve_below:
        return "approve"
    return "decline" if score >= decline_at else "review"


# --- Batch -----------------------------------------------------------------------------------
def test_batch_scores_equal_direct_pyfunc_prediction(spark: SparkSession, world: World) -> None:
    report = score_batch(spark, world.settings, world.catalog, features_fn=pit_features)
    assert (report.model_version, report.rows_scored, report.rows_inserted) == (1, 6, 6)
    assert report.feature_versions == FEATURE_VERSIONS

    got = predictions(spark, world.catalog)
    expected = direct_scores(world.settings, 1, EXPECTED_INPUTS)
    assert list(got["application_id"]) == ["A1", "A2", "A3", "A4", "A5", "A6"]
    for row in got.itertuples():
        assert row.score == pytest.approx(expected[row.application_id], abs=1e-9, rel=0)
        assert row.decision == expected_decision(expected[row.application_id])
    assert set(got["model_name"]) == {"credit_risk_model"}
    assert set(got["model_version"]) == {1}
    assert set(got["scoring_mode"]) == {"batch"}
    assert set(got["customer_id"]) == {"C1", "C2", "C3", "C4"}
    run_id = (
        MlflowClient(world.settings.tracking_uri).get_model_version("credit_risk_model", "1").run_id
    )
    assert set(got["run_id"]) == {run_id}
    assert {json.loads(v) == FEATURE_VERSIONS for v in got["feature_versions"]} == {True}
    assert got["scored_at"].nunique() == 1
    schema = world.catalog.read(spark, GOLD_PREDICTIONS).schema
    assert [(f.name, f.dataType) for f in schema] == [
        (f.name, f.dataType) for f in PREDICTIONS_SCHEMA
    ]


def test_batch_rerun_adds_no_row(spark: SparkSession, world: World) -> None:
    first = score_batch(spark, world.settings, world.catalog, features_fn=pit_features)
    before = predictions(spark, world.catalog)
    second = score_batch(spark, world.settings, world.catalog, features_fn=pit_features)
    assert (first.rows_inserted, second.rows_scored, second.rows_inserted) == (6, 0, 0)
    assertDataFrameEqual(
        spark.createDataFrame(predictions(spark, world.catalog)), spark.createDataFrame(before)
    )


def test_merge_of_the_same_predictions_inserts_nothing(spark: SparkSession, world: World) -> None:
    # The MERGE itself is idempotent, without the "not yet scored" selection in front of it.
    model = resolve_model(world.settings)
    apps = select_applications(spark, world.catalog)
    cache = ModelCache()
    scored = score_applications(
        spark, world.settings, apps, model, cache=cache, features_fn=pit_features
    ).localCheckpoint()
    assert write_predictions(spark, world.catalog, scored)["numTargetRowsInserted"] == 6
    again = write_predictions(spark, world.catalog, scored)
    assert again.get("numTargetRowsInserted", 0) == 0
    assert world.catalog.read(spark, GOLD_PREDICTIONS).count() == 6
    assert len(cache) == 1


@pytest.mark.parametrize(
    ("start", "end", "ids"),
    [
        ("2026-01-05T00:00", "2026-01-07T00:00", ["A1", "A6"]),
        ("2026-01-07T00:00", None, ["A2", "A5"]),  # start is inclusive
        (None, "2026-01-04T00:00", ["A3"]),  # end is exclusive
        (None, None, ["A1", "A2", "A3", "A4", "A5", "A6"]),
    ],
)
def test_select_applications_by_time_range(
    spark: SparkSession, catalog: TableCatalog, start: str | None, end: str | None, ids: list[str]
) -> None:
    append_applications(spark, catalog, APPLICATIONS)
    selected = select_applications(
        spark, catalog, start=ts(start) if start else None, end=ts(end) if end else None
    )
    assert sorted(r["application_id"] for r in selected.collect()) == ids


def test_batch_time_range_scores_only_that_range(spark: SparkSession, world: World) -> None:
    report = score_batch(
        spark,
        world.settings,
        world.catalog,
        features_fn=pit_features,
        start=ts("2026-01-05T00:00"),
        end=ts("2026-01-07T00:00"),
    )
    assert report.rows_inserted == 2
    assert list(predictions(spark, world.catalog)["application_id"]) == ["A1", "A6"]
    # The rest is still "not yet scored by version 1".
    rest = select_applications(spark, world.catalog, unscored_by=1)
    assert sorted(r["application_id"] for r in rest.collect()) == ["A2", "A3", "A4", "A5"]


def test_batch_rejects_an_empty_range(
    spark: SparkSession, settings: Settings, catalog: TableCatalog
) -> None:
    # Before anything is read: there is no model and no table here.
    with pytest.raises(ValueError, match=r"start \(2026-01-05.*\) must be before end"):
        score_batch(
            spark,
            settings,
            catalog,
            features_fn=pit_features,
            start=ts("2026-01-05"),
            end=ts("2026-01-05"),
        )


def test_new_champion_adds_its_own_rows(spark: SparkSession, world: World) -> None:
    score_batch(spark, world.settings, world.catalog, features_fn=pit_features)
    v2 = register_model(world.settings, seed=2, c=0.05)
    report = score_batch(spark, world.settings, world.catalog, features_fn=pit_features)
    assert (v2, report.model_version, report.rows_inserted) == (2, 2, 6)
    got = predictions(spark, world.catalog)
    assert list(got["model_version"]) == [1] * 6 + [2] * 6
    expected = direct_scores(world.settings, 2, EXPECTED_INPUTS)
    for row in got[got["model_version"] == 2].itertuples():
        assert row.score == pytest.approx(expected[row.application_id], abs=1e-9, rel=0)


def test_explicit_version_uri_and_thresholds(spark: SparkSession, world: World) -> None:
    register_model(world.settings, seed=2, c=0.05)  # v2 becomes champion; score v1 explicitly
    thresholds = DecisionThresholds(approve_below=0.0, decline_at=1.0)
    report = score_batch(
        spark,
        world.settings,
        world.catalog,
        model_uri="models:/credit_risk_model/1",
        features_fn=pit_features,
        thresholds=thresholds,
    )
    got = predictions(spark, world.catalog)
    assert report.model_version == 1
    assert set(got["model_version"]) == {1}
    assert set(got["decision"]) == {"review"}


def test_missing_champion_is_a_clear_error(
    spark: SparkSession, settings: Settings, catalog: TableCatalog
) -> None:
    write_world(spark, catalog)
    register_model(settings, seed=1, c=1.0, alias=None)
    with pytest.raises(LookupError, match="credit_risk_model' has no alias 'champion'"):
        score_batch(spark, settings, catalog, features_fn=pit_features)


def test_missing_silver_table_is_a_clear_error(
    spark: SparkSession, settings: Settings, catalog: TableCatalog
) -> None:
    register_model(settings, seed=1, c=1.0)
    with pytest.raises(FileNotFoundError, match=r"no table silver\.loan_applications"):
        score_batch(spark, settings, catalog, features_fn=pit_features)


def test_features_lacking_a_model_input_are_rejected(spark: SparkSession, world: World) -> None:
    def no_transactions(spark: SparkSession, settings: Settings, entity_df: DataFrame) -> DataFrame:
        return pit_features(spark, settings, entity_df).drop("txn_count_30d")

    with pytest.raises(ValueError, match="features do not provide: txn_count_30d"):
        score_batch(spark, world.settings, world.catalog, features_fn=no_transactions)


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("models:/credit_risk_model@champion", ("credit_risk_model", "champion", None)),
        ("models:/credit_risk_model/7", ("credit_risk_model", None, 7)),
    ],
)
def test_parse_model_uri(uri: str, parsed: tuple[str, str | None, int | None]) -> None:
    assert parse_model_uri(uri) == parsed


@pytest.mark.parametrize(
    "uri", ["runs:/abc/model", "models:/credit_risk_model", "models:/m/latest", "models:/@x", ""]
)
def test_parse_model_uri_rejects_non_registry_uris(uri: str) -> None:
    with pytest.raises(ValueError, match="model URI must be models:/<name>@<alias>"):
        parse_model_uri(uri)


@pytest.mark.parametrize(
    ("score", "decision"),
    [
        (0.0, "approve"),
        (0.1999, "approve"),
        (0.2, "review"),
        (0.4999, "review"),
        (0.5, "decline"),
        (1.0, "decline"),
        (None, "review"),
    ],
)
def test_decision_bands(spark: SparkSession, score: float | None, decision: str) -> None:
    frame = spark.createDataFrame([(score,)], "score double")
    got = frame.select(DecisionThresholds().decide(F.col("score")).alias("d")).first()
    assert got is not None and got["d"] == decision


@pytest.mark.parametrize(("approve_below", "decline_at"), [(0.6, 0.5), (-0.1, 0.5), (0.2, 1.5)])
def test_thresholds_must_be_ordered_probabilities(approve_below: float, decline_at: float) -> None:
    with pytest.raises(ValueError, match="0 <= approve_below <= decline_at <= 1"):
        DecisionThresholds(approve_below, decline_at)


# --- Outcomes --------------------------------------------------------------------------------
def test_prediction_outcomes_put_the_observed_outcome_beside_the_score(
    spark: SparkSession, world: World
) -> None:
    labels = [
        ("A1", "C1", ts("2026-01-05T12:00"), 10000.0, 36, "CAR", 0, ts("2026-03-01")),
        ("A3", "C2", ts("2026-01-02T08:00"), 20000.0, 60, "HOME_IMPROVEMENT", 1, ts("2026-03-05")),
    ]
    spark.createDataFrame(labels, GOLD_LABELS_SCHEMA).write.format("delta").save(
        world.catalog.path(GOLD_LABELS)
    )
    score_batch(spark, world.settings, world.catalog, features_fn=pit_features)
    scores = direct_scores(world.settings, 1, EXPECTED_INPUTS)
    outcomes = prediction_outcomes(spark, world.catalog)
    got = outcomes.select(
        "application_id", "model_version", "decision", "defaulted", "observed_at"
    ).orderBy("application_id")
    observed = {"A1": (0, datetime(2026, 3, 1)), "A3": (1, datetime(2026, 3, 5))}
    expected = [
        (a, 1, expected_decision(scores[a]), *observed.get(a, (None, None)))
        for a in ["A1", "A2", "A3", "A4", "A5", "A6"]
    ]
    assertDataFrameEqual(
        got,
        spark.createDataFrame(
            expected,
            "application_id string, model_version int, decision string, defaulted int, "
            "observed_at timestamp",
        ),
        checkRowOrder=True,
    )
    for row in outcomes.collect():
        assert row["score"] == pytest.approx(scores[row["application_id"]], abs=1e-9, rel=0)
    count = spark.sql("SELECT count(*) AS n FROM gold.prediction_outcomes").first()
    assert count is not None and count["n"] == 6


@pytest.mark.parametrize("present", [[], [GOLD_PREDICTIONS]])
def test_prediction_outcomes_need_both_tables(
    spark: SparkSession, catalog: TableCatalog, present: list[str]
) -> None:
    for name in present:
        spark.createDataFrame([], PREDICTIONS_SCHEMA).write.format("delta").save(catalog.path(name))
    missing = GOLD_LABELS if present else GOLD_PREDICTIONS
    with pytest.raises(FileNotFoundError, match=f"no table {missing.replace('.', '[.]')} at"):
        prediction_outcomes(spark, catalog)


# --- Streaming in process --------------------------------------------------------------------
def wait_for(
    condition: Callable[[], bool], what: str, timeout: float = TIMEOUT, job: Job | None = None
) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if job is not None and job.proc.poll() is not None:
            break
        time.sleep(0.5)
    log = "".join(job.log)[-6000:] if job is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{log}")


def version_counts(spark: SparkSession, catalog: TableCatalog) -> dict[int, int]:
    """Rows of gold.predictions per model version (empty before the table exists).

    Another process may create and write the table: this JVM's cached Delta logs are dropped
    first, so the read sees that process's commits.
    """
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    if not catalog.exists(spark, GOLD_PREDICTIONS):
        return {}
    try:
        rows = catalog.read(spark, GOLD_PREDICTIONS).groupBy("model_version").count().collect()
    except AnalysisException:  # the log folder exists, the first commit is not written yet
        return {}
    return {int(r["model_version"]): int(r["count"]) for r in rows}


def test_available_now_stream_scores_what_landed_and_stops(
    spark: SparkSession, world: World
) -> None:
    query = start_scoring_stream(
        spark, world.settings, world.catalog, available_now=True, features_fn=pit_features
    )
    query.awaitTermination(TIMEOUT)
    assert not query.isActive and query.exception() is None
    got = predictions(spark, world.catalog)
    expected = direct_scores(world.settings, 1, EXPECTED_INPUTS)
    assert list(got["application_id"]) == ["A1", "A2", "A3", "A4", "A5", "A6"]
    assert set(got["scoring_mode"]) == {"stream"}
    for row in got.itertuples():
        assert row.score == pytest.approx(expected[row.application_id], abs=1e-9, rel=0)
    assert (world.settings.checkpoints_dir / "scoring" / "commits").is_dir()


def test_processing_time_stream_follows_new_rows_and_the_champion_alias(
    spark: SparkSession, world: World
) -> None:
    query = start_scoring_stream(
        spark, world.settings, world.catalog, processing_time="1 second", features_fn=pit_features
    )
    try:
        wait_for(lambda: version_counts(spark, world.catalog) == {1: 6}, "the first 6 rows")
        append_applications(
            spark, world.catalog, [("A7", "C2", "2026-01-08T00:00", 9000.0, 24, "CAR")]
        )
        wait_for(lambda: version_counts(spark, world.catalog) == {1: 7}, "A7 scored by v1")
        register_model(world.settings, seed=2, c=0.05)  # moves the champion alias to v2
        append_applications(
            spark, world.catalog, [("A8", "C1", "2026-01-11T00:00", 4000.0, 12, "OTHER")]
        )
        wait_for(lambda: version_counts(spark, world.catalog) == {1: 7, 2: 1}, "A8 scored by v2")
        assert query.isActive and query.exception() is None
    finally:
        query.stop()
    got = predictions(spark, world.catalog)
    assert got[got["model_version"] == 2]["application_id"].tolist() == ["A8"]
    v2 = direct_scores(
        world.settings,
        2,
        pd.DataFrame(
            [("A8", 4000.0, 12.0, 30.0, 52000.0, 640.0, 8.0, 1200.0, "OTHER", "RENT")],
            columns=["application_id", *NUMERIC, *CATEGORICAL],
        ),
    )
    assert got.iloc[-1]["score"] == pytest.approx(v2["A8"], abs=1e-9, rel=0)


def test_stream_needs_exactly_one_trigger(
    spark: SparkSession, settings: Settings, catalog: TableCatalog
) -> None:
    with pytest.raises(ValueError, match="exactly one trigger"):
        start_scoring_stream(spark, settings, catalog)
    with pytest.raises(ValueError, match="exactly one trigger"):
        start_scoring_stream(spark, settings, catalog, available_now=True, processing_time="1 s")


# --- Streaming job as a process --------------------------------------------------------------
class Job:
    """``jobs/stream_score.py`` as a child process, its stderr read line by line."""

    def __init__(self, env: dict[str, str], *flags: str) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "jobs" / "stream_score.py"),
                "--features",
                FEATURES_SPEC,
                *flags,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: the JVM child can be killed with it
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def wait_line(self, text: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r}; stderr:\n{''.join(self.log)[-4000:]}")

    def kill_group(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.kill_group()


@pytest.fixture
def job_env(subprocess_env: dict[str, str]) -> dict[str, str]:
    """The child's environment: this test's home, and the repository importable (tests.*)."""
    return {**subprocess_env, "PYTHONPATH": str(REPO)}


@pytest.fixture
def jobs() -> Iterator[list[Job]]:
    """Every job started by a test, killed at the end if still running."""
    started: list[Job] = []
    yield started
    for job in started:
        job.ensure_dead()


def test_stream_job_scores_new_rows_and_stops_cleanly_on_sigterm(
    spark: SparkSession, world: World, job_env: dict[str, str], jobs: list[Job]
) -> None:
    job = Job(job_env, "--processing-time", "1 second")
    jobs.append(job)
    job.wait_line("scoring stream started")
    wait_for(lambda: version_counts(spark, world.catalog) == {1: 6}, "the first 6 rows", job=job)
    append_applications(spark, world.catalog, [("A7", "C2", "2026-01-08T00:00", 9000.0, 24, "CAR")])
    wait_for(lambda: version_counts(spark, world.catalog) == {1: 7}, "A7 scored", job=job)
    job.proc.send_signal(signal.SIGTERM)
    assert job.proc.wait(timeout=TIMEOUT) == 0, "".join(job.log)[-4000:]
    job.wait_line("scoring stream stopped", timeout=5)


def test_stream_job_killed_mid_batch_loses_and_doubles_nothing(
    spark: SparkSession, world: World, job_env: dict[str, str], jobs: list[Job]
) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    extra = [
        (f"B{i}", f"C{1 + i % 4}", f"2026-01-{10 + i:02d}T00:00", 1000.0 * i, 36, "CAR")
        for i in range(1, 3)
    ]
    job = Job(job_env, "--processing-time", "1 second")
    jobs.append(job)
    job.wait_line("scoring batch")
    time.sleep(rng.uniform(0.0, 2.0))  # somewhere in the batch, or just after it
    job.kill_group()
    append_applications(spark, world.catalog, [extra[0]])
    append_applications(spark, world.catalog, [extra[1]])
    # The next run picks up the killed one's checkpoint: here an available-now run of the same
    # stream in this process (the job's own available-now run is the same query; a new JVM
    # would only add its start-up to the test).
    version_counts(spark, world.catalog)  # drops the cached Delta logs
    query = start_scoring_stream(
        spark, world.settings, world.catalog, available_now=True, features_fn=pit_features
    )
    query.awaitTermination(TIMEOUT)
    assert not query.isActive and query.exception() is None, f"seed {seed}"

    got = world.catalog.read(spark, GOLD_PREDICTIONS)
    per_key = got.groupBy("application_id", "model_version").count()
    assert per_key.where("count > 1").count() == 0, f"seed {seed}: duplicated predictions"
    ids = sorted(r["application_id"] for r in got.select("application_id").collect())
    assert ids == ["A1", "A2", "A3", "A4", "A5", "A6", "B1", "B2"], f"seed {seed}"


def test_batch_job_scores_the_champions_applications(
    spark: SparkSession, world: World, job_env: dict[str, str]
) -> None:
    """The job in its own process (a re-run's no-op is checked in process, above)."""
    command = [sys.executable, str(REPO / "jobs" / "batch_score.py"), "--features", FEATURES_SPEC]
    done = subprocess.run(
        command, cwd=REPO, env=job_env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last == "credit_risk_model version 1: 6 scored, 6 new predictions"
    assert version_counts(spark, world.catalog) == {1: 6}


# --- CLI -------------------------------------------------------------------------------------
@pytest.mark.parametrize("action", ["batch", "stream"])
def test_score_commands_have_help(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["score", action, "--help"])
    assert exc.value.code == 0
    assert f"usage: lakehouse score {action}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["score", "batch", "--approve-below", "2"], "must be between 0 and 1"),
        (["score", "batch", "--start", "yesterday"], "not an ISO-8601 date or timestamp"),
        (["score", "stream", "--available-now", "--processing-time", "1 second"], "not allowed"),
    ],
)
def test_score_commands_reject_bad_flags(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and message in err


@pytest.mark.parametrize("job", ["batch_score.py", "stream_score.py"])
def test_jobs_answer_help(job: str) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "jobs" / job), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "--model-uri" in out.stdout
