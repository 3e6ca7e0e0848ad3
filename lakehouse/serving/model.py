"""A registered model version loaded for serving: inputs, checks and a direct call to the model.

Batch scoring (:mod:`lakehouse.scoring.predictions`) hands the pyfunc the signature's columns
cast to the signature's types and scores ``1 - p0`` of the pyfunc's output (the first column of
``predict_proba``). :class:`ServedModel` computes the same number without the pyfunc: it calls
the scikit-learn model's prediction function (the pyfunc's ``predict_fn``) itself, skipping
MLflow's pandas schema enforcement, and checks and casts each value itself instead
(:meth:`ServedModel.encode`), naming the column of a bad one.

A pipeline that starts with a ``ColumnTransformer`` over named columns gets a copy whose
transformers select columns by position, so a batch goes in as one object array in signature
order, without building a pandas frame; the copy is used only when it gives exactly the
original pipeline's answers on the warm-up rows, otherwise the model gets a pandas frame.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lakehouse.platform.settings import Settings

log = logging.getLogger(__name__)

#: The feature service a version was trained with when its run does not say.
DEFAULT_FEATURE_SERVICE = "credit_risk_v1"
#: The run tag naming a version's feature service (set by the platform's training).
FEATURE_SERVICE_TAG = "lakehouse.feature_service"
#: The entity key a request names to have its features looked up.
ENTITY_KEY = "customer_id"

NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})
INTEGER_TYPES = frozenset({"long", "integer"})


class InputError(ValueError):
    """A request value the model cannot take; ``field`` names the column."""

    def __init__(self, field_name: str, message: str, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.field = field_name
        self.error_code = error_code


@dataclass
class Encoded:
    """Rows of one request encoded for one model: an object array in signature order, and the
    rows whose missing inputs come from the online store (row index, customer id, columns)."""

    array: np.ndarray
    lookups: list[tuple[int, str, list[int]]] = field(default_factory=list)


class ServedModel:
    """One registered model version, loaded, checked and warmed."""

    def __init__(
        self,
        name: str,
        version: int,
        run_id: str,
        model: Any,
        input_columns: Sequence[tuple[str, str]],
        predict_fn: str = "predict_proba",
        proba_pair: bool = True,
        feature_service: str = DEFAULT_FEATURE_SERVICE,
    ) -> None:
        self.name = name
        self.version = version
        self.run_id = run_id
        self.model = model
        self.input_columns = tuple(input_columns)
        self.columns = [c for c, _ in self.input_columns]
        self.types = [t for _, t in self.input_columns]
        self.index = {c: i for i, c in enumerate(self.columns)}
        self.predict_fn = predict_fn
        self.proba_pair = proba_pair
        self.feature_service = feature_service
        #: Whether each column takes a missing value (null/NaN); found out by :meth:`warm`.
        self.nullable = [True] * len(self.columns)
        self._fast: Any = None
        self.load_seconds = 0.0

    # --- Loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, settings: Settings, name: str, version: int) -> ServedModel:
        """Load ``models:/name/version`` from the settings' registry, check it and warm it."""
        from mlflow.models import get_model_info

        from lakehouse.models.tracking import mlflow_client

        started = time.perf_counter()
        client = mlflow_client(settings)  # also allows loading the store's pickled models
        mv = client.get_model_version(name, str(version))
        uri = f"models:/{name}/{version}"
        info = get_model_info(uri)
        signature = info.signature
        if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
            raise ValueError(f"{uri} has no input signature with column names: cannot serve it")
        columns: list[tuple[str, str]] = []
        for spec in signature.inputs.inputs:
            kind = getattr(spec.type, "name", str(spec.type))
            if kind not in (*NUMERIC_TYPES, "string", "boolean"):
                raise ValueError(f"{uri}: input {spec.name!r} has unsupported type {kind}")
            columns.append((str(spec.name), kind))
        pyfunc = (info.flavors or {}).get("python_function", {})
        predict_fn = str(pyfunc.get("predict_fn") or "predict")
        if pyfunc.get("loader_module") != "mlflow.sklearn":
            raise ValueError(f"{uri} is not a scikit-learn model: cannot serve it")
        import mlflow.sklearn

        model = mlflow.sklearn.load_model(uri)
        if not hasattr(model, predict_fn):
            raise ValueError(f"{uri}: the model has no {predict_fn}()")
        service = DEFAULT_FEATURE_SERVICE
        if mv.run_id:
            try:
                tags = client.get_run(mv.run_id).data.tags or {}
                service = tags.get(FEATURE_SERVICE_TAG, service)
            except Exception:  # a deleted run: the default service
                log.warning(
                    "run %s of %s is not readable; feature service %s", mv.run_id, uri, service
                )
        served = cls(
            name,
            int(version),
            str(mv.run_id or ""),
            model,
            columns,
            predict_fn=predict_fn,
            proba_pair=_proba_pair(signature),
            feature_service=service,
        )
        served.warm()
        served.load_seconds = time.perf_counter() - started
        return served

    def warm(self) -> None:
        """Find which columns take missing values, set up the direct path, run a few batches."""
        full = self._sample_rows(missing=False)
        self._raw_scores(full, fast=False)
        empty = self._sample_rows(missing=True)
        try:
            self._raw_scores(empty, fast=False)
        except Exception:
            for i in range(len(self.columns)):
                probe = full.copy()
                probe[:, i] = empty[:, i]
                try:
                    self._raw_scores(probe, fast=False)
                except Exception:
                    self.nullable[i] = False
        self._fast = self._fast_pipeline()
        if self._fast is not None:
            rows = np.vstack([full, *([empty] if all(self.nullable) else [])])
            try:
                same = np.array_equal(
                    self._raw_scores(rows, fast=True), self._raw_scores(rows, fast=False)
                )
            except Exception:
                same = False
            if not same:
                log.info("%s v%s: scoring through pandas frames", self.name, self.version)
                self._fast = None
        for size in (1, 8, 32):
            self.scores(np.repeat(full[:1], size, axis=0))

    def _sample_rows(self, missing: bool) -> np.ndarray:
        """Warm-up rows: plausible values, or every value missing."""
        rows = np.empty((2, len(self.columns)), dtype=object)
        categories = self._categories()
        for i, (column, kind) in enumerate(self.input_columns):
            for r in range(2):
                if missing:
                    rows[r, i] = math.nan if kind in NUMERIC_TYPES else None
                elif kind in INTEGER_TYPES:
                    rows[r, i] = r + 1
                elif kind in NUMERIC_TYPES:
                    rows[r, i] = float(r + 1)
                elif kind == "boolean":
                    rows[r, i] = bool(r)
                else:
                    known = categories.get(column) or ["a"]
                    rows[r, i] = str(known[r % len(known)])
        return rows

    def _categories(self) -> dict[str, list[Any]]:
        """Known categories of one-hot encoded columns (for realistic warm-up rows)."""
        out: dict[str, list[Any]] = {}
        step = _first_step(self.model)
        for _, transformer, cols in getattr(step, "transformers_", []) or []:
            encoder = transformer
            if hasattr(transformer, "steps"):
                encoder = transformer.steps[-1][1]
            cats = getattr(encoder, "categories_", None)
            if cats is None or not isinstance(cols, list):
                continue
            for column, values in zip(cols, cats, strict=False):
                out[str(column)] = [v for v in values if isinstance(v, str)]
        return out

    def _fast_pipeline(self) -> Any:
        """A copy of the model whose column transformer selects columns by position, or None."""
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline

        if not isinstance(self.model, Pipeline):
            return None
        first = self.model.steps[0][1]
        if not isinstance(first, ColumnTransformer) or not hasattr(first, "transformers_"):
            return None
        remapped = []
        for name, transformer, cols in first.transformers_:
            if isinstance(cols, str) or not isinstance(cols, list | tuple | np.ndarray):
                return None
            if not all(isinstance(c, str) and c in self.index for c in cols):
                return None
            remapped.append((name, transformer, [self.index[c] for c in cols]))
        fast = copy.copy(self.model)
        fast.steps = list(self.model.steps)
        ct = copy.copy(first)
        ct.transformers_ = remapped
        if hasattr(ct, "feature_names_in_"):
            del ct.feature_names_in_
        ct.n_features_in_ = len(self.columns)
        fast.steps[0] = (self.model.steps[0][0], ct)
        return fast

    # --- Scoring -------------------------------------------------------------------------
    def _frame(self, rows: np.ndarray) -> Any:
        import pandas as pd

        data = {}
        for i, (column, kind) in enumerate(self.input_columns):
            values = rows[:, i]
            if kind in ("double", "float"):
                data[column] = values.astype("float64" if kind == "double" else "float32")
            elif kind in INTEGER_TYPES:
                data[column] = values.astype("int64" if kind == "long" else "int32")
            elif kind == "boolean":
                data[column] = values.astype(bool)
            else:
                data[column] = values
        return pd.DataFrame(data, columns=self.columns)

    def _raw_scores(self, rows: np.ndarray, fast: bool) -> np.ndarray:
        model = self._fast if fast else self.model
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            output = getattr(model, self.predict_fn)(rows if fast else self._frame(rows))
        out = np.asarray(output, dtype=np.float64)
        first = out[:, 0] if out.ndim == 2 else out
        return 1.0 - first if self.proba_pair else first

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Scores of encoded rows (an object array in signature order): P(default) per row."""
        return self._raw_scores(rows, fast=self._fast is not None)

    # --- Requests ------------------------------------------------------------------------
    def lookup_columns(self, feature_columns: Sequence[str]) -> list[int]:
        """Positions of the inputs a feature service with ``feature_columns`` provides."""
        provided = set(feature_columns)
        return [i for i, c in enumerate(self.columns) if c in provided]

    def encode(self, records: Sequence[dict[str, Any]], lookup_ok: frozenset[int]) -> Encoded:
        """Check and cast request rows; rows naming ``customer_id`` may leave out the inputs at
        positions ``lookup_ok`` (their values are looked up in the online store).

        Raises:
            InputError: a missing or unknown column, or a value of the wrong type.
        """
        n = len(records)
        if n == 0:
            raise InputError("inputs", "the request holds no rows")
        array = np.empty((n, len(self.columns)), dtype=object)
        lookups: list[tuple[int, str, list[int]]] = []
        index = self.index
        for r, row in enumerate(records):
            if not isinstance(row, dict):
                raise InputError(
                    f"row {r}",
                    f"row {r} must be an object of column values, got {type(row).__name__}",
                )
            seen = 0
            customer = None
            for column, value in row.items():
                i = index.get(column)
                if i is None:
                    if column == ENTITY_KEY:
                        if not isinstance(value, str | int) or isinstance(value, bool):
                            raise InputError(
                                column,
                                f"column {column!r} (row {r}) must be a string id, got {value!r}",
                            )
                        customer = str(value)
                        continue
                    raise InputError(
                        column,
                        f"unknown column {column!r} (row {r}); the model takes "
                        f"{', '.join(self.columns)}",
                    )
                array[r, i] = self._coerce(i, value, r)
                seen += 1
            if seen < len(self.columns):
                missing = [i for i, c in enumerate(self.columns) if c not in row]
                if customer is not None and all(i in lookup_ok for i in missing):
                    lookups.append((r, customer, missing))
                else:
                    names = [
                        self.columns[i] for i in missing if customer is None or i not in lookup_ok
                    ]
                    hint = (
                        ""
                        if customer is not None
                        else f" (or name {ENTITY_KEY!r} to look the stored features up)"
                    )
                    raise InputError(
                        names[0], f"missing column(s) {', '.join(names)} in row {r}{hint}"
                    )
        return Encoded(array, lookups)

    def _coerce(self, i: int, value: Any, row: int) -> Any:
        kind = self.types[i]
        column = self.columns[i]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if not self.nullable[i]:
                raise InputError(
                    column,
                    f"column {column!r} (row {row}) is missing (null or NaN), "
                    "which this model cannot take",
                )
            return math.nan if kind in NUMERIC_TYPES else None
        if kind in NUMERIC_TYPES:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(
                    column, f"column {column!r} (row {row}) must be a number, got {value!r}"
                )
            if isinstance(value, float) and math.isinf(value):
                raise InputError(column, f"column {column!r} (row {row}) must be finite")
            if kind in INTEGER_TYPES:
                if value != int(value):
                    raise InputError(
                        column, f"column {column!r} (row {row}) must be an integer, got {value!r}"
                    )
                return int(value)
            return float(value)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise InputError(
                    column, f"column {column!r} (row {row}) must be true or false, got {value!r}"
                )
            return value
        if not isinstance(value, str):
            raise InputError(
                column, f"column {column!r} (row {row}) must be a string, got {value!r}"
            )
        return value

    def fill(self, encoded: Encoded, features: dict[str, dict[str, Any]]) -> list[str]:
        """Put looked-up ``features`` (customer -> column -> value) into ``encoded``; the errors
        (one message per row whose stored value the model cannot take)."""
        errors = []
        for r, customer, missing in encoded.lookups:
            values = features.get(customer) or {}
            for i in missing:
                try:
                    encoded.array[r, i] = self._coerce(i, values.get(self.columns[i]), r)
                except InputError as exc:
                    errors.append(f"customer {customer!r}: stored feature {exc}")
        return errors


def _first_step(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return steps[0][1] if steps else None


def _proba_pair(signature: Any) -> bool:
    """Whether the signature's output is two class probabilities per row (the default)."""
    outputs = signature.outputs
    if outputs is None:
        return True
    specs = outputs.inputs
    if outputs.is_tensor_spec():
        shape = tuple(specs[0].shape)
        return len(shape) == 2 and shape[-1] == 2
    return len(specs) != 1
