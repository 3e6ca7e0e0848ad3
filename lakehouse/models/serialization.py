"""Databricks' default for scikit-learn models: ``mlflow.sklearn`` saves them with cloudpickle.

MLflow picks the format of a scikit-learn model that its caller does not name in
``mlflow.sklearn._get_default_serialization_format``: cloudpickle on Databricks (its runtime,
or a ``databricks`` tracking URI), skops everywhere else. No environment variable or setting
selects it. skops 0.16 no longer trusts ``sklearn.tree._tree.Tree`` (random forests, decision
trees, gradient boosting) nor the ``TreePredictor`` of histogram gradient boosting, so code
straight from a Databricks guide::

    with mlflow.start_run():
        model = RandomForestClassifier(n_estimators=100).fit(X_train, y_train)
        mlflow.sklearn.log_model(model, "rf_model")

fails here with ``UntrustedTypesFoundException`` while it works on Databricks. This module makes
MLflow choose as on Databricks: :func:`apply` wraps ``mlflow.sklearn.save_model`` and
``mlflow.sklearn.log_model`` so that a call naming neither ``serialization_format`` nor
``skops_trusted_types`` gets ``serialization_format="cloudpickle"``. A call naming either is
left as it is: ``serialization_format="skops"`` still gives skops, and ``skops_trusted_types``
(which only a skops model uses, as the platform's training does) keeps skops too. The model
artifact is then what Databricks writes (``serialization_format: cloudpickle`` in its
``MLmodel``, ``cloudpickle`` in its requirements) and loads in any process where
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is ``true``, with or without this module.

Two ways switch it on, both before ``mlflow.sklearn`` is first imported or after:

* :func:`lakehouse.connect` calls :func:`install`;
* ``lakehouse env`` exports ``PYTHONPATH`` with :data:`STARTUP_DIR`, whose ``sitecustomize``
  Python runs at the start of every interpreter: it installs the same import hook, so a plain
  ``import mlflow`` script in that shell behaves the same without importing ``lakehouse``.

The hook costs nothing until ``mlflow.sklearn`` is imported. This module imports only the
standard library (the registry, which imports the tracking module, must load without MLflow).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

#: The module whose defaults this module sets.
FLAVOR_MODULE = "mlflow.sklearn"
#: The format MLflow picks on Databricks (``mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE``).
DEFAULT_FORMAT = "cloudpickle"
#: The functions whose defaults change; ``log_model`` calls ``save_model`` with a format set.
WRAPPED_FUNCTIONS: tuple[str, ...] = ("save_model", "log_model")
#: The folder that ``lakehouse env`` puts on ``PYTHONPATH``: it holds only ``sitecustomize.py``.
STARTUP_DIR = Path(__file__).resolve().parent / "_startup"

_WRAPPED_MARK = "__lakehouse_databricks_default__"
_FINDER_MARK = "_lakehouse_finder"
_lock = threading.Lock()


def wants_default(arguments: dict[str, Any]) -> bool:
    """Whether a call's bound arguments leave the format to the default.

    ``skops_trusted_types`` only matters to a skops model, so a caller naming it chose skops.
    """
    return (
        arguments.get("serialization_format") is None
        and arguments.get("skops_trusted_types") is None
    )


def _with_default(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with ``serialization_format`` defaulting to :data:`DEFAULT_FORMAT`."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind_partial(*args, **kwargs)
        except TypeError:  # let MLflow report the bad call
            return function(*args, **kwargs)
        if not wants_default(bound.arguments):
            return function(*args, **kwargs)
        bound.arguments["serialization_format"] = DEFAULT_FORMAT
        return function(*bound.args, **bound.kwargs)

    setattr(wrapper, _WRAPPED_MARK, True)
    return wrapper


def is_applied(module: ModuleType) -> bool:
    """Whether ``module`` (``mlflow.sklearn``) has the Databricks default."""
    return all(
        getattr(getattr(module, name, None), _WRAPPED_MARK, False) for name in WRAPPED_FUNCTIONS
    )


def apply(module: ModuleType) -> None:
    """Give ``module`` (``mlflow.sklearn``) the Databricks default; idempotent.

    An MLflow whose functions lack a ``serialization_format`` parameter is left alone.
    """
    with _lock:
        for name in WRAPPED_FUNCTIONS:
            function = getattr(module, name, None)
            if function is None or getattr(function, _WRAPPED_MARK, False):
                continue
            if "serialization_format" not in inspect.signature(function).parameters:
                log.warning("%s.%s has no serialization_format; left as it is", module, name)
                continue
            setattr(module, name, _with_default(function))


class _ApplyingLoader(importlib.abc.Loader):
    """Runs the real loader of ``mlflow.sklearn``, then :func:`apply`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module's own loader, not this one, for anything that asks it later (resources).
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        apply(module)


def find_spec(
    fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
) -> importlib.machinery.ModuleSpec | None:
    """The spec of ``mlflow.sklearn`` from the other finders, with a loader that applies."""
    if fullname != FLAVOR_MODULE:
        return None
    for finder in list(sys.meta_path):
        if getattr(finder, _FINDER_MARK, False) or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(fullname, path, target)
        if spec is None:
            continue
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _ApplyingLoader(spec.loader)
        return spec
    return None


class ImportHook(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that gives ``mlflow.sklearn`` the default once imported."""

    _lakehouse_finder = True

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        return find_spec(fullname, path, target)


def install() -> None:
    """Give ``mlflow.sklearn`` the Databricks default in this process, now or once imported."""
    with _lock:
        if not any(isinstance(f, ImportHook) for f in sys.meta_path):
            sys.meta_path.insert(0, ImportHook())
    module = sys.modules.get(FLAVOR_MODULE)
    if module is not None:
        apply(module)


def python_path(existing: str | None) -> str:
    """``PYTHONPATH`` with :data:`STARTUP_DIR` first, the entries of ``existing`` after it."""
    entries = [str(STARTUP_DIR)]
    for entry in (existing or "").split(os.pathsep):
        if entry and entry not in entries:
            entries.append(entry)
    return os.pathsep.join(entries)
