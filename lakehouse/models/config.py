"""The configuration of training and of the gate: model families, gate metrics.

:class:`TrainConfig` (with :data:`MODEL_TYPES`) configures :mod:`lakehouse.models.training` and
:class:`GateConfig` (with :data:`GATE_METRICS` and :data:`LOWER_IS_BETTER`)
:mod:`lakehouse.models.gate`; :func:`load_gate_config` reads a team's gate thresholds from a
YAML file (``ml_gate.yaml``). They live in this module of the standard library (and PyYAML)
alone because the ``lakehouse`` CLI builds its parser from their defaults and choices, and
importing scikit-learn and MLflow there would slow every command, even ``lakehouse --help``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

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
        if not math.isfinite(self.min_value):
            raise ValueError(f"gate min_value must be a finite number, got {self.min_value}")
        if not math.isfinite(self.tolerance) or self.tolerance < 0:
            raise ValueError(f"gate tolerance must be >= 0, got {self.tolerance}")

    @property
    def greater_is_better(self) -> bool:
        """Whether a larger value of the metric is better."""
        return self.metric not in LOWER_IS_BETTER


#: The gate file a team keeps at the root of its repository; read from the working directory.
GATE_FILE = "ml_gate.yaml"
#: The keys of a gate file and the type of each (the fields of :class:`GateConfig`).
_GATE_KEYS: dict[str, type] = {
    f.name: {"str": str, "float": float, "bool": bool}[str(f.type)] for f in fields(GateConfig)
}
_TYPE_NAMES: dict[type, str] = {str: "a string", float: "a number", bool: "true or false"}


#: The section of the gate file that holds the canary analysis's thresholds.
CANARY_SECTION = "canary"


def default_gate_file(cwd: Path | None = None) -> Path | None:
    """``./ml_gate.yaml`` when it exists (in ``cwd``, default the working directory), else None."""
    path = (cwd or Path.cwd()) / GATE_FILE
    return path if path.is_file() else None


def load_gate_config(path: str | Path) -> GateConfig:
    """The :class:`GateConfig` of a gate file: a YAML mapping of some of its fields.

    For example (keys left out keep the defaults of :class:`GateConfig`)::

        metric: roc_auc      # one of GATE_METRICS
        min_value: 0.70      # absolute floor (a ceiling for log_loss and brier)
        tolerance: 0.01      # how much worse than the champion the candidate may be
        auto_promote: true   # a passing candidate becomes champion at once

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not such a mapping, names an unknown key or holds a bad value;
            the message names the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"gate file {path} not found") from None
    except OSError as exc:
        raise ValueError(f"gate file {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"gate file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(
            f"gate file {path} must be a mapping of {', '.join(_GATE_KEYS)}, got {data!r}"
        )
    # The canary's thresholds share the file (lakehouse.scoring.canary reads that section).
    data = {k: v for k, v in data.items() if k != CANARY_SECTION}
    unknown = sorted(str(k) for k in data if k not in _GATE_KEYS)
    if unknown:
        raise ValueError(
            f"gate file {path}: unknown key(s) {', '.join(unknown)} "
            f"(expected {', '.join(_GATE_KEYS)})"
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        expected = _GATE_KEYS[key]
        if expected is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, expected)
        if not ok:
            raise ValueError(
                f"gate file {path}: {key} must be {_TYPE_NAMES[expected]}, got {value!r}"
            )
        values[key] = value
    try:
        return GateConfig(**values)
    except ValueError as exc:
        raise ValueError(f"gate file {path}: {exc}") from None


# --- Sweeps ----------------------------------------------------------------------------------
#: The grid ``lakehouse train --sweep`` trains without ``--sweep-grid``: each entry maps fields
#: of :class:`TrainConfig` to a value or a list of values (every combination is trained); the
#: fields an entry leaves out come from the base configuration (the training flags).
DEFAULT_SWEEP_GRID: tuple[dict[str, Any], ...] = (
    {"model_type": "random_forest", "max_depth": [6, 10]},
    {"model_type": "hist_gradient_boosting", "max_depth": [4], "learning_rate": [0.05, 0.1]},
)

_GRID_TYPES: dict[str, tuple[type, ...]] = {
    "model_type": (str,),
    "n_estimators": (int,),
    "max_depth": (int, type(None)),
    "learning_rate": (float, int),
    "min_samples_leaf": (int,),
    "seed": (int,),
}


def expand_grid(
    grid: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    base: TrainConfig | None = None,
    source: str = "sweep grid",
) -> list[TrainConfig]:
    """The configurations of ``grid``: every combination of each entry's values over ``base``.

    ``grid`` is one mapping or a list of them, of fields of :class:`TrainConfig` (all but
    ``holdout_fraction``, which a sweep's runs share) to a value or a list of values.
    Duplicates are dropped, the order kept. Errors are :class:`ValueError` naming ``source``.
    """
    base = base or TrainConfig()
    entries = [grid] if isinstance(grid, Mapping) else list(grid)
    if not entries or not all(isinstance(e, Mapping) and e for e in entries):
        raise ValueError(
            f"{source} must be a mapping, or a list of mappings, of training parameters "
            "to a value or a list of values"
        )
    configs: list[TrainConfig] = []
    for entry in entries:
        unknown = sorted(str(k) for k in entry if k not in _GRID_TYPES)
        if unknown:
            raise ValueError(
                f"{source}: unknown parameter(s) {', '.join(unknown)} "
                f"(expected {', '.join(_GRID_TYPES)}; the holdout is --holdout-fraction)"
            )
        axes: list[list[tuple[str, Any]]] = []
        for key, values in entry.items():
            values = list(values) if isinstance(values, list | tuple) else [values]
            if not values:
                raise ValueError(f"{source}: {key} has no values")
            for value in values:
                if isinstance(value, bool) or not isinstance(value, _GRID_TYPES[key]):
                    raise ValueError(f"{source}: bad {key} value {value!r}")
            if key == "learning_rate":
                values = [float(v) for v in values]
            axes.append([(key, v) for v in values])
        for combination in itertools.product(*axes):
            try:
                config = replace(base, **dict(combination))
            except ValueError as exc:
                raise ValueError(f"{source}: {exc}") from None
            if config not in configs:
                configs.append(config)
    return configs


def load_sweep_grid(path: str | Path, base: TrainConfig | None = None) -> list[TrainConfig]:
    """The configurations of the YAML sweep grid at ``path`` (see :func:`expand_grid`)::

    - model_type: random_forest
      max_depth: [6, 10]
    - model_type: hist_gradient_boosting
      learning_rate: [0.05, 0.1]
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"sweep grid {path} not found") from None
    except OSError as exc:
        raise ValueError(f"sweep grid {path} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"sweep grid {path} is not valid YAML: {exc}") from None
    return expand_grid(data, base, source=f"sweep grid {path}")
