"""The one MLflow client per settings, and a registry that loads without MLflow or pyspark."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest

from lakehouse.models.tracking import ALLOW_DESERIALIZATION_ENV, connect, mlflow_client
from lakehouse.platform.settings import Settings


def _modules_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    imported: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return imported


def test_importing_the_registry_imports_neither_mlflow_nor_pyspark() -> None:
    # MLflow imports pyspark whenever it is installed, so the registry must not import MLflow.
    assert _modules_after("import mlflow", ("pyspark",)) == ["pyspark"]
    assert _modules_after("import lakehouse.models.registry", ("pyspark", "mlflow")) == []


def test_connect_points_mlflow_at_the_settings_and_creates_the_experiment(
    settings: Settings,
) -> None:
    assert connect(settings) == settings.tracking_uri
    assert mlflow.get_tracking_uri() == settings.tracking_uri
    assert mlflow.get_registry_uri() == settings.registry_uri
    experiment = mlflow_client(settings).get_experiment_by_name(settings.experiment)
    assert experiment is not None
    assert experiment.artifact_location == (settings.mlflow_dir / "artifacts").as_uri()


def test_mlflow_client_is_built_once_per_settings_and_points_mlflow_back_at_them(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALLOW_DESERIALIZATION_ENV, raising=False)
    other = settings.with_home(settings.home.parent / "other-home")
    first = mlflow_client(settings)
    assert mlflow.get_tracking_uri() == settings.tracking_uri
    assert first.get_experiment_by_name(settings.experiment) is not None

    second = mlflow_client(other)
    assert second is not first
    assert mlflow.get_tracking_uri() == other.tracking_uri
    assert mlflow.get_registry_uri() == other.registry_uri

    # Cached, yet MLflow's global URIs follow the settings asked for.
    assert mlflow_client(settings) is first
    assert mlflow.get_tracking_uri() == settings.tracking_uri
    assert mlflow.get_registry_uri() == settings.registry_uri
    assert mlflow_client(other) is second
    assert mlflow.get_tracking_uri() == other.tracking_uri
    assert os.environ[ALLOW_DESERIALIZATION_ENV] == "true"


def test_mlflow_client_does_not_reconnect_while_mlflow_points_at_its_stores(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = mlflow_client(settings)
    calls: list[str] = []
    set_tracking_uri = mlflow.set_tracking_uri

    def counting(uri: str) -> None:
        calls.append(uri)
        set_tracking_uri(uri)

    monkeypatch.setattr(mlflow, "set_tracking_uri", counting)
    assert mlflow_client(settings) is client
    assert mlflow_client(settings) is client
    assert calls == []
