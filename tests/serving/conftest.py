"""A registry of small models with the platform's signature, and serving processes on it."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lakehouse.models.config import REQUEST_COLUMNS, TrainConfig
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.serving.process import ServerProcess

#: Inputs of the test models: the application's own fields, then stored features.
NUMERIC = ["loan_amount", "term_months", "age", "annual_income", "credit_score", "txn_count_30d"]
CATEGORICAL = ["purpose", "home_ownership"]
COLUMNS = [*REQUEST_COLUMNS, *[c for c in [*NUMERIC, *CATEGORICAL] if c not in REQUEST_COLUMNS]]
MODEL = "credit_risk_model"


def training_frame(seed: int, n: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    """Plausible applications with their features, and a default label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "loan_amount": rng.uniform(1000, 30000, n),
            "term_months": rng.choice([12.0, 24.0, 36.0, 60.0], n),
            "purpose": rng.choice(["CAR", "EDUCATION", "HOME_IMPROVEMENT", "OTHER"], n).astype(
                object
            ),
            "age": rng.uniform(20, 70, n),
            "annual_income": rng.uniform(15000, 120000, n),
            "credit_score": rng.uniform(300, 850, n),
            "txn_count_30d": rng.integers(0, 40, n).astype("float64"),
            "home_ownership": rng.choice(["RENT", "OWN", "MORTGAGE"], n).astype(object),
        }
    )[COLUMNS]
    risk = frame["loan_amount"] / 30000 - (frame["credit_score"] - 575) / 275
    y = (risk + rng.normal(0, 0.3, n) > 0).astype("int64").to_numpy()
    return frame, y


def request_rows(n: int, seed: int = 99) -> pd.DataFrame:
    """Rows to send, some with missing values (which the imputing models take)."""
    frame, _ = training_frame(seed, n)
    frame.loc[frame.index[::5], "age"] = np.nan
    frame.loc[frame.index[::7], "home_ownership"] = None
    return frame


def register(settings: Settings, seed: int, strict: bool = False) -> int:
    """Fit and register a version; the platform's pipeline (imputing), or without imputation."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from lakehouse.models.tracking import connect
    from lakehouse.models.training import build_pipeline

    connect(settings)
    X, y = training_frame(seed)
    if strict:  # no imputer: a missing value breaks it
        X = X[NUMERIC]
        model = Pipeline(
            [("scale", StandardScaler()), ("classifier", LogisticRegression(max_iter=200))]
        ).fit(X, y)
    else:
        config = TrainConfig(n_estimators=15, max_depth=4, seed=seed)
        model = build_pipeline(config, NUMERIC, CATEGORICAL).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signature = infer_signature(X, model.predict_proba(X.head(5)))
        with mlflow.start_run():
            mlflow.set_tag("lakehouse.feature_service", "credit_risk_v1")
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=signature,
                pyfunc_predict_fn="predict_proba",
                serialization_format="cloudpickle",
                pip_requirements=["scikit-learn", "cloudpickle"],
                registered_model_name=settings.model_name,
            )
    return int(info.registered_model_version)


def set_alias(settings: Settings, alias: str, version: int) -> None:
    from lakehouse.models.tracking import mlflow_client

    mlflow_client(settings).set_registered_model_alias(settings.model_name, alias, str(version))


def expected_scores(settings: Settings, version: int, rows: pd.DataFrame) -> list[float]:
    """What batch scoring computes: 1 - p0 of the pyfunc's output."""
    import mlflow.pyfunc

    from lakehouse.models.tracking import mlflow_client

    mlflow_client(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{version}")
    output = np.asarray(model.predict(rows))
    return (1.0 - output[:, 0]).tolist()


@dataclass
class Registry:
    settings: Settings
    env: dict[str, str]
    v1: int
    v2: int
    strict: int


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A temporary MLflow store with versions 1, 2 (imputing; champion, challenger) and a
    strict version (no imputation), and a platform home for the module's server."""
    home = tmp_path_factory.mktemp("serving-home")
    os.environ.pop("LAKEHOUSE_SERVING_TOKEN", None)
    env = {
        "LAKEHOUSE_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "MLFLOW_REGISTRY_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
        "LAKEHOUSE_SERVING_ALIAS_POLL_SECONDS": "0.2",
        "LAKEHOUSE_SERVING_SPOOL_ROLL_SECONDS": "0.5",
    }
    settings = load_settings("local", env=env)
    v1 = register(settings, 1)
    v2 = register(settings, 2)
    strict = register(settings, 3, strict=True)
    set_alias(settings, "champion", v1)
    set_alias(settings, "challenger", v2)
    return Registry(settings, env, v1, v2, strict)


def start_server(env: dict[str, str], log_dir: Path, **extra: str) -> ServerProcess:
    """``lakehouse serve`` on a free port with ``env`` (and ``extra``), started."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{len(list(log_dir.glob('server-*.log')))}.log"
    return ServerProcess(env={**env, **extra}, log_path=log_path).start()


def own_home(registry: Registry, home: Path) -> dict[str, str]:
    """The registry's environment with a platform home of its own (endpoints, spool)."""
    return {**registry.env, "LAKEHOUSE_HOME": str(home)}


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One serving process on the registry, for the module."""
    process = start_server(
        own_home(registry, tmp_path_factory.mktemp("server-home")),
        tmp_path_factory.mktemp("logs"),
        LAKEHOUSE_SERVING_MAX_BODY_BYTES="200000",
    )
    yield process
    process.stop()
