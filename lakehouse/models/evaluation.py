"""Holdout evaluation of a fitted classifier: metrics, feature importance and plots.

Training logs these for its own run and the gate computes the same metrics for the candidate
and the champion, so both read them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
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

#: Probability at or above which an application is classed as a default.
DECISION_THRESHOLD = 0.5


def require_both_classes(y: np.ndarray, what: str) -> None:
    """Refuse labels with a single class: no ranking metric is defined on them."""
    present = sorted({int(v) for v in np.unique(y)})
    if present != [0, 1]:
        raise ValueError(
            f"{what} needs both classes (0 and 1), found only {present}: "
            "more data or another holdout_fraction is needed"
        )


def predict_default_probability(model: Any, X: pd.DataFrame) -> np.ndarray:
    """Probability of default (class 1) for each row."""
    proba = np.asarray(model.predict_proba(X))
    return proba[:, 1] if proba.ndim == 2 else proba


def evaluate(model: Any, X: pd.DataFrame, y: np.ndarray | pd.Series) -> dict[str, float]:
    """Holdout metrics of a fitted classifier with ``predict_proba``.

    Returns roc_auc, pr_auc, accuracy, precision, recall, f1, log_loss and brier (the last two:
    lower is better), with the decision threshold :data:`DECISION_THRESHOLD`.
    """
    y_true = np.asarray(y).astype("int64")
    if len(y_true) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(y_true)}")
    require_both_classes(y_true, "evaluation")
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
    # Training draws headless (jobs, spark-submit): no window, whatever the default backend.
    matplotlib.use("Agg", force=False)
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
