"""Endpoint configurations in the shape of Databricks Model Serving, validated and persisted.

A configuration is the ``config`` of ``POST /api/2.0/serving-endpoints`` (or the body of
``PUT /api/2.0/serving-endpoints/{name}/config``)::

    {"served_entities": [{"name": "champion", "entity_name": "credit_risk_model",
                          "entity_version": "champion", "workload_size": "Small",
                          "scale_to_zero_enabled": false}, ...],
     "traffic_config": {"routes": [{"served_entity_name": "champion",
                                    "traffic_percentage": 90}, ...],
                        "shadow": {"served_entity_name": "candidate", "percentage": 10}}}

``entity_version`` is a version number or an alias (``champion``, ``challenger``), which the
endpoint follows. Routes are integer percentages summing to 100. ``shadow`` is the platform's
extension: the named served entity gets a copy of that share of requests; its answers are
logged, never returned. :func:`parse_config` checks all of it and raises :class:`ConfigError`
naming the field; :class:`EndpointStore` keeps each endpoint in
``$LAKEHOUSE_HOME/serving/endpoints/<name>.json``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Endpoint names, as Databricks allows them: letters, digits, dashes and underscores.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
#: Served entity names: the same characters, dots allowed.
ENTITY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: An alias: starts with a letter (a version is all digits).
ALIAS_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")
WORKLOAD_SIZES: tuple[str, ...] = ("Small", "Medium", "Large")
MAX_SERVED_ENTITIES = 10

#: Fields of Databricks' served entity input that are accepted and kept but do not change
#: serving on one machine.
_IGNORED_ENTITY_FIELDS = frozenset(
    {
        "environment_vars",
        "instance_profile_arn",
        "max_provisioned_throughput",
        "min_provisioned_throughput",
        "max_provisioned_concurrency",
        "min_provisioned_concurrency",
        "provisioned_model_units",
        "workload_type",
        "burst_scaling_enabled",
    }
)
_ENTITY_FIELDS = frozenset(
    {"name", "entity_name", "entity_version", "workload_size", "scale_to_zero_enabled"}
)
#: Top-level fields of a configuration (``name`` is the endpoint's, which the SDK repeats).
_CONFIG_FIELDS = frozenset(
    {"name", "served_entities", "served_models", "traffic_config", "auto_capture_config"}
)


class ConfigError(ValueError):
    """A configuration that cannot be served; ``field`` names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class ServedEntityConfig:
    """One served entity: a registered model at a version or an alias."""

    name: str
    entity_name: str
    entity_version: str
    workload_size: str = "Small"
    scale_to_zero_enabled: bool = False

    @property
    def alias(self) -> str | None:
        """The alias this entity follows, or None for a pinned version."""
        return None if self.entity_version.isdigit() else self.entity_version

    def to_json(self) -> dict[str, Any]:
        """The entity as the configuration gives it."""
        return {
            "name": self.name,
            "entity_name": self.entity_name,
            "entity_version": self.entity_version,
            "workload_size": self.workload_size,
            "scale_to_zero_enabled": self.scale_to_zero_enabled,
        }


@dataclass(frozen=True)
class Shadow:
    """The served entity that receives a copy of ``percentage`` % of requests."""

    served_entity_name: str
    percentage: int

    def to_json(self) -> dict[str, Any]:
        return {"served_entity_name": self.served_entity_name, "percentage": self.percentage}


@dataclass(frozen=True)
class EndpointConfig:
    """Served entities, routes (entity name -> percentage, in order) and the shadow."""

    served_entities: tuple[ServedEntityConfig, ...]
    routes: tuple[tuple[str, int], ...]
    shadow: Shadow | None = None

    def entity(self, name: str) -> ServedEntityConfig:
        """The served entity ``name``."""
        for entity in self.served_entities:
            if entity.name == name:
                return entity
        raise KeyError(name)

    def traffic_json(self) -> dict[str, Any]:
        """``traffic_config`` as Databricks shows it (with the shadow, when there is one)."""
        out: dict[str, Any] = {
            "routes": [
                {"served_entity_name": name, "traffic_percentage": pct} for name, pct in self.routes
            ]
        }
        if self.shadow is not None:
            out["shadow"] = self.shadow.to_json()
        return out

    def to_json(self) -> dict[str, Any]:
        """The configuration as given (aliases kept), for persisting and re-parsing."""
        return {
            "served_entities": [e.to_json() for e in self.served_entities],
            "traffic_config": self.traffic_json(),
        }


def _require(mapping: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(mapping, Mapping):
        raise ConfigError(where, f"must be an object, got {type(mapping).__name__}")
    return mapping


def _percentage(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ConfigError(where, f"must be an integer percentage, got {value!r}")
    if not 0 <= value <= 100:
        raise ConfigError(where, f"must be between 0 and 100, got {value!r}")
    return int(value)


def _entity(raw: Any, where: str, legacy: bool) -> ServedEntityConfig:
    entity = _require(raw, where)
    name_key, version_key = (
        ("model_name", "model_version")
        if legacy
        else (
            "entity_name",
            "entity_version",
        )
    )
    allowed = {
        "name",
        name_key,
        version_key,
        "workload_size",
        "scale_to_zero_enabled",
    } | _IGNORED_ENTITY_FIELDS
    unknown = sorted(set(entity) - allowed)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown field")
    model = entity.get(name_key)
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{where}.{name_key}", "is required: the registered model's name")
    version = entity.get(version_key)
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not (version.isdigit() or ALIAS_PATTERN.match(version)):
        raise ConfigError(
            f"{where}.{version_key}",
            f"must be a version number or an alias such as 'champion', got {version!r}",
        )
    if version.isdigit():
        version = str(int(version))
        if version == "0":
            raise ConfigError(f"{where}.{version_key}", "versions start at 1")
    name = entity.get("name")
    if name is None:
        name = f"{model}-{version}".replace(".", "-")  # Databricks' default name
    if not isinstance(name, str) or not ENTITY_NAME_PATTERN.match(name):
        raise ConfigError(
            f"{where}.name", f"must be letters, digits, '-', '_' or '.', got {name!r}"
        )
    size = entity.get("workload_size", "Small")
    if size not in WORKLOAD_SIZES:
        raise ConfigError(
            f"{where}.workload_size", f"must be one of {', '.join(WORKLOAD_SIZES)}, got {size!r}"
        )
    scale = entity.get("scale_to_zero_enabled", False)
    if not isinstance(scale, bool):
        raise ConfigError(f"{where}.scale_to_zero_enabled", f"must be true or false, got {scale!r}")
    return ServedEntityConfig(name, model, version, size, scale)


def parse_config(raw: Any, where: str = "config") -> EndpointConfig:
    """Validate an endpoint configuration; :class:`ConfigError` names the first bad field."""
    config = _require(raw, where)
    unknown = sorted(set(config) - _CONFIG_FIELDS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown field")
    legacy = "served_entities" not in config and "served_models" in config
    key = "served_models" if legacy else "served_entities"
    items = config.get(key)
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}.served_entities", "must be a non-empty list")
    if len(items) > MAX_SERVED_ENTITIES:
        raise ConfigError(f"{where}.{key}", f"at most {MAX_SERVED_ENTITIES} served entities")
    entities = tuple(_entity(item, f"{where}.{key}[{i}]", legacy) for i, item in enumerate(items))
    names = [e.name for e in entities]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{where}.{key}[{i}].name", f"duplicate served entity {name!r}")
    traffic = config.get("traffic_config")
    routes: list[tuple[str, int]] = []
    shadow: Shadow | None = None
    if traffic is None:
        if len(entities) > 1:
            raise ConfigError(
                f"{where}.traffic_config.routes", "is required with several served entities"
            )
        routes = [(entities[0].name, 100)]
    else:
        traffic = _require(traffic, f"{where}.traffic_config")
        unknown = sorted(set(traffic) - {"routes", "shadow"})
        if unknown:
            raise ConfigError(f"{where}.traffic_config.{unknown[0]}", "unknown field")
        raw_routes = traffic.get("routes")
        if not isinstance(raw_routes, list) or not raw_routes:
            raise ConfigError(f"{where}.traffic_config.routes", "must be a non-empty list")
        for i, raw_route in enumerate(raw_routes):
            at = f"{where}.traffic_config.routes[{i}]"
            route = _require(raw_route, at)
            unknown = sorted(
                set(route) - {"served_entity_name", "served_model_name", "traffic_percentage"}
            )
            if unknown:
                raise ConfigError(f"{at}.{unknown[0]}", "unknown field")
            target = route.get("served_entity_name", route.get("served_model_name"))
            if target not in names:
                raise ConfigError(
                    f"{at}.served_entity_name",
                    f"names no served entity of this config: {target!r} "
                    f"(served entities: {', '.join(names)})",
                )
            if any(target == name for name, _ in routes):
                raise ConfigError(f"{at}.served_entity_name", f"{target!r} is routed twice")
            if "traffic_percentage" not in route:
                raise ConfigError(f"{at}.traffic_percentage", "is required")
            routes.append(
                (str(target), _percentage(route["traffic_percentage"], f"{at}.traffic_percentage"))
            )
        total = sum(pct for _, pct in routes)
        if total != 100:
            raise ConfigError(
                f"{where}.traffic_config.routes", f"traffic_percentage must sum to 100, got {total}"
            )
        raw_shadow = traffic.get("shadow")
        if raw_shadow is not None:
            at = f"{where}.traffic_config.shadow"
            shadow_map = _require(raw_shadow, at)
            unknown = sorted(set(shadow_map) - {"served_entity_name", "percentage"})
            if unknown:
                raise ConfigError(f"{at}.{unknown[0]}", "unknown field")
            target = shadow_map.get("served_entity_name")
            if target not in names:
                raise ConfigError(
                    f"{at}.served_entity_name", f"names no served entity of this config: {target!r}"
                )
            if "percentage" not in shadow_map:
                raise ConfigError(f"{at}.percentage", "is required")
            shadow = Shadow(str(target), _percentage(shadow_map["percentage"], f"{at}.percentage"))
    return EndpointConfig(entities, tuple(routes), shadow)


def check_name(name: Any, where: str = "name") -> str:
    """An endpoint name, or :class:`ConfigError`."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(
            where,
            "must be 1-63 letters, digits, '-' or '_', starting with a letter or digit; "
            f"got {name!r}",
        )
    return name


@dataclass
class StoredEndpoint:
    """What is persisted of an endpoint: its name, configuration, version and times."""

    name: str
    config: EndpointConfig
    config_version: int = 1
    creation_timestamp: int = 0
    last_updated_timestamp: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config.to_json(),
            "config_version": self.config_version,
            "creation_timestamp": self.creation_timestamp,
            "last_updated_timestamp": self.last_updated_timestamp,
            **self.extra,
        }


class EndpointStore:
    """Endpoint configurations as JSON files in one folder, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def save(self, endpoint: StoredEndpoint) -> None:
        """Write ``endpoint`` (a temporary file renamed over the old one)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data = json.dumps(endpoint.to_json(), indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path(endpoint.name))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def load_all(self) -> tuple[list[StoredEndpoint], list[tuple[Path, str]]]:
        """Every stored endpoint, and the files that could not be read with the reason."""
        endpoints: list[StoredEndpoint] = []
        bad: list[tuple[Path, str]] = []
        if not self.folder.is_dir():
            return endpoints, bad
        for path in sorted(self.folder.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                name = check_name(data.get("name"))
                endpoints.append(
                    StoredEndpoint(
                        name=name,
                        config=parse_config(data.get("config")),
                        config_version=int(data.get("config_version", 1)),
                        creation_timestamp=int(data.get("creation_timestamp", 0)),
                        last_updated_timestamp=int(data.get("last_updated_timestamp", 0)),
                    )
                )
            except (OSError, ValueError, AttributeError) as exc:
                bad.append((path, str(exc)))
        return endpoints, bad
