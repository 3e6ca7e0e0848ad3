"""Train the credit-risk model, track it in MLflow and hand it to the gate.

The training set comes from the feature store (:func:`lakehouse.features.store.build_training_set`):
one row per loan application with its label, request columns and point-in-time features, plus
the Delta versions of the tables it was read from. :func:`train` fits a seeded scikit-learn
pipeline on the older applications, evaluates it on the newest ones (a time-based holdout),
logs everything to one MLflow run, registers a new model version and runs the gate
(:mod:`lakehouse.models.gate`). :func:`reproduce` rebuilds the training set from the exact Delta
versions a run recorded and retrains with the same parameters. :func:`sweep` trains a small grid
of configurations as child runs of one parent run on the same holdout and registers (and
gates) only the best. Every run records its cost: the wall time of the fit and of the whole
run and the peak resident memory of the process
(:data:`~lakehouse.models.experiments.COST_METRICS`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING, Any, Protocol, cast

import matplotlib.pyplot as plt
import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import psutil
import skops.io
from mlflow.data.pandas_dataset import from_pandas
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from lakehouse.models.audit import write_gate_audit
from lakehouse.models.config import MODEL_TYPES as MODEL_TYPES
from lakehouse.models.config import REQUEST_COLUMNS, GateConfig
from lakehouse.models.config import TrainConfig as TrainConfig
from lakehouse.models.evaluation import (
    evaluate,
    evaluation_figures,
    feature_importance,
    predict_default_probability,
    require_both_classes,
)
from lakehouse.models.experiments import (
    REPRODUCES_TAG,
    SWEEP_BEST_TAG,
    SWEEP_TAG,
    best_index,
    comparison_figure,
)
from lakehouse.models.gate import GateDecision, run_gate
from lakehouse.models.tracking import experiment_id, mlflow_client
from lakehouse.platform.settings import Settings, load_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakehouse.platform.catalog import TableCatalog

log = logging.getLogger(__name__)

LABEL = "defaulted"
TIMESTAMP = "application_timestamp"
KEY_COLUMNS: tuple[str, ...] = ("application_id", "customer_id")
# MODEL_TYPES and TrainConfig are re-exported from lakehouse.models.config, which the CLI
# reads without importing scikit-learn.
MODEL_ARTIFACT = "model"
#: Run tag prefix naming each Delta table read, with its version as the value.
INPUT_TAG_PREFIX = "lakehouse.input."
#: Where a sweep's parent run keeps the plot comparing its children.
SWEEP_PLOT = "sweep/comparison.png"


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
    #: ``training_seconds``, ``fit_seconds`` and ``peak_memory_mb`` (also MLflow metrics).
    cost: dict[str, float] = field(default_factory=dict)
    #: The sweep's parent run, for a child run of :func:`sweep`.
    parent_run_id: str | None = None


@dataclass(frozen=True)
class SweepResult:
    """What one :func:`sweep` produced: a parent run, its children and the best of them."""

    parent_run_id: str
    children: list[TrainResult]
    #: The best child by the gate metric, with its registered version and gate decision.
    best: TrainResult
    metric: str
    #: The URI of the comparison plot among the parent run's artifacts.
    plot_uri: str


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
    return [f"{name}=={package_version(name)}" for name in MODEL_REQUIREMENTS]


def _skops_trusted_types(model: Pipeline) -> list[str]:
    """The types skops needs trusting to load ``model``: all are scikit-learn/numpy types."""
    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


# --- Cost ------------------------------------------------------------------------------------
class PeakMemory:
    """The peak resident memory (RSS) of this process while the block runs.

    A daemon thread samples the RSS every ``interval`` seconds (psutil); the peak also counts
    the RSS on entry and whenever :attr:`peak_mb` is read.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self._process = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self._peak = max(self._peak, self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakMemory:
        self._sample()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    @property
    def peak_mb(self) -> float:
        """The peak RSS so far, in MiB."""
        self._sample()
        return self._peak / 2**20


# --- Training --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """A training set prepared for the model: the older rows to fit, the newest to evaluate."""

    train_frame: pd.DataFrame
    holdout_frame: pd.DataFrame
    numeric: list[str]
    categorical: list[str]
    X_train: pd.DataFrame
    X_holdout: pd.DataFrame
    y_train: np.ndarray
    y_holdout: np.ndarray
    table_versions: dict[str, int]


def prepare_split(training_set: TrainingSetLike, config: TrainConfig) -> Split:
    """Split ``training_set`` in time and shape both parts as the model reads them.

    Refuses a split where either part lacks one of the classes.
    """
    frame = training_set.frame
    numeric, categorical = split_columns(frame, model_columns(training_set))
    train_frame, holdout_frame = time_split(frame, config.holdout_fraction)
    y_train, y_holdout = labels(train_frame), labels(holdout_frame)
    split = Split(
        train_frame=train_frame,
        holdout_frame=holdout_frame,
        numeric=numeric,
        categorical=categorical,
        X_train=prepare_inputs(train_frame, numeric, categorical),
        X_holdout=prepare_inputs(holdout_frame, numeric, categorical),
        y_train=y_train,
        y_holdout=y_holdout,
        table_versions={str(k): int(v) for k, v in sorted(training_set.table_versions.items())},
    )
    require_both_classes(split.y_train, "training")
    require_both_classes(split.y_holdout, "the holdout")
    return split


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
        gate: gate thresholds; defaults to :class:`lakehouse.models.config.GateConfig`.
        spark, catalog: when both are given the gate decision is appended to
            ``gold.model_gate_audit``.
        run_name: MLflow run name.
        extra_tags: more run tags.
    """
    started = time.perf_counter()
    config = config or TrainConfig()
    settings = settings or load_settings()
    with PeakMemory() as memory:
        split = prepare_split(training_set, config)
        with mlflow.start_run(run_name=run_name, experiment_id=experiment_id(settings)) as run:
            run_id = run.info.run_id
            metrics, cost, info = _fit_and_log(
                training_set,
                config,
                split,
                extra_tags,
                settings.model_name if register else None,
                started,
                memory,
            )
    registered = info.registered_model_version if register else None
    version = int(registered) if registered is not None else None
    log.info(
        "run %s: roc_auc=%.4f on %d holdout rows%s",
        run_id,
        metrics["roc_auc"],
        len(split.holdout_frame),
        f", registered {settings.model_name} version {version}" if version else "",
    )
    decision = None
    if version is not None:
        decision = _gate(settings, run_id, version, split, gate, spark, catalog)
    return TrainResult(
        run_id=run_id,
        model_uri=info.model_uri,
        version=version,
        metrics=metrics,
        train_rows=len(split.train_frame),
        holdout_rows=len(split.holdout_frame),
        decision=decision,
        table_versions=split.table_versions,
        cost=cost,
    )


def _fit_and_log(
    training_set: TrainingSetLike,
    config: TrainConfig,
    split: Split,
    extra_tags: Mapping[str, str] | None,
    registered_name: str | None,
    started: float,
    memory: PeakMemory,
) -> tuple[dict[str, float], dict[str, float], ModelInfo]:
    """In the active run: log the inputs, fit, evaluate, log the model and the run's cost.

    Returns the holdout metrics, the cost metrics and the logged model. ``started`` is the
    :func:`time.perf_counter` at which the run's work began.
    """
    _log_inputs(training_set, config, split, extra_tags)
    fit_started = time.perf_counter()
    model = build_pipeline(config, split.numeric, split.categorical).fit(
        split.X_train, split.y_train
    )
    fit_seconds = time.perf_counter() - fit_started
    metrics = _log_evaluation(model, split, config.seed)
    info = _log_model(model, split.X_train, registered_name)
    cost = {
        "training_seconds": time.perf_counter() - started,
        "fit_seconds": fit_seconds,
        "peak_memory_mb": memory.peak_mb,
    }
    mlflow.log_metrics(cost)
    return metrics, cost, info


def _log_inputs(
    training_set: TrainingSetLike,
    config: TrainConfig,
    split: Split,
    extra_tags: Mapping[str, str] | None,
) -> None:
    """Log what the run reads: params, Delta table versions, model inputs and datasets."""
    mlflow.log_params(config.to_params())
    mlflow.log_params(
        {
            "feature_service": training_set.feature_service,
            "table_versions": json.dumps(split.table_versions, sort_keys=True),
            "train_rows": len(split.train_frame),
            "holdout_rows": len(split.holdout_frame),
            # With holdout_rows, the standard error of the holdout's ROC AUC (monitoring's
            # quality rule weighs it).
            "holdout_positives": int(split.y_holdout.sum()),
            "holdout_start": str(split.holdout_frame[TIMESTAMP].min()),
            "data_digest": frame_digest(training_set.frame),
        }
    )
    mlflow.set_tags(
        {
            "lakehouse.feature_service": training_set.feature_service,
            **{f"{INPUT_TAG_PREFIX}{name}": str(v) for name, v in split.table_versions.items()},
            **dict(extra_tags or {}),
        }
    )
    mlflow.log_dict(
        {"numeric": split.numeric, "categorical": split.categorical, "label": LABEL},
        "model_inputs.json",
    )
    _log_datasets(split.train_frame, split.holdout_frame, training_set.feature_service)


def _log_datasets(train_frame: pd.DataFrame, holdout_frame: pd.DataFrame, name: str) -> None:
    """Record the training and evaluation frames as MLflow dataset inputs of the run."""
    for context, part in (("training", train_frame), ("evaluation", holdout_frame)):
        with warnings.catch_warnings():
            # The schema hint about integer columns concerns model signatures, not datasets.
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_pandas(part, targets=LABEL, name=f"{name}-{context}")
            mlflow.log_input(dataset, context=context)


def _log_evaluation(model: Pipeline, split: Split, seed: int) -> dict[str, float]:
    """Log the holdout metrics, the training ROC AUC, feature importance and plots."""
    metrics = evaluate(model, split.X_holdout, split.y_holdout)
    mlflow.log_metrics(metrics)
    train_auc = roc_auc_score(split.y_train, predict_default_probability(model, split.X_train))
    mlflow.log_metric("train_roc_auc", float(train_auc))
    importance = feature_importance(model, split.X_holdout, split.y_holdout, seed=seed)
    mlflow.log_dict(importance, "feature_importance.json")
    figures = evaluation_figures(model, split.X_holdout, split.y_holdout, importance)
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"plots/{name}")
        plt.close(figure)
    return metrics


def _log_model(model: Pipeline, X_train: pd.DataFrame, registered_name: str | None) -> ModelInfo:
    """Log the fitted pipeline; register it as a new version of ``registered_name`` if given."""
    # The signature from the whole training input, so that no column is typed from a few
    # rows that happen to be empty.
    example = X_train.head(5)
    signature = infer_signature(X_train, model.predict_proba(example))
    return mlflow.sklearn.log_model(
        model,
        name=MODEL_ARTIFACT,
        signature=signature,
        input_example=example,
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=_skops_trusted_types(model),
        pip_requirements=model_pip_requirements(),
        registered_model_name=registered_name,
    )


def _gate(
    settings: Settings,
    run_id: str,
    version: int,
    split: Split,
    gate: GateConfig | None,
    spark: SparkSession | None,
    catalog: TableCatalog | None,
) -> GateDecision:
    """Run the gate on the new version; tag the run with the verdict; audit it given Spark.

    A gate that fails (the tracking server lost, say) withdraws the version it was judging when
    the server still answers and the version holds no alias yet, so no unjudged version is left
    for anyone to promote; where it cannot, the registry's ``interrupted`` says so.
    """
    try:
        decision = run_gate(
            settings,
            version,
            split.X_holdout,
            split.y_holdout,
            gate,
            table_versions=split.table_versions,
        )
    except Exception:
        _withdraw(settings, version)
        raise
    mlflow_client(settings).set_tag(run_id, "lakehouse.gate_verdict", decision.verdict)
    if spark is not None and catalog is not None:
        write_gate_audit(spark, catalog, decision)
    return decision


def _withdraw(settings: Settings, version: int) -> None:
    """Delete ``version`` of the model if it holds no alias (best effort, logged)."""
    client = mlflow_client(settings)
    try:
        held = client.get_model_version(settings.model_name, str(version)).aliases
        if held:
            log.warning("version %d holds %s: left for the gate to judge again", version, held)
            return
        client.delete_model_version(settings.model_name, str(version))
        log.warning("withdrew %s version %d: its gate did not run", settings.model_name, version)
    except MlflowException as exc:
        log.warning("could not withdraw version %d after its gate failed: %s", version, exc)


# --- Sweep -----------------------------------------------------------------------------------
def sweep(
    training_set: TrainingSetLike,
    configs: Sequence[TrainConfig],
    settings: Settings | None = None,
    *,
    gate: GateConfig | None = None,
    register: bool = True,
    spark: SparkSession | None = None,
    catalog: TableCatalog | None = None,
    run_name: str = "sweep",
) -> SweepResult:
    """Train every configuration as a child run of one parent run; register the best.

    Every child fits on the same older rows and logs its metrics on the same holdout (so the
    configurations must share ``holdout_fraction``), registers nothing and is named
    ``<n>-<model_type>``. The best child by the gate metric (lower is better for
    :data:`~lakehouse.models.config.LOWER_IS_BETTER`; the first of equals) is registered as a
    new version of ``settings.model_name`` and goes to the gate, as :func:`train` would. The
    parent run (tag ``lakehouse.sweep``) logs a bar chart of the gate metric and the training
    time of each child (:data:`SWEEP_PLOT`), the best child's id and metric and, once gated,
    the verdict.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("a sweep needs at least one configuration")
    fractions = sorted({c.holdout_fraction for c in configs})
    if len(fractions) > 1:
        raise ValueError(
            f"the configurations of a sweep share one holdout, got holdout fractions {fractions}"
        )
    gate = gate or GateConfig()
    settings = settings or load_settings()
    split = prepare_split(training_set, configs[0])
    experiment = experiment_id(settings)
    children: list[TrainResult] = []
    with mlflow.start_run(run_name=run_name, experiment_id=experiment) as parent:
        parent_id = parent.info.run_id
        mlflow.set_tags(
            {SWEEP_TAG: "true", "lakehouse.feature_service": training_set.feature_service}
        )
        mlflow.log_params(
            {
                "sweep_size": len(configs),
                "gate_metric": gate.metric,
                "feature_service": training_set.feature_service,
                "table_versions": json.dumps(split.table_versions, sort_keys=True),
                "holdout_fraction": configs[0].holdout_fraction,
                "data_digest": frame_digest(training_set.frame),
            }
        )
        mlflow.log_dict({"configs": [c.to_params() for c in configs]}, "sweep/grid.json")
        for n, config in enumerate(configs, 1):
            started = time.perf_counter()
            with (
                PeakMemory() as memory,
                mlflow.start_run(
                    run_name=f"{n}-{config.model_type}", experiment_id=experiment, nested=True
                ) as child,
            ):
                metrics, cost, info = _fit_and_log(
                    training_set, config, split, None, None, started, memory
                )
            children.append(
                TrainResult(
                    run_id=child.info.run_id,
                    model_uri=info.model_uri,
                    version=None,
                    metrics=metrics,
                    train_rows=len(split.train_frame),
                    holdout_rows=len(split.holdout_frame),
                    table_versions=split.table_versions,
                    cost=cost,
                    parent_run_id=parent_id,
                )
            )
        values = [c.metrics[gate.metric] for c in children]
        best = children[best_index(values, gate.metric)]
        figure = comparison_figure(
            [f"{n}-{c.run_id[:8]}" for n, c in enumerate(children, 1)],
            gate.metric,
            values,
            [c.cost["training_seconds"] for c in children],
        )
        mlflow.log_figure(figure, SWEEP_PLOT)
        plt.close(figure)
        mlflow.set_tag(SWEEP_BEST_TAG, best.run_id)
        mlflow.log_metric(f"best_{gate.metric}", best.metrics[gate.metric])
        plot_uri = mlflow.get_artifact_uri(SWEEP_PLOT)
    log.info(
        "sweep %s: %d runs, best %s with %s=%.4f",
        parent_id,
        len(children),
        best.run_id,
        gate.metric,
        best.metrics[gate.metric],
    )
    if register:
        registered = mlflow.register_model(best.model_uri, settings.model_name)
        version = int(registered.version)
        decision = _gate(settings, best.run_id, version, split, gate, spark, catalog)
        mlflow_client(settings).set_tag(parent_id, "lakehouse.gate_verdict", decision.verdict)
        best = replace(best, version=version, decision=decision)
    return SweepResult(parent_id, children, best, gate.metric, plot_uri)


# --- Reproduction ----------------------------------------------------------------------------
def run_inputs(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """What a run read: its params, feature service and Delta table versions."""
    settings = settings or load_settings()
    try:
        run = mlflow_client(settings).get_run(run_id)
    except MlflowException as exc:
        raise ValueError(f"no MLflow run {run_id!r} in {settings.tracking_uri}") from exc
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
        # Imported only for the default builder: the feature store imports Feast, seconds.
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
        extra_tags={REPRODUCES_TAG: run_id},
    )
