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
``LAKEHOUSE_FEAST_REGISTRY``  SQLAlchemy URL of Feast's SQL registry (default: a file)
``MLFLOW_TRACKING_URI``     MLflow tracking store (default: SQLite under the root)
``MLFLOW_REGISTRY_URI``     MLflow model registry store (default: the tracking store)
``LAKEHOUSE_TABLES_URI``    root of the Delta tables (``s3a://bucket/prefix`` on an object store)
``LAKEHOUSE_CHECKPOINTS_URI``  root of the streams' checkpoints (default: a folder under the root)
``LAKEHOUSE_S3_ENDPOINT``   URL of an S3-compatible store (unset: Amazon S3)
``LAKEHOUSE_S3_PATH_STYLE`` ``true`` or ``false``: bucket in the path instead of the host name
``LAKEHOUSE_S3_REGION``     the store's region
``LAKEHOUSE_S3_CONDITIONAL_WRITES``  ``true`` or ``false``: see :class:`ObjectStore`
``AWS_ACCESS_KEY_ID``       the object store's access key (secret: environment only)
``AWS_SECRET_ACCESS_KEY``   the object store's secret key (secret: environment only)
==========================  ==============================================

Secrets (passwords, keys) are never read from the YAML: only from the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).parent / "conf"
PROFILE_ENV = "LAKEHOUSE_PROFILE"
#: Online stores: the platform's SQLite store class, Feast's own SQLite store, Redis.
ONLINE_STORES: tuple[str, ...] = ("sqlite", "feast-sqlite", "redis")
HOME_ENV = "LAKEHOUSE_HOME"
#: Characters of a Hadoop glob pattern, refused in the state folder's path.
GLOB_CHARACTERS = "*?[]{}"
#: The URI schemes of the object stores the platform reaches through Hadoop's S3A connector.
OBJECT_STORE_SCHEMES: tuple[str, ...] = ("s3a",)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class ObjectStore:
    """How Spark reaches an S3-compatible object store through ``s3a://`` URIs.

    Attributes:
        endpoint: URL of the store (``http://localhost:8333``); ``None`` means Amazon S3.
            An ``http://`` URL turns TLS off.
        path_style_access: address buckets as ``<endpoint>/<bucket>`` rather than as
            ``<bucket>.<host>``, which S3-compatible servers on one host name need.
        region: the region the store answers for (S3-compatible servers accept any).
        conditional_writes: the store honours ``If-None-Match: *`` on ``PutObject``, so a
            Delta commit can be created only if absent, from any number of applications at
            once (see :func:`lakehouse.platform.spark.object_store_conf`). Without it Delta's
            default LogStore for S3 serializes the commits of one application only.
        access_key: access key id, from ``AWS_ACCESS_KEY_ID`` only.
        secret_key: secret access key, from ``AWS_SECRET_ACCESS_KEY`` only (never shown).
    """

    endpoint: str | None = None
    path_style_access: bool = True
    region: str = "us-east-1"
    conditional_writes: bool = True
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)

    @property
    def ssl_enabled(self) -> bool:
        """Whether the connection uses TLS: only a plain ``http://`` endpoint turns it off."""
        return not (self.endpoint or "").lower().startswith("http://")

    @property
    def has_credentials(self) -> bool:
        """Whether both keys came from the environment (else AWS's default provider chain)."""
        return bool(self.access_key and self.secret_key)


def is_object_store_uri(uri: str | None) -> bool:
    """Whether ``uri`` names a location on an object store (``s3a://bucket/...``)."""
    return bool(uri) and str(uri).split("://", 1)[0].lower() in OBJECT_STORE_SCHEMES


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
        checkpoints_uri: root URI of the pipeline's and the scoring stream's checkpoints
            (``s3a://bucket/checkpoints``, where every machine of a cluster reaches them);
            ``None`` means :attr:`checkpoints_dir`, which the workers of a cluster on this
            machine share with the driver, but those on other machines do not.
        mlflow_tracking_uri: MLflow tracking URI; ``None`` means SQLite under ``home``.
        mlflow_registry_uri: MLflow registry URI; ``None`` means the tracking URI.
        experiment: MLflow experiment name.
        model_name: registered model name.
        online_store: Feast online store: ``sqlite`` (Feast's SQLite format through the
            platform's faster store class), ``feast-sqlite`` (Feast's own SQLite store, the
            same file) or ``redis``.
        redis_url: ``host:port`` of Redis when ``online_store`` is ``redis``.
        feast_registry: SQLAlchemy URL of a Feast SQL registry shared by every process and
            machine (``postgresql+psycopg2://user@host:5432/feast``; the password, if any,
            from the environment); ``None`` means the file registry under ``feast_dir``.
        object_store: how ``s3a://`` locations are reached (tables on an object store).
    """

    profile: str
    home: Path
    spark_master: str = "local[*]"
    shuffle_partitions: int = 4
    driver_memory: str = "4g"
    ui_enabled: bool = False
    tables_uri: str | None = None
    checkpoints_uri: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_registry_uri: str | None = None
    experiment: str = "credit_risk_model"
    model_name: str = "credit_risk_model"
    online_store: str = "sqlite"
    redis_url: str = "localhost:6379"
    feast_registry: str | None = None
    object_store: ObjectStore = field(default_factory=ObjectStore)

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
    def tables_on_object_store(self) -> bool:
        """Whether the tables live on an object store (``tables_uri`` is ``s3a://...``)."""
        return is_object_store_uri(self.tables_uri)

    @property
    def checkpoints_dir(self) -> Path:
        """The local folder of Structured Streaming checkpoints, one per stream."""
        return self.home / "checkpoints"

    def checkpoint_location(self, *parts: str) -> str:
        """One stream's checkpoint: ``<checkpoints_uri or checkpoints_dir>/<parts...>``."""
        root = (self.checkpoints_uri or str(self.checkpoints_dir)).rstrip("/")
        return "/".join([root, *parts])

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


def _flag(value: object, name: str) -> bool:
    """A YAML boolean or an environment string (``true``/``false``, ``1``/``0``...)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _object_store(storage: dict[str, Any], env: dict[str, str]) -> ObjectStore:
    """The object-store settings: the profile's ``storage.object_store``, then the environment."""
    conf = storage.get("object_store", {}) or {}
    default = ObjectStore()
    return ObjectStore(
        endpoint=env.get("LAKEHOUSE_S3_ENDPOINT", conf.get("endpoint")) or None,
        path_style_access=_flag(
            env.get("LAKEHOUSE_S3_PATH_STYLE", conf.get("path_style_access", True)),
            "path_style_access",
        ),
        region=str(env.get("LAKEHOUSE_S3_REGION", conf.get("region")) or default.region),
        conditional_writes=_flag(
            env.get("LAKEHOUSE_S3_CONDITIONAL_WRITES", conf.get("conditional_writes", True)),
            "conditional_writes",
        ),
        access_key=env.get("AWS_ACCESS_KEY_ID") or None,
        secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
    )


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
    globbed = sorted(set(str(home)) & set(GLOB_CHARACTERS))
    if globbed:
        # Spark's file sources read the landing folder as a Hadoop glob: under a home named
        # "run[2]" ingestion would match no file and report nothing ingested.
        raise ValueError(
            f"the state folder {home} (${HOME_ENV}) contains {', '.join(globbed)}, which Spark "
            f"reads as a file pattern; choose a folder without any of {' '.join(GLOB_CHARACTERS)}"
        )
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
        checkpoints_uri=env.get("LAKEHOUSE_CHECKPOINTS_URI", storage.get("checkpoints_uri"))
        or None,
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI", mlf.get("tracking_uri")),
        mlflow_registry_uri=env.get("MLFLOW_REGISTRY_URI", mlf.get("registry_uri")),
        experiment=str(mlf.get("experiment", "credit_risk_model")),
        model_name=str(mlf.get("model_name", "credit_risk_model")),
        online_store=online_store,
        redis_url=env.get("LAKEHOUSE_REDIS_URL", feast.get("redis_url", "localhost:6379")),
        feast_registry=env.get("LAKEHOUSE_FEAST_REGISTRY", feast.get("registry")) or None,
        object_store=_object_store(storage, env),
    )
