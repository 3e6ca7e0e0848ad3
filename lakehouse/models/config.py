"""The configuration of training and of the gate: model families, gate metrics.

:class:`TrainConfig` (with :data:`MODEL_TYPES`) configures :mod:`lakehouse.models.training` and
:class:`GateConfig` (with :data:`GATE_METRICS` and :data:`LOWER_IS_BETTER`)
:mod:`lakehouse.models.gate`. They live in this module of the standard library alone because the
``lakehouse`` CLI builds its parser from their defaults and choices, and importing scikit-learn
and MLflow there would slow every command, even ``lakehouse --help``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

MODEL_TYPES: tuple[str, ...] = ("random_forest", "hist_gradient_boosting")

#: Fields of the loan application itself that the model reads besides the stored features.
REQUEST_COLUMNS: tuple[str, ...] = ("loan_amount", "term_months", "purpose")

#: Metrics of :func:`lakehouse.models.evaluation.evaluate`; the gate may use any of them.
GATE_METRICS: tuple[str, ...] = (
    "roc_auc",
    "pr_auc",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "log_loss",
    "brier",
)
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "brier"})


@dataclass(frozen=True)
class TrainConfig:
    """Model family, hyperparameters and the holdout of one training run.

    Attributes:
        model_type: ``random_forest`` or ``hist_gradient_boosting``.
        n_estimators: trees of the forest, or boosting iterations.
        max_depth: maximum tree depth; ``None`` for unlimited.
        learning_rate: shrinkage of gradient boosting (ignored by the forest).
        min_samples_leaf: minimum rows in a leaf.
        seed: seeds the model and the permutation importance.
        holdout_fraction: share of the newest applications held out for evaluation.
    """

    model_type: str = "random_forest"
    n_estimators: int = 200
    max_depth: int | None = 8
    learning_rate: float = 0.1
    min_samples_leaf: int = 5
    seed: int = 42
    holdout_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(
                f"model_type must be one of {', '.join(MODEL_TYPES)}, got {self.model_type!r}"
            )
        if self.n_estimators < 1:
            raise ValueError(f"n_estimators must be >= 1, got {self.n_estimators}")
        if self.max_depth is not None and self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1 or None, got {self.max_depth}")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if self.min_samples_leaf < 1:
            raise ValueError(f"min_samples_leaf must be >= 1, got {self.min_samples_leaf}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")

    def to_params(self) -> dict[str, str]:
        """The configuration as MLflow params (strings)."""
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TrainConfig:
        """Rebuild the configuration a run logged with :meth:`to_params`."""
        missing = [k for k in cls.__dataclass_fields__ if k not in params]
        if missing:
            raise ValueError(f"run params lack the training configuration: {', '.join(missing)}")
        depth = params["max_depth"]
        return cls(
            model_type=params["model_type"],
            n_estimators=int(params["n_estimators"]),
            max_depth=None if depth == "None" else int(depth),
            learning_rate=float(params["learning_rate"]),
            min_samples_leaf=int(params["min_samples_leaf"]),
            seed=int(params["seed"]),
            holdout_fraction=float(params["holdout_fraction"]),
        )


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the gate.

    Attributes:
        metric: the metric compared (one of :data:`GATE_METRICS`).
        min_value: absolute floor (a ceiling for lower-is-better metrics).
        tolerance: how much worse than the champion the candidate may be.
        auto_promote: make a passing candidate champion at once; otherwise it stays
            challenger until :func:`lakehouse.models.registry.promote`.
    """

    metric: str = "roc_auc"
    min_value: float = 0.70
    tolerance: float = 0.01
    auto_promote: bool = True

    def __post_init__(self) -> None:
        if self.metric not in GATE_METRICS:
            raise ValueError(
                f"gate metric must be one of {', '.join(GATE_METRICS)}, got {self.metric!r}"
            )
        if self.tolerance < 0:
            raise ValueError(f"gate tolerance must be >= 0, got {self.tolerance}")

    @property
    def greater_is_better(self) -> bool:
        """Whether a larger value of the metric is better."""
        return self.metric not in LOWER_IS_BETTER
