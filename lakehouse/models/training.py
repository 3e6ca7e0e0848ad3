"""Train the credit-risk model, track it in MLflow and hand it to the registry's gate.

The training set comes from the feature store (:func:`lakehouse.features.store.build_training_set`):
one row per loan application with its label, request columns and point-in-time features, plus
the Delta versions of the tables it was read from. :func:`train` fits a seeded scikit-learn
pipeline on the older applications, evaluates it on the newest ones (a time-based holdout),
logs everything to one MLflow run, registers a new model version and runs the gate
(:mod:`lakehouse.models.registry`). :func:`reproduce` rebuilds the training set from the exact Delta
versions a run recorded and retrains with the same parameters.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
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
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from lakehouse.models.config import MODEL_TYPES as MODEL_TYPES
from lakehouse.models.config import REQUEST_COLUMNS
from lakehouse.models.config import TrainConfig as TrainConfig
from lakehouse.platform.settings import Settings

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from pyspark.sql import SparkSession

    from lakehouse.models.registry import GateConfig, GateDecision
    from lakehouse.platform.catalog import TableCatalog

log = logging.getLogger(__name__)

LABEL = "defaulted"
TIMESTAMP = "application_timestamp"
KEY_COLUMNS: tuple[str, ...] = ("application_id", "customer_id")
# MODEL_TYPES and TrainConfig are imported above from lakehouse.models.config, which the
# CLI reads without importing scikit-learn.
#: Probability at or above which an application is classed as a default.
DECISION_THRESHOLD = 0.5
MODEL_ARTIFACT = "model"
#: Run tag prefix naming each Delta table read, with its version as the value.
INPUT_TAG_PREFIX = "lakehouse.input."


class TrainingSetLike(Protocol):
    """What training needs from a training set (see ``lakehouse.features.store.TrainingSet``)."""

    @property
    def frame(self) -> pd.DataFrame: ...

    @property
    def feature_columns(self) -> list[str]: ...

    @property
    def table_versions(self) -> dict[str, int]: ...

    @property
    def feature_service(self) -> str: ...


#: Builds a training set, optionally as of given Delta table versions.
TrainingSetBuilder = Callable[..., TrainingSetLike]


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced."""

    run_id: str
    model_uri: str
    version: int | None
    metrics: dict[str, float]
    train_rows: int
    holdout_rows: int
    decision: GateDecision | None = None
    table_versions: dict[str, int] = field(default_factory=dict)


# --- Data preparation ------------------------------------------------------------------------
def model_columns(training_set: TrainingSetLike) -> list[str]:
    """The columns the model reads: the request columns present, then the features."""
    frame = training_set.frame
    excluded = {LABEL, TIMESTAMP, *KEY_COLUMNS}
    missing = [c for c in training_set.feature_columns if c not in frame.columns]
    if missing:
        raise ValueError(f"training frame lacks feature columns: {', '.join(missing)}")
    columns = [c for c in REQUEST_COLUMNS if c in frame.columns]
    columns += [c for c in training_set.feature_columns if c not in columns]
    columns = [c for c in columns if c not in excluded]
    if not columns:
        raise ValueError("training set has no feature columns")
    return columns


def split_columns(frame: pd.DataFrame, columns: list[str]) -> tuple[list[str], list[str]]:
    """Split ``columns`` into numeric and categorical by their dtype in ``frame``."""
    numeric = [
        c
        for c in columns
        if pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])
    ]
    categorical = [c for c in columns if c not in numeric]
    return numeric, categorical


def prepare_inputs(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """The model's input frame: numeric columns as float64, categorical as strings or None.

    Scoring must feed the model the same shape; integer columns become float64 so that a
    missing value never changes a column's type between batches.
    """
    missing = [c for c in (*numeric, *categorical) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks model input columns: {', '.join(missing)}")
    out = pd.DataFrame(index=frame.index)
    for column in numeric:
        out[column] = pd.to_numeric(frame[column], errors="raise").astype("float64")
    for column in categorical:
        values = frame[column].astype("object")
        out[column] = values.where(values.notna(), None)
    return out.reset_index(drop=True)


def labels(frame: pd.DataFrame) -> np.ndarray:
    """The 0/1 label column as an int array; rejects nulls and other values."""
    if LABEL not in frame.columns:
        raise ValueError(f"training frame lacks the label column {LABEL!r}")
    y = frame[LABEL]
    if y.isna().any():
        raise ValueError(f"label column {LABEL!r} has {int(y.isna().sum())} null values")
    values = sorted({v.item() if isinstance(v, np.generic) else v for v in pd.unique(y)})
    if not set(values) <= {0, 1}:
        raise ValueError(f"label column {LABEL!r} must hold 0/1, found {values!r}")
    return y.astype("int64").to_numpy()


def time_split(frame: pd.DataFrame, holdout_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into (older, newest) applications; the newest ``holdout_fraction`` is held out.

    Rows are ordered by application time, then application id, so the split is
    deterministic; ties at the boundary never straddle it out of order.
    """
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if TIMESTAMP not in frame.columns:
        raise ValueError(f"training frame lacks the time column {TIMESTAMP!r}")
    if len(frame) < 2:
        raise ValueError(f"need at least 2 rows to split, got {len(frame)}")
    order = [TIMESTAMP, *[c for c in KEY_COLUMNS[:1] if c in frame.columns]]
    ordered = frame.sort_values(order, kind="mergesort").reset_index(drop=True)
    n_holdout = min(len(ordered) - 1, max(1, math.ceil(len(ordered) * holdout_fraction)))
    return ordered.iloc[:-n_holdout].reset_index(drop=True), ordered.iloc[-n_holdout:].reset_index(
        drop=True
    )


def _require_both_classes(y: np.ndarray, what: str) -> None:
    present = sorted({int(v) for v in np.unique(y)})
    if present != [0, 1]:
        raise ValueError(
            f"{what} needs both classes (0 and 1), found only {present}: "
            "more data or another holdout_fraction is needed"
        )


# --- Model -----------------------------------------------------------------------------------
def build_pipeline(config: TrainConfig, numeric: list[str], categorical: list[str]) -> Pipeline:
    """Imputation and one-hot encoding, then the seeded classifier of ``config``."""
    if not numeric and not categorical:
        raise ValueError("build_pipeline needs at least one input column")
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(("numeric", SimpleImputer(strategy="median"), numeric))
    if categorical:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        transformers.append(("categorical", encoder, categorical))
    preprocess = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)
    classifier: Any
    if config.model_type == "random_forest":
        classifier = RandomForestClassifier(
            n_estimators=config.n_estimators,
            max_depth=config.max_depth,
            min_samples_leaf=config.min_samples_leaf,
            random_state=config.seed,
            n_jobs=1,
        )
    else:
        classifier = HistGradientBoostingClassifier(
            max_iter=config.n_estimators,
            max_depth=config.max_depth,
            learning_rate=config.learning_rate,
            min_samples_leaf=config.min_samples_leaf,
            early_stopping=False,
            random_state=config.seed,
        )
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


def predict_default_probability(model: Any, X: pd.DataFrame) -> np.ndarray:
    """Probability of default (class 1) for each row."""
    proba = np.asarray(model.predict_proba(X))
    return proba[:, 1] if proba.ndim == 2 else proba


def evaluate(model: Any, X: pd.DataFrame, y: np.ndarray | pd.Series) -> dict[str, float]:
    """Holdout metrics of a fitted classifier with ``predict_proba``.

    Returns roc_auc, pr_auc, accuracy, precision, recall, f1, log_loss and brier (the last two:
    lower is better), with a decision threshold of 0.5.
    """
    y_true = np.asarray(y).astype("int64")
    if len(y_true) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(y_true)}")
    _require_both_classes(y_true, "evaluation")
    proba = predict_default_probability(model, X)
    predicted = (proba >= DECISION_THRESHOLD).astype("int64")
    return {
        "roc_auc": float(roc_auc_score(y_true, proba)),
        "pr_auc": float(average_precision_score(y_true, proba)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "log_loss": float(log_loss(y_true, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, proba)),
    }


def feature_importance(
    model: Pipeline, X: pd.DataFrame, y: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Importance per feature: the forest's own importances, else permutation importance.

    The forest's importances are per encoded column (``categorical__purpose_CAR``); the
    permutation importance is per input column, measured as the drop in ROC AUC.
    """
    classifier = model.steps[-1][1]
    if hasattr(classifier, "feature_importances_"):
        names = list(model[:-1].get_feature_names_out())
        values = classifier.feature_importances_
    else:
        result = permutation_importance(
            model, X, y, scoring="roc_auc", n_repeats=3, random_state=seed, n_jobs=1
        )
        names, values = list(X.columns), result.importances_mean
    pairs = sorted(zip(names, values, strict=True), key=lambda p: (-float(p[1]), p[0]))
    return {str(name): float(value) for name, value in pairs}


def evaluation_figures(
    model: Pipeline, X: pd.DataFrame, y: np.ndarray, importance: Mapping[str, float]
) -> dict[str, Figure]:
    """ROC, precision-recall, confusion matrix, calibration and feature importance plots."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    proba = predict_default_probability(model, X)
    predicted = (proba >= DECISION_THRESHOLD).astype("int64")
    figures: dict[str, Figure] = {}

    fig, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(y, proba, ax=ax, name="holdout")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_title("ROC curve")
    figures["roc_curve.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    PrecisionRecallDisplay.from_predictions(y, proba, ax=ax, name="holdout")
    ax.set_title("Precision-recall curve")
    figures["pr_curve.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    ConfusionMatrixDisplay.from_predictions(
        y, predicted, labels=[0, 1], display_labels=["repaid", "defaulted"], ax=ax, colorbar=False
    )
    ax.set_title(f"Confusion matrix (threshold {DECISION_THRESHOLD})")
    figures["confusion_matrix.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    CalibrationDisplay.from_predictions(y, proba, n_bins=10, ax=ax, name="holdout")
    ax.set_title("Calibration")
    figures["calibration.png"] = fig

    top = list(importance.items())[:20]
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.3 * len(top) + 1)))
    ax.barh([n for n, _ in reversed(top)], [v for _, v in reversed(top)])
    ax.set_title("Feature importance")
    fig.tight_layout()
    figures["feature_importance.png"] = fig
    return figures


def frame_digest(frame: pd.DataFrame) -> str:
    """A stable digest of a frame's content, to tell whether two training sets are equal."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + ",".join(frame.columns).encode()).hexdigest()[:16]


#: Packages a served model needs; pinned to the versions that trained it.
MODEL_REQUIREMENTS: tuple[str, ...] = (
    "mlflow",
    "scikit-learn",
    "skops",
    "numpy",
    "pandas",
    "scipy",
)


def model_pip_requirements() -> list[str]:
    """Pinned requirements of the logged model (saves MLflow inferring them in a subprocess)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS]


def _skops_trusted_types(model: Pipeline) -> list[str]:
    """The types skops needs trusting to load ``model``: all are scikit-learn/numpy types."""
    import skops.io

    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


# --- Training --------------------------------------------------------------------------------
def train(
    training_set: TrainingSetLike,
    config: TrainConfig | None = None,
    settings: Settings | None = None,
    *,
    register: bool = True,
    gate: GateConfig | None = None,
    spark: SparkSession | None = None,
    catalog: TableCatalog | None = None,
    run_name: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> TrainResult:
    """Fit, evaluate and log one model; register it and run the gate.

    Args:
        training_set: the frame, its feature columns and the Delta versions it was read from.
        config: model and holdout configuration; defaults to :class:`TrainConfig`.
        settings: platform settings; MLflow is connected to them first.
        register: register a new version of ``settings.model_name`` and run the gate.
        gate: gate thresholds; defaults to :class:`lakehouse.models.registry.GateConfig`.
        spark, catalog: when both are given the gate decision is appended to
            ``gold.model_gate_audit``.
        run_name: MLflow run name.
        extra_tags: more run tags.
    """
    import mlflow
    from mlflow.models import infer_signature

    from lakehouse.models.tracking import connect
    from lakehouse.platform.settings import load_settings

    config = config or TrainConfig()
    settings = settings or load_settings()
    connect(settings)
    frame = training_set.frame
    columns = model_columns(training_set)
    numeric, categorical = split_columns(frame, columns)
    train_frame, holdout_frame = time_split(frame, config.holdout_fraction)
    X_train = prepare_inputs(train_frame, numeric, categorical)
    X_holdout = prepare_inputs(holdout_frame, numeric, categorical)
    y_train, y_holdout = labels(train_frame), labels(holdout_frame)
    _require_both_classes(y_train, "training")
    _require_both_classes(y_holdout, "the holdout")
    table_versions = {str(k): int(v) for k, v in sorted(training_set.table_versions.items())}

    with mlflow.start_run(run_name=run_name) as run:
        run_id = run.info.run_id
        mlflow.log_params(config.to_params())
        mlflow.log_params(
            {
                "feature_service": training_set.feature_service,
                "table_versions": json.dumps(table_versions, sort_keys=True),
                "train_rows": len(train_frame),
                "holdout_rows": len(holdout_frame),
                "holdout_start": str(holdout_frame[TIMESTAMP].min()),
                "data_digest": frame_digest(frame),
            }
        )
        mlflow.set_tags(
            {
                "lakehouse.feature_service": training_set.feature_service,
                **{f"{INPUT_TAG_PREFIX}{name}": str(v) for name, v in table_versions.items()},
                **dict(extra_tags or {}),
            }
        )
        mlflow.log_dict(
            {"numeric": numeric, "categorical": categorical, "label": LABEL},
            "model_inputs.json",
        )
        _log_datasets(train_frame, holdout_frame, training_set.feature_service)

        model = build_pipeline(config, numeric, categorical).fit(X_train, y_train)
        metrics = evaluate(model, X_holdout, y_holdout)
        mlflow.log_metrics(metrics)
        train_auc = roc_auc_score(y_train, predict_default_probability(model, X_train))
        mlflow.log_metric("train_roc_auc", float(train_auc))

        importance = feature_importance(model, X_holdout, y_holdout, seed=config.seed)
        mlflow.log_dict(importance, "feature_importance.json")
        import matplotlib.pyplot as plt

        for name, figure in evaluation_figures(model, X_holdout, y_holdout, importance).items():
            mlflow.log_figure(figure, f"plots/{name}")
            plt.close(figure)

        # The signature from the whole training input, so that no column is typed from a few
        # rows that happen to be empty.
        example = X_train.head(5)
        signature = infer_signature(X_train, model.predict_proba(example))
        info = mlflow.sklearn.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=_skops_trusted_types(model),
            pip_requirements=model_pip_requirements(),
            registered_model_name=settings.model_name if register else None,
        )
    version = info.registered_model_version if register else None
    log.info(
        "run %s: roc_auc=%.4f on %d holdout rows%s",
        run_id,
        metrics["roc_auc"],
        len(holdout_frame),
        f", registered {settings.model_name} version {version}" if version else "",
    )

    decision = None
    if version is not None:
        from lakehouse.models.registry import run_gate, write_gate_audit

        decision = run_gate(
            settings, int(version), X_holdout, y_holdout, gate, table_versions=table_versions
        )
        mlflow.MlflowClient().set_tag(run_id, "lakehouse.gate_verdict", decision.verdict)
        if spark is not None and catalog is not None:
            write_gate_audit(spark, catalog, decision)
    return TrainResult(
        run_id=run_id,
        model_uri=info.model_uri,
        version=int(version) if version is not None else None,
        metrics=metrics,
        train_rows=len(train_frame),
        holdout_rows=len(holdout_frame),
        decision=decision,
        table_versions=table_versions,
    )


def _log_datasets(train_frame: pd.DataFrame, holdout_frame: pd.DataFrame, name: str) -> None:
    """Record the training and evaluation frames as MLflow dataset inputs of the run."""
    import warnings

    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    for context, part in (("training", train_frame), ("evaluation", holdout_frame)):
        with warnings.catch_warnings():
            # The schema hint about integer columns concerns model signatures, not datasets.
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_pandas(part, targets=LABEL, name=f"{name}-{context}")
            mlflow.log_input(dataset, context=context)


def run_inputs(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """What a run read: its params, feature service and Delta table versions."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from lakehouse.models.tracking import connect
    from lakehouse.platform.settings import load_settings

    uri = connect(settings or load_settings())
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as exc:
        raise ValueError(f"no MLflow run {run_id!r} in {uri}") from exc
    params = run.data.params
    if "table_versions" not in params:
        raise ValueError(f"run {run_id} was not logged by lakehouse training (no table_versions)")
    return {
        "params": dict(params),
        "feature_service": params.get("feature_service", ""),
        "table_versions": {k: int(v) for k, v in json.loads(params["table_versions"]).items()},
    }


def reproduce(
    run_id: str,
    spark: SparkSession,
    settings: Settings,
    catalog: TableCatalog,
    build: TrainingSetBuilder | None = None,
) -> TrainResult:
    """Retrain with the params of ``run_id`` on the Delta versions it read; nothing registered.

    ``build(spark, settings, catalog, table_versions=...)`` makes the training set (default:
    :func:`lakehouse.features.store.build_training_set`) reading every table at its recorded
    version.
    The new run is tagged ``lakehouse.reproduces=<run_id>``; its metrics equal the original's.
    """
    inputs = run_inputs(run_id, settings)
    config = TrainConfig.from_params(inputs["params"])
    if build is None:
        from lakehouse.features.store import build_training_set

        build = cast(TrainingSetBuilder, build_training_set)
    if "table_versions" in inspect.signature(build).parameters:
        training_set = build(spark, settings, catalog, table_versions=inputs["table_versions"])
    else:
        # A builder that reads the current versions: valid while the tables have not moved,
        # which the check below verifies.
        training_set = build(spark, settings, catalog)
    read = {str(k): int(v) for k, v in training_set.table_versions.items()}
    if read != inputs["table_versions"]:
        raise RuntimeError(
            f"training set was read at {read}, not at the versions of run {run_id}: "
            f"{inputs['table_versions']}"
        )
    digest = frame_digest(training_set.frame)
    if digest != inputs["params"].get("data_digest", digest):
        log.warning("training data of run %s differs from the rebuilt one", run_id)
    return train(
        training_set,
        config,
        settings,
        register=False,
        run_name=f"reproduce-{run_id[:8]}",
        extra_tags={"lakehouse.reproduces": run_id},
    )
