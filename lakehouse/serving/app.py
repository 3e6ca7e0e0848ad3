"""The HTTP interface: Databricks Model Serving's REST shape as a lean ASGI application.

Routes:

=========================================================  =========================================
``POST /api/2.0/serving-endpoints``                        create an endpoint (loads in background)
``GET /api/2.0/serving-endpoints``                         list endpoints
``GET /api/2.0/serving-endpoints/{name}``                  one endpoint, with its state
``PUT /api/2.0/serving-endpoints/{name}/config``           replace the configuration
``DELETE /api/2.0/serving-endpoints/{name}``               delete an endpoint
``POST /serving-endpoints/{name}/invocations``             score (MLflow scoring-server formats)
``GET /serving-endpoints/{name}/metrics``                  Prometheus text of one endpoint
``GET /metrics``                                           Prometheus text of every endpoint and
                                                           of the monitors' gauges files
``GET /health``                                            liveness
=========================================================  =========================================

Errors have MLflow's shape, ``{"error_code": ..., "message": ...}``. With
``LAKEHOUSE_SERVING_TOKEN`` set, every route (``/health`` and ``/metrics`` included, as on
Databricks, where nothing answers without a token) answers 401 without
``Authorization: Bearer <token>`` and 403 with another token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from lakehouse.serving.config import ConfigError, StoredEndpoint, check_name, parse_config
from lakehouse.serving.endpoints import (
    IN_PROGRESS,
    NOT_READY,
    READY,
    Endpoint,
    EntityRuntime,
    ScoringFailed,
    ServingState,
    now_ms,
)
from lakehouse.serving.metrics import CONTENT_TYPE, TextFiles
from lakehouse.serving.model import InputError
from lakehouse.serving.spool import inference_log_enabled, record, seal_orphans

log = logging.getLogger(__name__)

TOKEN_ENV = "LAKEHOUSE_SERVING_TOKEN"
MAX_BODY_ENV = "LAKEHOUSE_SERVING_MAX_BODY_BYTES"
#: Databricks' limit on a request payload.
DEFAULT_MAX_BODY = 16 * 1024 * 1024
#: The input fields of MLflow's scoring server; a request names exactly one.
INPUT_FORMATS: tuple[str, ...] = ("dataframe_split", "dataframe_records", "instances", "inputs")
#: Other top-level fields an invocation may carry.
_OPTIONAL_FIELDS = frozenset({"client_request_id", "params"})
ENTITY_HEADER = b"x-lakehouse-served-entity"
VERSION_HEADER = b"x-lakehouse-model-version"
API = "/api/2.0/serving-endpoints"

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class HttpError(Exception):
    """An answer other than 200, in MLflow's error shape."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code

    def body(self) -> bytes:
        return json.dumps({"error_code": self.error_code, "message": str(self)}).encode()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# --- Request payloads --------------------------------------------------------------------------
def records_of(payload: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The rows of an invocation (column -> value per row) and its ``client_request_id``.

    Raises:
        InputError: the body is not one of MLflow's input formats.
    """
    if not isinstance(payload, dict):
        raise InputError("body", "the request body must be a JSON object")
    formats = [k for k in INPUT_FORMATS if k in payload]
    unknown = sorted(k for k in payload if k not in INPUT_FORMATS and k not in _OPTIONAL_FIELDS)
    if unknown:
        raise InputError(
            unknown[0],
            f"unknown field {unknown[0]!r}; the body takes one of {', '.join(INPUT_FORMATS)}"
            " and optionally client_request_id",
        )
    if len(formats) != 1:
        raise InputError(
            "body",
            f"the body must hold exactly one of {', '.join(INPUT_FORMATS)}, got "
            f"{', '.join(formats) or 'none'}",
        )
    client_id = payload.get("client_request_id")
    if client_id is not None and not isinstance(client_id, str):
        raise InputError("client_request_id", "client_request_id must be a string")
    kind = formats[0]
    data = payload[kind]
    if kind == "dataframe_split":
        if not isinstance(data, dict):
            raise InputError(kind, "dataframe_split must be an object with columns and data")
        columns, rows = data.get("columns"), data.get("data")
        extra = sorted(set(data) - {"columns", "data", "index"})
        if extra:
            raise InputError(f"dataframe_split.{extra[0]}", f"unknown field {extra[0]!r}")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise InputError("dataframe_split.columns", "columns must be a list of names")
        if len(set(columns)) != len(columns):
            raise InputError("dataframe_split.columns", "columns repeat a name")
        if not isinstance(rows, list):
            raise InputError("dataframe_split.data", "data must be a list of rows")
        out = []
        for r, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(columns):
                raise InputError(
                    "dataframe_split.data",
                    f"row {r} of data must be a list of {len(columns)} values",
                )
            out.append(dict(zip(columns, row, strict=True)))
        return out, client_id
    if kind == "inputs" and isinstance(data, dict):
        return _columnar(data, kind), client_id
    if kind == "instances" and isinstance(data, dict):
        return _columnar(data, kind), client_id
    if not isinstance(data, list):
        raise InputError(kind, f"{kind} must be a list of rows (objects of column values)")
    for r, row in enumerate(data):
        if not isinstance(row, dict):
            raise InputError(
                kind,
                f"row {r} of {kind} must be an object of column values, got {type(row).__name__}",
            )
    return data, client_id


def _columnar(data: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Rows of a column -> values (or column -> value, one row) mapping."""
    if not data:
        return []
    lists = {k: v for k, v in data.items() if isinstance(v, list)}
    if not lists:
        return [dict(data)]
    if len(lists) != len(data):
        raise InputError(kind, f"{kind}: every column must be a list of values, or none")
    sizes = {len(v) for v in lists.values()}
    if len(sizes) != 1:
        raise InputError(kind, f"{kind}: the columns have different lengths")
    columns = list(lists)
    return [dict(zip(columns, values, strict=True)) for values in zip(*lists.values(), strict=True)]


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, "BAD_REQUEST", f"the request body is not valid JSON: {exc}") from None


# --- Endpoint JSON -------------------------------------------------------------------------------
def entity_json(runtime: EntityRuntime, endpoint: Endpoint) -> dict[str, Any]:
    """A served entity as Databricks shows it: the version it serves now, and its state."""
    config = runtime.config
    out = config.to_json()
    version = runtime.version
    if version is not None:
        out["entity_version"] = str(version)
    if config.alias is not None:
        out["entity_alias"] = config.alias
    out["creation_timestamp"] = runtime.creation_timestamp
    out["state"] = {"deployment": runtime.state}
    if runtime.message:
        out["state"]["deployment_state_message"] = runtime.message
    return out


def endpoint_json(endpoint: Endpoint, detailed: bool = True) -> dict[str, Any]:
    """``ServingEndpointDetailed`` (or, for the list, ``ServingEndpoint``)."""
    stored = endpoint.stored
    out: dict[str, Any] = {
        "name": endpoint.name,
        "id": endpoint.name,
        "creator": "lakehouse",
        "creation_timestamp": stored.creation_timestamp,
        "last_updated_timestamp": stored.last_updated_timestamp,
        "state": {
            "ready": READY if endpoint.ready else NOT_READY,
            "config_update": endpoint.config_update,
        },
    }
    if endpoint.message:
        out["state"]["update_message"] = endpoint.message
    if endpoint.active is not None:
        entities = [
            entity_json(endpoint.entities[e.name], endpoint)
            for e in endpoint.active.served_entities
        ]
        if detailed:
            out["config"] = {
                "config_version": stored.config_version,
                "served_entities": entities,
                "traffic_config": endpoint.active.traffic_json(),
            }
        else:
            out["config"] = {
                "served_entities": [
                    {k: e[k] for k in ("name", "entity_name", "entity_version")} for e in entities
                ]
            }
    if detailed and endpoint.pending is not None and endpoint.config_update == IN_PROGRESS:
        out["pending_config"] = {
            "config_version": stored.config_version + (1 if endpoint.ready else 0),
            "start_time": endpoint.pending_start,
            "served_entities": [
                entity_json(endpoint.pending_entities[e.name], endpoint)
                for e in endpoint.pending.served_entities
            ],
            "traffic_config": endpoint.pending.traffic_json(),
        }
    if detailed:
        out["endpoint_url"] = f"/serving-endpoints/{endpoint.name}/invocations"
    return out


# --- The application -----------------------------------------------------------------------------
class ServingApp:
    """The ASGI application of one server."""

    def __init__(
        self,
        state: ServingState,
        token: str | None = None,
        max_body: int | None = None,
        inference_log: bool | None = None,
    ) -> None:
        """Serve ``state``'s endpoints; the arguments left out come from the environment.

        Raises:
            ValueError: an environment variable of the server has a value it cannot take.
        """
        self.state = state
        self.metrics = state.metrics
        #: Metrics other processes leave for this server to expose (the monitors' gauges).
        self.textfiles = TextFiles(state.settings.monitoring_metrics_dir)
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        raw_max = os.environ.get(MAX_BODY_ENV)
        if max_body is None and raw_max:
            try:
                max_body = int(raw_max)
            except ValueError:
                max_body = 0
            if max_body <= 0:
                raise ValueError(f"{MAX_BODY_ENV} must be a number of bytes > 0, got {raw_max!r}")
        self.max_body = max_body or DEFAULT_MAX_BODY
        #: Whether each request's record is spooled for the inference log.
        self.inference_log = inference_log_enabled() if inference_log is None else inference_log

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        try:
            self._authorize(scope)
            if (
                method == "POST"
                and path.startswith("/serving-endpoints/")
                and path.endswith("/invocations")
            ):
                name = path[len("/serving-endpoints/") : -len("/invocations")]
                await self._invoke(name, scope, receive, send, started)
                return
            status, body, content_type = await self._dispatch(method, path, scope, receive)
        except HttpError as exc:
            status, body, content_type = exc.status, exc.body(), b"application/json"
        except Exception as exc:  # answer, never crash the server
            log.exception("%s %s failed", method, path)
            err = HttpError(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
            status, body, content_type = 500, err.body(), b"application/json"
        await _respond(send, status, body, content_type)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    sealed = seal_orphans(self.state.settings.landing_dir)
                    if sealed:
                        log.info("sealed %d inference log file(s) of stopped servers", len(sealed))
                    self.state.start(asyncio.get_running_loop())
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.state.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _authorize(self, scope: dict[str, Any]) -> None:
        if self.token is None:
            return
        header = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                header = value.decode("latin-1")
                break
        if not header:
            raise HttpError(401, "UNAUTHENTICATED", "missing Authorization: Bearer <token>")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HttpError(
                401, "UNAUTHENTICATED", "the Authorization header must be Bearer <token>"
            )
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise HttpError(403, "PERMISSION_DENIED", "invalid access token")

    async def _body(self, scope: dict[str, Any], receive: Receive) -> bytes:
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise HttpError(400, "BAD_REQUEST", "bad Content-Length") from None
                if declared > self.max_body:
                    raise HttpError(
                        413, "BAD_REQUEST", f"the request body exceeds {self.max_body} bytes"
                    )
        chunks = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise HttpError(
                    413, "BAD_REQUEST", f"the request body exceeds {self.max_body} bytes"
                )
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)

    # --- Management routes ---------------------------------------------------------------
    async def _dispatch(
        self, method: str, path: str, scope: dict[str, Any], receive: Receive
    ) -> tuple[int, bytes, bytes]:
        state = self.state
        json_type = b"application/json"
        if path == "/health" and method == "GET":
            return 200, b'{"status":"ok"}', json_type
        if path == "/metrics" and method == "GET":
            body = self.metrics.render() + self.textfiles.render()
            return 200, body, CONTENT_TYPE.encode()
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["serving-endpoints"] and len(parts) == 3 and parts[2] == "metrics":
            parts = ["api", "2.0", *parts]
        if parts[:3] != ["api", "2.0", "serving-endpoints"]:
            raise HttpError(404, "ENDPOINT_NOT_FOUND", f"no route {method} {path}")
        rest = parts[3:]
        if not rest:
            if method == "GET":
                endpoints = [endpoint_json(e, detailed=False) for e in state.endpoints.values()]
                return 200, _json({"endpoints": endpoints}), json_type
            if method == "POST":
                payload = _parse_json(await self._body(scope, receive))
                return 200, _json(await self._create(payload)), json_type
            raise HttpError(405, "BAD_REQUEST", f"{method} is not allowed on {path}")
        endpoint = state.endpoints.get(rest[0])
        if endpoint is None:
            raise HttpError(
                404, "RESOURCE_DOES_NOT_EXIST", f"serving endpoint {rest[0]!r} does not exist"
            )
        if len(rest) == 1:
            if method == "GET":
                return 200, _json(endpoint_json(endpoint)), json_type
            if method == "DELETE":
                state.delete(endpoint.name)
                return 200, b"{}", json_type
        elif len(rest) == 2 and rest[1] == "config" and method == "PUT":
            payload = _parse_json(await self._body(scope, receive))
            return 200, _json(self._update(endpoint, payload)), json_type
        elif len(rest) == 2 and rest[1] == "metrics" and method == "GET":
            return 200, self.metrics.render(endpoint.name), CONTENT_TYPE.encode()
        raise HttpError(404, "ENDPOINT_NOT_FOUND", f"no route {method} {path}")

    async def _create(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise HttpError(400, "BAD_REQUEST", "the request body must be a JSON object")
        try:
            name = check_name(payload.get("name"))
            if "config" not in payload:
                raise ConfigError("config", "is required")
            config = parse_config(payload["config"])
        except ConfigError as exc:
            raise HttpError(400, "INVALID_PARAMETER_VALUE", str(exc)) from None
        if name in self.state.endpoints:
            raise HttpError(
                409, "RESOURCE_ALREADY_EXISTS", f"serving endpoint {name!r} already exists"
            )
        await self._check_entities(config)
        if name in self.state.endpoints:  # created meanwhile
            raise HttpError(
                409, "RESOURCE_ALREADY_EXISTS", f"serving endpoint {name!r} already exists"
            )
        stamp = now_ms()
        stored = StoredEndpoint(name, config, 1, stamp, stamp)
        await self.state.run_blocking(self.state.store.save, stored)
        endpoint = self.state.add(stored)
        return endpoint_json(endpoint)

    async def _check_entities(self, config: Any) -> None:
        """400 naming the entity whose model, version or alias the registry lacks."""
        for i, entity in enumerate(config.served_entities):
            try:
                await self.state.run_blocking(self.state.resolve, entity)
            except LookupError as exc:
                raise HttpError(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    f"config.served_entities[{i}].entity_version: {exc}",
                ) from None

    def _update(self, endpoint: Endpoint, payload: Any) -> dict[str, Any]:
        try:
            config = parse_config(payload, where="config")
        except ConfigError as exc:
            raise HttpError(400, "INVALID_PARAMETER_VALUE", str(exc)) from None
        if endpoint.config_update == IN_PROGRESS:
            raise HttpError(
                409,
                "RESOURCE_CONFLICT",
                f"serving endpoint {endpoint.name!r} has a configuration update in progress",
            )
        self.state.begin_update(endpoint, config)
        return endpoint_json(endpoint)

    # --- Invocations ---------------------------------------------------------------------
    async def _invoke(
        self, name: str, scope: dict[str, Any], receive: Receive, send: Send, started: float
    ) -> None:
        endpoint = self.state.endpoints.get(name)
        if endpoint is None:
            err = HttpError(
                404, "RESOURCE_DOES_NOT_EXIST", f"serving endpoint {name!r} does not exist"
            )
            await _respond(send, err.status, err.body(), b"application/json")
            return
        metrics = self.metrics
        in_flight = metrics.in_flight.labels(name)
        in_flight.inc()
        timestamp_ms = now_ms()
        request_id = str(uuid.uuid4())
        body = b""
        client_id: str | None = None
        runtime: EntityRuntime | None = None
        model_name: str | None = None
        version: int | None = None
        try:
            body = await self._body(scope, receive)
            payload = _parse_json(body)
            try:
                records, client_id = records_of(payload)
            except InputError as exc:
                raise HttpError(400, "BAD_REQUEST", _naming(exc)) from None
            if not endpoint.ready:
                raise HttpError(
                    503,
                    "TEMPORARILY_UNAVAILABLE",
                    f"serving endpoint {name!r} is not ready: its models are "
                    + ("still loading" if endpoint.config_update == IN_PROGRESS else "not loaded")
                    + (f" ({endpoint.message})" if endpoint.message else ""),
                )
            runtime = endpoint.route(client_id)
            deployment = runtime.deployment
            assert deployment is not None
            model_name, version = deployment.model.name, deployment.model.version
            shadow = endpoint.shadow(client_id)
            try:
                encoded = deployment.encode(records)
            except InputError as exc:
                raise HttpError(400, exc.error_code, _naming(exc)) from None
            future = deployment.submit(encoded)
            if shadow is not None and shadow.deployment is not None:
                self._shadow(endpoint, shadow, records, body, request_id, client_id)
            try:
                scores = await future
            except ScoringFailed as exc:
                raise HttpError(exc.status, exc.error_code, str(exc)) from None
            status = 200
            response = _json({"predictions": scores})
            entity_label = runtime.config.name
            score_metric = metrics.score.labels(name, entity_label)
            for score in scores:
                if not math.isnan(score):
                    score_metric.observe(score)
        except HttpError as exc:
            status, response = exc.status, exc.body()
        except ScoringFailed as exc:
            status, response = exc.status, HttpError(exc.status, exc.error_code, str(exc)).body()
        except Exception as exc:
            log.exception("invocation of %s failed", name)
            status = 500
            response = HttpError(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}").body()
        entity_name = runtime.config.name if runtime is not None else None
        elapsed = time.perf_counter() - started
        if self.inference_log:
            self._log(
                endpoint,
                record(
                    request_id=request_id,
                    client_request_id=client_id,
                    timestamp_ms=timestamp_ms,
                    status_code=status,
                    execution_duration_ms=elapsed * 1000,
                    request=body.decode("utf-8", "replace"),
                    response=response.decode(),
                    endpoint_name=name,
                    served_entity_name=entity_name,
                    model_name=model_name,
                    model_version=version,
                ),
            )
        label = entity_name or ""
        metrics.requests.labels(name, label, str(status)).inc()
        metrics.duration.labels(name, label).observe(elapsed)
        headers = [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]
        if entity_name is not None:
            headers += [
                (ENTITY_HEADER, entity_name.encode()),
                (b"served-model-name", entity_name.encode()),
                (VERSION_HEADER, str(version).encode()),
            ]
        in_flight.dec()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": response})

    def _log(self, endpoint: Endpoint, rec: dict[str, Any]) -> None:
        try:
            endpoint.spool.write(rec)
        except Exception:
            log.exception("inference log of %s: record not written", endpoint.name)
            self.metrics.log_errors.labels(endpoint.name).inc()

    def _shadow(
        self,
        endpoint: Endpoint,
        runtime: EntityRuntime,
        records: list[dict[str, Any]],
        body: bytes,
        request_id: str,
        client_id: str | None,
    ) -> None:
        """Score a copy on the shadow entity; log its answer when it comes, return nothing."""
        deployment = runtime.deployment
        assert deployment is not None
        started = time.perf_counter()
        timestamp_ms = now_ms()
        self.metrics.shadow.labels(endpoint.name, runtime.config.name).inc()

        def write(status: int, response: bytes) -> None:
            if not self.inference_log:
                return
            self._log(
                endpoint,
                record(
                    request_id=request_id,
                    client_request_id=client_id,
                    timestamp_ms=timestamp_ms,
                    status_code=status,
                    execution_duration_ms=(time.perf_counter() - started) * 1000,
                    request=body.decode("utf-8", "replace"),
                    response=response.decode(),
                    endpoint_name=endpoint.name,
                    served_entity_name=runtime.config.name,
                    model_name=deployment.model.name,
                    model_version=deployment.model.version,
                    route="shadow",
                ),
            )

        try:
            encoded = deployment.encode(records)
        except (InputError, ScoringFailed) as exc:
            code = getattr(exc, "status", 400)
            write(code, HttpError(code, getattr(exc, "error_code", "BAD_REQUEST"), str(exc)).body())
            return
        future = deployment.submit(encoded)

        def done(fut: asyncio.Future[Any]) -> None:
            exc = fut.exception()
            if exc is None:
                write(200, _json({"predictions": fut.result()}))
            elif isinstance(exc, ScoringFailed):
                write(exc.status, HttpError(exc.status, exc.error_code, str(exc)).body())
            else:
                write(500, HttpError(500, "INTERNAL_ERROR", str(exc)).body())

        future.add_done_callback(done)


def _naming(exc: InputError) -> str:
    """The error's message, led by its field unless the message names it already."""
    message = str(exc)
    return message if exc.field in message else f"{exc.field}: {message}"


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type)],
        }
    )
    await send({"type": "http.response.body", "body": body})
