"""The one MLflow client per settings, a registry that loads without MLflow or pyspark, and
the Databricks defaults that ``connect`` and ``lakehouse env`` switch on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from lakehouse.models import serialization
from lakehouse.models.tracking import (
    ALLOW_DESERIALIZATION_ENV,
    PYTHONPATH_ENV,
    connect,
    env_vars,
    mlflow_client,
)
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


def test_env_vars_put_the_startup_folder_first_on_pythonpath_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    startup = str(serialization.STARTUP_DIR)
    monkeypatch.delenv(PYTHONPATH_ENV, raising=False)
    assert env_vars(settings)[PYTHONPATH_ENV] == startup
    assert (serialization.STARTUP_DIR / "sitecustomize.py").is_file()

    # The shell's own entries stay, after the platform's; a second eval adds nothing.
    monkeypatch.setenv(PYTHONPATH_ENV, f"{tmp_path}{os.pathsep}")
    first = env_vars(settings)[PYTHONPATH_ENV]
    assert first == f"{startup}{os.pathsep}{tmp_path}"
    monkeypatch.setenv(PYTHONPATH_ENV, first)
    assert env_vars(settings)[PYTHONPATH_ENV] == first


def test_connect_gives_mlflow_sklearn_the_databricks_default(settings: Settings) -> None:
    import mlflow.sklearn

    connect(settings)
    assert serialization.is_applied(mlflow.sklearn)
    assert any(isinstance(f, serialization.ImportHook) for f in sys.meta_path)
    # Once: a second connect wraps nothing twice.
    log_model = mlflow.sklearn.log_model
    connect(settings)
    assert mlflow.sklearn.log_model is log_model
    assert sum(isinstance(f, serialization.ImportHook) for f in sys.meta_path) == 1


@pytest.mark.mlflow
def test_connect_before_mlflow_sklearn_is_imported_applies_on_import(settings: Settings) -> None:
    probe = (
        "import sys\n"
        "import lakehouse\n"
        "from lakehouse.platform.settings import load_settings\n"
        "lakehouse.connect(load_settings())\n"
        "assert 'mlflow.sklearn' not in sys.modules\n"
        "import mlflow.sklearn\n"
        "from lakehouse.models.serialization import is_applied\n"
        "print(is_applied(mlflow.sklearn))\n"
    )
    env = {**os.environ, "LAKEHOUSE_HOME": str(settings.home)}
    env.pop(PYTHONPATH_ENV, None)
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "True"


def test_the_startup_folder_imports_nothing_and_runs_a_hidden_sitecustomize(
    tmp_path: Path,
) -> None:
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text("import builtins\nbuiltins.HIDDEN_RAN = True\n")
    probe = (
        "import builtins, json, sys\n"
        "print(json.dumps({\n"
        "    'hidden': getattr(builtins, 'HIDDEN_RAN', False),\n"
        "    'hooks': [type(f).__name__ for f in sys.meta_path],\n"
        "    'imported': sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "                       ('lakehouse', 'mlflow', 'sklearn', 'pyspark')),\n"
        "}))\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        PYTHONPATH_ENV: serialization.python_path(str(hidden)),
    }
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    seen = json.loads(out.stdout)
    assert seen == {"hidden": True, "hooks": seen["hooks"], "imported": []}
    assert seen["hooks"][0] == "_DeferredHook"
