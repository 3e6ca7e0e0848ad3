"""Point MLflow at the platform's tracking store and model registry.

One call to :func:`connect` makes Databricks-style code run unchanged on this machine::

    import lakehouse, mlflow
    lakehouse.connect()
    mlflow.set_experiment("credit_risk_model")
    with mlflow.start_run():
        mlflow.sklearn.log_model(model, name="model")
    mlflow.pyfunc.load_model("models:/credit_risk_model/Production")

By default the tracking store and the registry are one SQLite file under ``settings.home``
and artifacts live beside it; ``MLFLOW_TRACKING_URI`` (for example an ``mlflow server``)
overrides both through :class:`~lakehouse.platform.settings.Settings`.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlparse

import mlflow
from mlflow.tracking import MlflowClient

from lakehouse.platform.settings import CONF_DIR, HOME_ENV, PROFILE_ENV, Settings, load_settings

log = logging.getLogger(__name__)

#: MLflow refuses to deserialize any scikit-learn model (skops included) unless this is "true".
#: The platform loads only the models it trained and registered itself.
ALLOW_DESERIALIZATION_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


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


def connect(settings: Settings | None = None) -> str:
    """Set MLflow's tracking and registry URIs and the experiment; return the tracking URI.

    Creates the experiment (with its artifacts under ``settings.home`` for a local store)
    when it does not exist yet, so a later ``mlflow.set_experiment(name)`` finds it.
    """
    settings = settings or load_settings()
    uri = settings.tracking_uri
    if is_local_store(uri):
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(settings.registry_uri)
    os.environ.setdefault(ALLOW_DESERIALIZATION_ENV, "true")
    client = MlflowClient(tracking_uri=uri, registry_uri=settings.registry_uri)
    if client.get_experiment_by_name(settings.experiment) is None:
        client.create_experiment(settings.experiment, artifact_location=artifact_root(settings))
        log.info("created MLflow experiment %s at %s", settings.experiment, uri)
    mlflow.set_experiment(settings.experiment)
    return uri


def env_vars(settings: Settings) -> dict[str, str]:
    """Environment variables that point a shell (``mlflow`` CLI, scripts) at this platform."""
    env = {HOME_ENV: str(settings.home)}
    if (CONF_DIR / f"{settings.profile}.yaml").is_file():
        env[PROFILE_ENV] = settings.profile
    return {
        **env,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.registry_uri,
        "MLFLOW_EXPERIMENT_NAME": settings.experiment,
        ALLOW_DESERIALIZATION_ENV: "true",
    }
