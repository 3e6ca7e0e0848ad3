"""Lakehouse: a local emulator of a Databricks-style ML lakehouse.

``lakehouse.connect()`` points MLflow at the platform's tracking store and registry, so code
written for Databricks (``mlflow.set_experiment``, ``mlflow.start_run``,
``mlflow.pyfunc.load_model("models:/credit_risk_model/Production")``) runs unchanged. As on
Databricks, ``mlflow.sklearn.log_model`` then saves scikit-learn models with cloudpickle unless a
call names another format (:mod:`lakehouse.models.serialization`); ``eval "$(lakehouse env)"``
does the same for a shell's scripts, which need not import ``lakehouse``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakehouse.platform.settings import Settings, load_settings

if TYPE_CHECKING:
    from lakehouse.models.tracking import connect

__all__ = ["Settings", "__version__", "connect", "load_settings"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Resolved on first use: every ``import lakehouse.platform...`` runs this file first, and
    # the foundation should not load the models stage.
    if name == "connect":
        from lakehouse.models.tracking import connect

        return connect
    raise AttributeError(f"module 'lakehouse' has no attribute {name!r}")
