"""One typed settings object for the whole platform.

Values come from a YAML profile shipped in ``lakehouse/conf/<profile>.yaml``; the profile is
chosen by ``LAKEHOUSE_PROFILE`` (default ``local``). A few environment variables override single
values, so that tests and CI can point everything at a temporary folder:

==========================  ==============================================
``LAKEHOUSE_PROFILE``       profile name (``local``, ``cluster``) or a path to a YAML file
``LAKEHOUSE_HOME``          the root folder of all state
``LAKEHOUSE_SPARK_MASTER``  Spark master URL
``LAKEHOUSE_SHUFFLE_PARTITIONS``  ``spark.sql.shuffle.partitions``
``LAKEHOUSE_ONLINE_STORE``  ``sqlite`` or ``redis``
``LAKEHOUSE_REDIS_URL``     ``host:port`` of Redis
``MLFLOW_TRACKING_URI``     MLflow tracking store (default: SQLite under the root)
``MLFLOW_REGISTRY_URI``     MLflow model registry store (default: the tracking store)
==========================  ==============================================

Secrets (passwords, keys) are never read from the YAML: only from the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).parent / "conf"
PROFILE_ENV = "LAKEHOUSE_PROFILE"
#: Online stores: the platform's SQLite store class, Feast's own SQLite store, Redis.
ONLINE_STORES: tuple[str, ...] = ("sqlite", "feast-sqlite", "redis")
HOME_ENV = "LAKEHOUSE_HOME"


@dataclass(frozen=True)
class Settings:
    """Where the platform keeps its state and how it reaches its services.

    Attributes:
        profile: name of the profile the values came from.
        home: root folder of all state (landing files, tables, checkpoints, stores).
        spark_master: Spark master URL, ``local[*]`` for the embedded default.
        shuffle_partitions: ``spark.sql.shuffle.partitions``; small on a laptop.
        driver_memory: ``spark.driver.memory`` when this process starts the JVM.
        ui_enabled: whether the Spark UI starts.
        tables_uri: root URI of the Delta tables; ``None`` means ``home/tables``.
        mlflow_tracking_uri: MLflow tracking URI; ``None`` means SQLite under ``home``.
        mlflow_registry_uri: MLflow registry URI; ``None`` means the tracking URI.
        experiment: MLflow experiment name.
        model_name: registered model name.
        online_store: Feast online store: ``sqlite`` (Feast's SQLite format through the
            platform's faster store class), ``feast-sqlite`` (Feast's own SQLite store, the
            same file) or ``redis``.
        redis_url: ``host:port`` of Redis when ``online_store`` is ``redis``.
    """

    profile: str
    home: Path
    spark_master: str = "local[*]"
    shuffle_partitions: int = 4
    driver_memory: str = "4g"
    ui_enabled: bool = False
    tables_uri: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_registry_uri: str | None = None
    experiment: str = "credit_risk_model"
    model_name: str = "credit_risk_model"
    online_store: str = "sqlite"
    redis_url: str = "localhost:6379"

    # Derived locations -------------------------------------------------------------------
    @property
    def landing_dir(self) -> Path:
        """Raw daily drops, one sub-folder per entity."""
        return self.home / "landing"

    @property
    def tables_root(self) -> str:
        """Root of the Delta tables: ``<root>/<schema>/<table>``."""
        return self.tables_uri or str(self.home / "tables")

    @property
    def checkpoints_dir(self) -> Path:
        """Structured Streaming checkpoints, one per stream."""
        return self.home / "checkpoints"

    @property
    def warehouse_dir(self) -> Path:
        """``spark.sql.warehouse.dir``; nothing is written there by the platform itself."""
        return self.home / "warehouse"

    @property
    def feast_dir(self) -> Path:
        """Feast registry and SQLite online store."""
        return self.home / "feast"

    @property
    def mlflow_dir(self) -> Path:
        """SQLite tracking store and local artifacts of MLflow."""
        return self.home / "mlflow"

    @property
    def monitoring_metrics_dir(self) -> Path:
        """Prometheus text files of the monitors, one per monitored table: batch refreshes write
        them, the serving process (the one Prometheus scrapes) appends them to ``/metrics``."""
        return self.home / "metrics" / "monitoring"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI in effect."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def registry_uri(self) -> str:
        """The MLflow registry URI in effect."""
        return self.mlflow_registry_uri or self.tracking_uri

    @property
    def sqlite_online_store(self) -> bool:
        """Whether the online store is a SQLite file under ``home`` (either store class)."""
        return self.online_store in ("sqlite", "feast-sqlite")

    def with_home(self, home: Path | str) -> Settings:
        """A copy rooted at another folder (used by tests and benchmarks)."""
        return replace(self, home=Path(home).expanduser().resolve())


def _read_profile(profile: str) -> dict[str, Any]:
    path = Path(profile) if profile.endswith((".yaml", ".yml")) else CONF_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONF_DIR.glob("*.yaml")))
        raise ValueError(f"unknown profile {profile!r}: expected one of {known} or a YAML path")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"profile {path} must be a mapping")
    return data


def load_settings(profile: str | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build the settings from a profile and the environment.

    Args:
        profile: profile name or YAML path; defaults to ``$LAKEHOUSE_PROFILE`` or ``local``.
        env: environment to read overrides from; defaults to ``os.environ``.
    """
    env = dict(os.environ) if env is None else env
    name = profile or env.get(PROFILE_ENV, "local")
    data = _read_profile(name)
    spark = data.get("spark", {}) or {}
    storage = data.get("storage", {}) or {}
    mlf = data.get("mlflow", {}) or {}
    feast = data.get("feast", {}) or {}
    home = Path(env.get(HOME_ENV) or data.get("home") or "~/.lakehouse").expanduser().resolve()
    online_store = env.get("LAKEHOUSE_ONLINE_STORE", feast.get("online_store", "sqlite"))
    if online_store not in ONLINE_STORES:
        raise ValueError(
            f"online_store must be one of {', '.join(ONLINE_STORES)}, got {online_store!r}"
        )
    return Settings(
        profile=Path(name).stem,
        home=home,
        spark_master=env.get("LAKEHOUSE_SPARK_MASTER", spark.get("master", "local[*]")),
        shuffle_partitions=int(
            env.get("LAKEHOUSE_SHUFFLE_PARTITIONS", spark.get("shuffle_partitions", 4))
        ),
        driver_memory=str(spark.get("driver_memory", "4g")),
        ui_enabled=bool(spark.get("ui_enabled", False)),
        tables_uri=env.get("LAKEHOUSE_TABLES_URI", storage.get("tables_uri")),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI", mlf.get("tracking_uri")),
        mlflow_registry_uri=env.get("MLFLOW_REGISTRY_URI", mlf.get("registry_uri")),
        experiment=str(mlf.get("experiment", "credit_risk_model")),
        model_name=str(mlf.get("model_name", "credit_risk_model")),
        online_store=online_store,
        redis_url=env.get("LAKEHOUSE_REDIS_URL", feast.get("redis_url", "localhost:6379")),
    )
