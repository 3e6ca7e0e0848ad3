"""Point MLflow at the platform's tracking store and model registry; own the MLflow client.

One call to :func:`connect` makes Databricks-style code run unchanged on this machine::

    import lakehouse, mlflow
    lakehouse.connect()
    mlflow.set_experiment("credit_risk_model")
    with mlflow.start_run():
        mlflow.sklearn.log_model(model, name="model")
    mlflow.pyfunc.load_model("models:/credit_risk_model/Production")

As on Databricks, ``mlflow.sklearn.log_model`` then saves a scikit-learn model with cloudpickle
unless the call names another format (:mod:`lakehouse.models.serialization`); ``lakehouse env``
(:func:`env_vars`) does the same for a shell, ``mlflow`` scripts included.

By default the tracking store and the registry are one SQLite file under ``settings.home``
and artifacts live beside it; ``MLFLOW_TRACKING_URI`` (for example an ``mlflow server``)
overrides both through :class:`~lakehouse.platform.settings.Settings`.

Library code gets its client from :func:`mlflow_client`, which builds one per settings and
keeps MLflow's process-wide URIs pointing at that client's stores.

MLflow is imported inside the functions that use it: importing MLflow imports pyspark, and the
registry (which imports this module) must load without either.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from lakehouse.models import serialization
from lakehouse.platform.settings import CONF_DIR, HOME_ENV, PROFILE_ENV, Settings, load_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

#: MLflow refuses to deserialize any scikit-learn model (skops included) unless this is "true".
#: The platform loads only models logged to its own store (as Databricks does, where MLflow
#: loads them regardless of this variable).
ALLOW_DESERIALIZATION_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
#: ``lakehouse env`` puts :data:`~lakehouse.models.serialization.STARTUP_DIR` first on it.
PYTHONPATH_ENV = "PYTHONPATH"

#: One client per (tracking URI, registry URI, experiment).
_clients: dict[tuple[str, str, str], MlflowClient] = {}
_clients_lock = threading.Lock()


def is_local_store(uri: str) -> bool:
    """Whether ``uri`` is a store on this machine (SQLite or a folder), not a server."""
    return urlparse(uri).scheme in ("sqlite", "file", "")


def artifact_root(settings: Settings) -> str | None:
    """Where new experiments keep artifacts: a folder under ``home`` for a local store.

    ``None`` for a tracking server, which decides (``--default-artifact-root``).
    """
    if not is_local_store(settings.tracking_uri):
        return None
    return (settings.mlflow_dir / "artifacts").as_uri()


def _key(settings: Settings) -> tuple[str, str, str]:
    return (settings.tracking_uri, settings.registry_uri, settings.experiment)


def _cached_client(settings: Settings) -> tuple[MlflowClient, bool]:
    """The settings' client, and whether it was built by this call (nothing is connected)."""
    from mlflow import MlflowClient  # on first use: MLflow imports pyspark

    key = _key(settings)
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            return client, False
        client = MlflowClient(settings.tracking_uri, registry_uri=settings.registry_uri)
        _clients[key] = client
        return client, True


def _ensure_experiment(client: MlflowClient, settings: Settings) -> str:
    """The id of the settings' experiment, created (artifacts under ``home``) when missing."""
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        return str(experiment.experiment_id)
    experiment_id = client.create_experiment(
        settings.experiment, artifact_location=artifact_root(settings)
    )
    log.info("created MLflow experiment %s at %s", settings.experiment, settings.tracking_uri)
    return str(experiment_id)


def _connect(client: MlflowClient, settings: Settings) -> None:
    import mlflow  # on first use: MLflow imports pyspark

    if is_local_store(settings.tracking_uri):
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
    os.environ.setdefault(ALLOW_DESERIALIZATION_ENV, "true")
    serialization.install()
    _ensure_experiment(client, settings)
    mlflow.set_experiment(settings.experiment)


def _points_at(settings: Settings) -> bool:
    """Whether MLflow's process-wide tracking and registry URIs are the settings' stores."""
    import mlflow  # on first use: MLflow imports pyspark

    return (
        mlflow.get_tracking_uri() == settings.tracking_uri
        and mlflow.get_registry_uri() == settings.registry_uri
    )


def connect(settings: Settings | None = None) -> str:
    """Set MLflow's tracking and registry URIs and the experiment; return the tracking URI.

    Creates the experiment (with its artifacts under ``settings.home`` for a local store)
    when it does not exist yet, so a later ``mlflow.set_experiment(name)`` finds it. Allows
    MLflow to load the store's models and gives ``mlflow.sklearn`` Databricks' default format
    (:func:`lakehouse.models.serialization.install`).
    """
    settings = settings or load_settings()
    client, _ = _cached_client(settings)
    _connect(client, settings)
    return settings.tracking_uri


def mlflow_client(settings: Settings) -> MlflowClient:
    """The process's MLflow client on the settings' stores, with MLflow's URIs pointing there.

    The client is built once per tracking URI, registry URI and experiment. MLflow's global
    URIs (which ``mlflow.start_run`` and ``models:/`` URIs use) are set, and the experiment
    created, when the client is built and whenever they point at other stores since.
    """
    client, built = _cached_client(settings)
    if built or not _points_at(settings):
        _connect(client, settings)
    return client


def experiment_id(settings: Settings) -> str:
    """The id of the settings' experiment, created when missing."""
    return _ensure_experiment(mlflow_client(settings), settings)


def env_vars(settings: Settings) -> dict[str, str]:
    """Environment variables that point a shell (``mlflow`` CLI, scripts) at this platform.

    What :func:`connect` does in a process, these do for every Python process of the shell:
    MLflow's URIs and experiment, loading allowed, and (through ``PYTHONPATH``, which keeps
    the shell's own entries after the platform's) Databricks' default format for scikit-learn
    models (:mod:`lakehouse.models.serialization`).
    """
    env = {HOME_ENV: str(settings.home)}
    if (CONF_DIR / f"{settings.profile}.yaml").is_file():
        env[PROFILE_ENV] = settings.profile
    return {
        **env,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.registry_uri,
        "MLFLOW_EXPERIMENT_NAME": settings.experiment,
        ALLOW_DESERIALIZATION_ENV: "true",
        PYTHONPATH_ENV: serialization.python_path(os.environ.get(PYTHONPATH_ENV)),
    }
