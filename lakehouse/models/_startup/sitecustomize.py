"""Run by Python at start-up in a shell where ``lakehouse env`` put this folder on ``PYTHONPATH``.

It gives ``mlflow.sklearn`` the platform's Databricks defaults
(:mod:`lakehouse.models.serialization`) when, and only if, the interpreter imports it, so that a
plain ``import mlflow`` script logs scikit-learn models as it would on Databricks. Until then it
costs one ``sys.meta_path`` entry and imports nothing; an interpreter without the ``lakehouse``
package (another virtual environment in the same shell) is left as it is. A ``sitecustomize``
further down ``sys.path``, which this one hides, runs afterwards.

Standard library only, and nothing here may raise: Python reports, but does not stop at, an
error in ``sitecustomize``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

_FLAVOR_MODULE = "mlflow.sklearn"


class _DeferredHook:
    """Imports :mod:`lakehouse.models.serialization` when ``mlflow.sklearn`` is imported."""

    _lakehouse_finder = True  # skipped by serialization.find_spec

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _FLAVOR_MODULE:
            return None
        try:
            from lakehouse.models import serialization
        except ImportError:  # an interpreter without the platform
            return None
        serialization.install()
        return serialization.find_spec(fullname, path, target)


def _run_next_sitecustomize() -> None:
    """Run the ``sitecustomize`` that this one hides on ``sys.path``, if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if not any(getattr(f, "_lakehouse_finder", False) for f in sys.meta_path):
    sys.meta_path.insert(0, _DeferredHook())
_run_next_sitecustomize()
