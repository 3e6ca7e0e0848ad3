"""Code from a Databricks guide logs and loads scikit-learn models here as it does on Databricks.

After ``lakehouse.connect()``, and in a fresh process that has only the variables ``lakehouse env``
prints, ``mlflow.sklearn.log_model(model, "rf_model")`` saves with cloudpickle (MLflow's choice
on Databricks) instead of skops, which no longer trusts tree models. Real MLflow stores under
``tmp_path``; no JVM.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from lakehouse.models import serialization
from lakehouse.models.tracking import connect
from lakehouse.platform.settings import Settings

NUMERIC = ["income", "debt_ratio", "age"]
CATEGORICAL = ["purpose"]

# Logs runs and models to a real MLflow store: outside the unit tier.
pytestmark = pytest.mark.mlflow


def training_data(rows: int = 120) -> tuple[pd.DataFrame, np.ndarray]:
    """Mixed columns with missing values, and a label that depends on them."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "income": rng.normal(50_000, 15_000, rows),
            "debt_ratio": rng.uniform(0, 1, rows),
            "age": rng.integers(20, 70, rows).astype("float64"),
            "purpose": rng.choice(["car", "home", "education"], rows).astype(object),
        }
    )
    y = ((frame["debt_ratio"] > 0.5) ^ (frame["purpose"] == "car")).astype("int64").to_numpy()
    frame.loc[::9, "income"] = np.nan
    frame.loc[::11, "purpose"] = None
    return frame, y


def numeric_only(frame: pd.DataFrame) -> pd.DataFrame:
    """The numeric columns with their gaps filled, for a bare estimator."""
    return frame[NUMERIC].fillna(0.0)


def preprocessing() -> ColumnTransformer:
    """The platform's preprocessing: imputed numbers, imputed and one-hot-encoded categories."""
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("encode", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    return ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), NUMERIC),
            ("categorical", categorical, CATEGORICAL),
        ]
    )


#: What a user would train (name -> (estimator, whether it takes the mixed frame)).
GUIDE_MODELS: dict[str, tuple[Callable[[], Any], bool]] = {
    "random_forest": (lambda: RandomForestClassifier(n_estimators=100, random_state=0), False),
    "gradient_boosting": (lambda: GradientBoostingClassifier(random_state=0), False),
    "hist_gradient_boosting": (lambda: HistGradientBoostingClassifier(random_state=0), False),
    "logistic_regression": (lambda: LogisticRegression(max_iter=1000), False),
    "scaled_logistic_regression": (
        lambda: Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]),
        False,
    ),
    "forest_pipeline": (
        lambda: Pipeline(
            [
                ("preprocess", preprocessing()),
                ("classifier", RandomForestClassifier(n_estimators=50, random_state=0)),
            ]
        ),
        True,
    ),
    "hist_gradient_boosting_pipeline": (
        lambda: Pipeline(
            [
                ("preprocess", preprocessing()),
                ("classifier", HistGradientBoostingClassifier(max_iter=50, random_state=0)),
            ]
        ),
        True,
    ),
}


def flavor_conf(model_uri: str) -> dict[str, Any]:
    """The ``sklearn`` flavor of a logged model's ``MLmodel`` file."""
    local = mlflow.artifacts.download_artifacts(model_uri)
    mlmodel = yaml.safe_load((Path(local) / "MLmodel").read_text())
    flavor: dict[str, Any] = mlmodel["flavors"]["sklearn"]
    return flavor


def assert_loads_back(model: Any, model_uri: str, X: pd.DataFrame) -> None:
    """Both flavors load ``model_uri`` and predict what ``model`` predicts."""
    loaded = mlflow.sklearn.load_model(model_uri)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    np.testing.assert_array_equal(np.asarray(pyfunc.predict(X)), model.predict(X))


@pytest.mark.parametrize("kind", list(GUIDE_MODELS))
def test_guide_code_logs_and_loads_after_connect(settings: Settings, kind: str) -> None:
    connect(settings)
    assert serialization.is_applied(mlflow.sklearn)
    factory, mixed = GUIDE_MODELS[kind]
    frame, y_train = training_data()
    X_train = frame if mixed else numeric_only(frame)

    # The guide's code, unchanged.
    with mlflow.start_run():
        model = factory()
        model.fit(X_train, y_train)
        info = mlflow.sklearn.log_model(model, "rf_model")

    assert flavor_conf(info.model_uri)["serialization_format"] == "cloudpickle"
    assert_loads_back(model, info.model_uri, X_train)


@pytest.mark.parametrize("model_type", ["random_forest", "hist_gradient_boosting"])
def test_the_platforms_pipelines_log_with_the_default_too(
    settings: Settings, model_type: str
) -> None:
    from lakehouse.models.training import TrainConfig, build_pipeline

    connect(settings)
    frame, y_train = training_data()
    model = build_pipeline(
        TrainConfig(model_type=model_type, n_estimators=20), NUMERIC, CATEGORICAL
    )
    model.fit(frame, y_train)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name="guide_model")

    assert flavor_conf(info.model_uri)["serialization_format"] == "cloudpickle"
    assert_loads_back(model, info.model_uri, frame)
    assert_loads_back(model, "models:/guide_model/1", frame)


def test_a_call_that_names_the_format_or_skops_types_keeps_skops(settings: Settings) -> None:
    connect(settings)
    X_train, y_train = numeric_only(training_data()[0]), training_data()[1]
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X_train, y_train)
    with mlflow.start_run():
        # skops_trusted_types, as the platform's training passes them, means skops.
        trusted = mlflow.sklearn.log_model(
            forest, name="trusted", skops_trusted_types=["sklearn.tree._tree.Tree"]
        )
        pickled = mlflow.sklearn.log_model(forest, name="pickled", serialization_format="pickle")
        # An explicit skops without the trust list fails as MLflow makes it fail.
        with pytest.raises(MlflowException, match=r"sklearn\.tree\._tree\.Tree"):
            mlflow.sklearn.log_model(forest, name="untrusted", serialization_format="skops")

    conf = flavor_conf(trusted.model_uri)
    assert conf["serialization_format"] == "skops"
    assert conf["skops_trusted_types"] == ["sklearn.tree._tree.Tree"]
    assert flavor_conf(pickled.model_uri)["serialization_format"] == "pickle"
    assert_loads_back(forest, trusted.model_uri, X_train)
    assert_loads_back(forest, pickled.model_uri, X_train)


def test_save_model_takes_the_default_and_positional_arguments_keep_their_meaning(
    settings: Settings, tmp_path: Path
) -> None:
    connect(settings)
    X_train, y_train = numeric_only(training_data()[0]), training_data()[1]
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X_train, y_train)
    mlflow.sklearn.save_model(forest, tmp_path / "default")
    # save_model(sk_model, path, conda_env, code_paths, mlflow_model, serialization_format)
    mlflow.sklearn.save_model(forest, tmp_path / "positional", None, None, None, "pickle")

    assert flavor_conf(str(tmp_path / "default"))["serialization_format"] == "cloudpickle"
    assert flavor_conf(str(tmp_path / "positional"))["serialization_format"] == "pickle"
    assert_loads_back(forest, str(tmp_path / "default"), X_train)


#: The guide's code for four models, as a user's script run in a shell after
#: ``eval "$(lakehouse env)"``: no ``lakehouse`` import. Each model is registered, its version
#: moved to Production, and its probabilities written for the loading process to compare.
GUIDE_SCRIPT = """
import json, sys
assert "lakehouse" not in sys.modules, "start-up imports nothing of the platform"
import pandas as pd
import mlflow
from mlflow import MlflowClient
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

data = pd.read_pickle(sys.argv[1])
frame, y_train = data["frame"], data["y"]
numbers = frame[["income", "debt_ratio", "age"]].fillna(0.0)
categorical = Pipeline([
    ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
    ("encode", OneHotEncoder(handle_unknown="ignore")),
])
pipeline = Pipeline([
    ("preprocess", ColumnTransformer([
        ("numeric", SimpleImputer(strategy="median"), ["income", "debt_ratio", "age"]),
        ("categorical", categorical, ["purpose"]),
    ])),
    ("classifier", HistGradientBoostingClassifier(max_iter=50, random_state=0)),
])
models = {
    "rf_model": (RandomForestClassifier(n_estimators=100), numbers),
    "gb_model": (GradientBoostingClassifier(), numbers),
    "lr_model": (LogisticRegression(max_iter=1000), numbers),
    "credit_risk_model": (pipeline, frame),
}
out = {}
for name, (model, X_train) in models.items():
    with mlflow.start_run():
        model.fit(X_train, y_train)
        info = mlflow.sklearn.log_model(model, "rf_model")
    version = mlflow.register_model(info.model_uri, name).version
    MlflowClient().transition_model_version_stage(name, version, "Production")
    out[name] = {"version": int(version), "proba": model.predict_proba(X_train).tolist()}
json.dump(out, open(sys.argv[2], "w"))
"""

#: A second fresh process with the same variables: loads what the first registered.
LOAD_SCRIPT = """
import json, sys
import mlflow
import numpy as np
import pandas as pd

frame = pd.read_pickle(sys.argv[1])["frame"]
numbers = frame[["income", "debt_ratio", "age"]].fillna(0.0)
logged = json.load(open(sys.argv[2]))
for name, entry in logged.items():
    X = frame if name == "credit_risk_model" else numbers
    expected = np.asarray(entry["proba"])
    labels = expected.argmax(axis=1)
    by_version = mlflow.pyfunc.load_model(f"models:/{name}/{entry['version']}")
    np.testing.assert_array_equal(np.asarray(by_version.predict(X)), labels)
    by_stage = mlflow.pyfunc.load_model(f"models:/{name}/Production")
    np.testing.assert_array_equal(np.asarray(by_stage.predict(X)), labels)
    sk_model = mlflow.sklearn.load_model(f"models:/{name}/Production")
    np.testing.assert_allclose(sk_model.predict_proba(X), expected)
print("loaded", sorted(logged))
"""


def lakehouse_env(home: Path) -> dict[str, str]:
    """The variables ``lakehouse env`` exports for the state folder ``home``."""
    command = [str(Path(sys.executable).with_name("lakehouse")), "env"]
    base = {**shell_basics(home), "LAKEHOUSE_HOME": str(home)}
    out = subprocess.run(
        command, env=base, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    exported: dict[str, str] = {}
    for line in out.splitlines():
        words = shlex.split(line)
        assert words[0] == "export", line
        key, _, value = words[1].partition("=")
        exported[key] = value
    return exported


def shell_basics(home: Path) -> dict[str, str]:
    """``PATH`` and ``HOME`` of a login shell."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(home))}


def run_with(env: dict[str, str], script: str, *args: str, cwd: Path) -> str:
    """Run ``script`` in a fresh interpreter with exactly ``env``; fail with its output."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done.stdout


def test_guide_code_runs_in_a_process_with_only_the_lakehouse_env_variables(
    settings: Settings, tmp_path: Path
) -> None:
    exported = lakehouse_env(settings.home)
    assert exported["MLFLOW_TRACKING_URI"] == settings.tracking_uri
    env = {**exported, **shell_basics(tmp_path)}
    frame, y = training_data()
    data, logged = tmp_path / "data.pkl", tmp_path / "logged.json"
    pd.to_pickle({"frame": frame, "y": y}, data)

    run_with(env, GUIDE_SCRIPT, str(data), str(logged), cwd=tmp_path)
    out = run_with(env, LOAD_SCRIPT, str(data), str(logged), cwd=tmp_path)
    assert "loaded ['credit_risk_model', 'gb_model', 'lr_model', 'rf_model']" in out

    # And in this process, after connect(), by the stage URI the platform documents.
    connect(settings)
    entry = json.loads(logged.read_text())["credit_risk_model"]
    conf = flavor_conf(f"models:/credit_risk_model/{entry['version']}")
    assert conf["serialization_format"] == "cloudpickle"
    model = mlflow.pyfunc.load_model("models:/credit_risk_model/Production")
    labels = np.asarray(entry["proba"]).argmax(axis=1)
    np.testing.assert_array_equal(np.asarray(model.predict(frame)), labels)
