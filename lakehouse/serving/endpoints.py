"""Serving endpoints at run time: loaded versions, routing, batching, config changes, aliases.

Every served entity runs on a :class:`Deployment`: one loaded :class:`ServedModel` and one
thread that scores. Requests queue for it; the thread takes all the requests waiting when it is
free (up to :data:`MAX_BATCH_ROWS` rows) as one batch: one feature lookup, one call to the
model. Under concurrent load this spreads a model call's fixed cost over many requests; a
single request waits for nobody.

State changes (a new configuration, an alias that moved) load and warm the new versions on a
loader thread first; the switch itself is one step on the event loop, after which new requests
go to the new deployments while the old ones finish what they hold, then stop. No request
fails because of a switch. A loaded version stays in memory while a deployment uses it: once
the last one has stopped (a new configuration, an alias that moved, a deleted endpoint), it is
dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import random
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lakehouse.models.config import REQUEST_COLUMNS
from lakehouse.platform.settings import Settings
from lakehouse.serving.config import (
    EndpointConfig,
    EndpointStore,
    ServedEntityConfig,
    StoredEndpoint,
)
from lakehouse.serving.features import FeatureLookup, FeatureUnavailable
from lakehouse.serving.metrics import ServingMetrics
from lakehouse.serving.model import Encoded, InputError, ServedModel
from lakehouse.serving.spool import SpoolWriter

log = logging.getLogger(__name__)

#: Rows one model call takes at most.
MAX_BATCH_ROWS = 512
#: Seconds between two reads of the registry's aliases.
ALIAS_POLL_ENV = "LAKEHOUSE_SERVING_ALIAS_POLL_SECONDS"
DEFAULT_ALIAS_POLL_SECONDS = 5.0

READY, NOT_READY = "READY", "NOT_READY"
NOT_UPDATING, IN_PROGRESS, UPDATE_FAILED = "NOT_UPDATING", "IN_PROGRESS", "UPDATE_FAILED"
CREATING, DEPLOYED, FAILED = "DEPLOYMENT_CREATING", "DEPLOYMENT_READY", "DEPLOYMENT_FAILED"

_STOP = object()


def now_ms() -> int:
    return int(time.time() * 1000)


class ScoringFailed(Exception):
    """A request the model or the feature store could not answer; ``status`` is HTTP's."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


@dataclass
class _Job:
    encoded: Encoded
    deliver: Callable[[Any], None]


class Deployment:
    """One loaded version of a served entity and the thread that scores its requests."""

    def __init__(
        self,
        endpoint: str,
        entity: str,
        model: ServedModel,
        lookup: FeatureLookup | None,
        lookup_error: str | None,
        metrics: ServingMetrics,
        loop: asyncio.AbstractEventLoop,
        on_stopped: Callable[[Deployment], None] | None = None,
    ) -> None:
        """Start scoring ``model`` for ``entity`` of ``endpoint``; ``on_stopped`` is called
        (on the scoring thread) once the deployment has answered its last request."""
        self.endpoint = endpoint
        self.entity = entity
        self.model = model
        self.lookup = lookup
        self.lookup_error = lookup_error
        self.lookup_ok = frozenset(model.lookup_columns(lookup.feature_columns) if lookup else [])
        self.metrics = metrics
        self.loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lookup_seconds = metrics.feature_lookup.labels(endpoint)
        self._on_stopped = on_stopped
        self._thread = threading.Thread(
            target=self._run, name=f"score-{endpoint}-{entity}", daemon=True
        )
        self._thread.start()

    def encode(self, records: list[dict[str, Any]]) -> Encoded:
        """Check a request's rows for this model (see :meth:`ServedModel.encode`)."""
        encoded = self.model.encode(records, self.lookup_ok)
        if encoded.lookups and self.lookup is None:
            raise ScoringFailed(
                503, "TEMPORARILY_UNAVAILABLE", f"feature lookup unavailable: {self.lookup_error}"
            )
        return encoded

    def submit(self, encoded: Encoded) -> asyncio.Future[Any]:
        """Queue rows for scoring; the future gets the list of scores or a :class:`ScoringFailed`.

        Call from the event loop.
        """
        future: asyncio.Future[Any] = self.loop.create_future()

        def deliver(result: Any) -> None:
            if future.done():
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        self._queue.put(_Job(encoded, deliver))
        return future

    def stop(self) -> None:
        """Stop once the queued requests are answered."""
        self._queue.put(_STOP)

    # --- The scoring thread --------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        finally:
            if self._on_stopped is not None:
                try:
                    self._on_stopped(self)
                except Exception:
                    log.exception("releasing %s/%s failed", self.endpoint, self.entity)

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            jobs = [first]
            rows = len(first.encoded.array)
            while rows < MAX_BATCH_ROWS:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                jobs.append(job)
                rows += len(job.encoded.array)
            try:
                results = self._score(jobs)
            except BaseException as exc:  # never lose a request: answer each with the error
                log.exception("scoring failed on %s/%s", self.endpoint, self.entity)
                failure = ScoringFailed(500, "INTERNAL_ERROR", f"scoring failed: {exc}")
                results = [(job, failure) for job in jobs]
            self.loop.call_soon_threadsafe(_deliver_all, results)

    def _score(self, jobs: list[_Job]) -> list[tuple[_Job, Any]]:
        results: list[tuple[_Job, Any]] = []
        ready: list[_Job] = []
        customers = [c for job in jobs for _, c, _ in job.encoded.lookups]
        features: dict[str, dict[str, Any]] = {}
        lookup_failure: ScoringFailed | None = None
        if customers and self.lookup is not None:
            started = time.perf_counter()
            try:
                features = self.lookup.get(customers)
            except Exception as exc:
                lookup_failure = ScoringFailed(
                    503, "TEMPORARILY_UNAVAILABLE", f"the online feature store failed: {exc}"
                )
            self._lookup_seconds.observe(time.perf_counter() - started)
        for job in jobs:
            if job.encoded.lookups:
                if lookup_failure is not None:
                    results.append((job, lookup_failure))
                    continue
                errors = self.model.fill(job.encoded, features)
                if errors:
                    results.append(
                        (job, ScoringFailed(400, "INVALID_PARAMETER_VALUE", "; ".join(errors)))
                    )
                    continue
            ready.append(job)
        if not ready:
            return results
        try:
            stacked = (
                ready[0].encoded.array
                if len(ready) == 1
                else np.concatenate([job.encoded.array for job in ready])
            )
            scores = self.model.scores(stacked).tolist()
        except Exception:
            # One request's values broke the batch: score each alone, so only it fails.
            for job in ready:
                try:
                    results.append((job, self.model.scores(job.encoded.array).tolist()))
                except Exception as exc:
                    results.append((job, ScoringFailed(400, "INVALID_PARAMETER_VALUE", str(exc))))
            return results
        start = 0
        for job in ready:
            n = len(job.encoded.array)
            results.append((job, scores[start : start + n]))
            start += n
        return results


def _deliver_all(results: list[tuple[_Job, Any]]) -> None:
    for job, result in results:
        job.deliver(result)


@dataclass
class EntityRuntime:
    """A served entity of the active (or pending) configuration."""

    config: ServedEntityConfig
    deployment: Deployment | None = None
    state: str = CREATING
    message: str = ""
    creation_timestamp: int = field(default_factory=now_ms)

    @property
    def version(self) -> int | None:
        return self.deployment.model.version if self.deployment else None


class Endpoint:
    """One named endpoint: its active configuration, entities, routes and inference log."""

    def __init__(self, stored: StoredEndpoint, spool: SpoolWriter) -> None:
        self.stored = stored
        self.name = stored.name
        self.spool = spool
        self.entities: dict[str, EntityRuntime] = {}
        self.active: EndpointConfig | None = None
        self.pending: EndpointConfig | None = None
        self.pending_entities: dict[str, EntityRuntime] = {}
        self.pending_start = 0
        self.config_update = IN_PROGRESS
        self.message = ""
        self.deleted = False
        self._routes: list[tuple[int, EntityRuntime]] = []
        self._shadow: tuple[EntityRuntime, int] | None = None

    @property
    def ready(self) -> bool:
        return self.active is not None

    def activate(self, config: EndpointConfig, entities: dict[str, EntityRuntime]) -> None:
        """Switch to ``config`` served by ``entities`` (one step: call from the loop)."""
        upper = 0
        routes = []
        for name, pct in config.routes:
            upper += pct
            if pct:
                routes.append((upper, entities[name]))
        self.entities = entities
        self._routes = routes
        self._shadow = (
            (entities[config.shadow.served_entity_name], config.shadow.percentage)
            if config.shadow is not None and config.shadow.percentage > 0
            else None
        )
        self.active = config

    def route(self, client_request_id: str | None) -> EntityRuntime:
        """The entity that answers: random by percentage, fixed for a ``client_request_id``."""
        if client_request_id is None:
            bucket = random.randrange(100)
        else:
            bucket = zlib.crc32(client_request_id.encode()) % 100
        for upper, entity in self._routes:
            if bucket < upper:
                return entity
        return self._routes[-1][1]

    def shadow(self, client_request_id: str | None) -> EntityRuntime | None:
        """The shadow entity when this request is among the copied share, else None."""
        if self._shadow is None:
            return None
        entity, pct = self._shadow
        if client_request_id is None:
            bucket = random.randrange(100)
        else:
            bucket = zlib.crc32(b"shadow:" + client_request_id.encode()) % 100
        return entity if bucket < pct else None

    def deployments(self) -> list[Deployment]:
        return [e.deployment for e in self.entities.values() if e.deployment is not None]


def alias_poll_seconds() -> float:
    raw = os.environ.get(ALIAS_POLL_ENV)
    value = float(raw) if raw else DEFAULT_ALIAS_POLL_SECONDS
    if not value > 0:
        raise ValueError(f"{ALIAS_POLL_ENV} must be > 0, got {raw!r}")
    return value


class ServingState:
    """Every endpoint of the server, and the work of loading, switching and polling."""

    def __init__(self, settings: Settings, metrics: ServingMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.endpoints: dict[str, Endpoint] = {}
        self.store = EndpointStore(settings.home / "serving" / "endpoints")
        self.loader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="serving-loader")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._models: dict[tuple[str, int], ServedModel] = {}
        #: Deployments (started or being started) of each loaded version.
        self._users: dict[tuple[str, int], int] = {}
        self._lookups: dict[str, FeatureLookup | str] = {}
        self._load_lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- Registry and models (loader threads) --------------------------------------------
    def resolve(self, entity: ServedEntityConfig) -> int:
        """The version ``entity`` names now; :class:`LookupError` when there is none."""
        from lakehouse.models.tracking import mlflow_client

        client = mlflow_client(self.settings)
        try:
            if entity.alias is not None:
                mv = client.get_model_version_by_alias(entity.entity_name, entity.alias)
            else:
                mv = client.get_model_version(entity.entity_name, entity.entity_version)
        except Exception as exc:
            what = f"alias {entity.alias!r}" if entity.alias else f"version {entity.entity_version}"
            raise LookupError(f"registered model {entity.entity_name!r} has no {what}") from exc
        return int(mv.version)

    def acquire(self, name: str, version: int) -> ServedModel:
        """The loaded and warmed version, for one more deployment (loaded once while any
        deployment uses it); pair with :meth:`release`."""
        key = (name, version)
        with self._load_lock:
            cached = self._models.get(key)
            if cached is None:
                cached = ServedModel.load(self.settings, name, version)
                self._models[key] = cached
                self.metrics.loaded.labels(name, str(version)).set(1)
            self._users[key] = self._users.get(key, 0) + 1
            return cached

    def release(self, name: str, version: int) -> None:
        """One deployment less of the version; the last one drops it from memory."""
        key = (name, version)
        with self._load_lock:
            users = self._users.get(key, 0) - 1
            if users > 0:
                self._users[key] = users
                return
            self._users.pop(key, None)
            if self._models.pop(key, None) is not None:
                self.metrics.forget_model(name, str(version))
                log.info("model %s version %d is served no more: unloaded", name, version)

    def _stopped(self, deployment: Deployment) -> None:
        self.release(deployment.model.name, deployment.model.version)

    def lookup(self, service: str) -> tuple[FeatureLookup | None, str | None]:
        """The feature lookup of ``service``, or None and why it is unavailable."""
        with self._load_lock:
            found = self._lookups.get(service)
            if found is None:
                try:
                    found = FeatureLookup(self.settings, service)
                except FeatureUnavailable as exc:
                    found = str(exc)
                except Exception as exc:
                    found = f"the online feature store cannot be opened: {exc}"
                if isinstance(found, FeatureLookup):  # a missing store may appear later
                    self._lookups[service] = found
            if isinstance(found, str):
                return None, found
            return found, None

    def _deploy(self, endpoint: str, entity: ServedEntityConfig, version: int) -> Deployment:
        started = time.perf_counter()
        model = self.acquire(entity.entity_name, version)
        try:
            needs_lookup = any(c not in REQUEST_COLUMNS for c in model.columns)
            lookup, why = self.lookup(model.feature_service) if needs_lookup else (None, None)
            assert self.loop is not None
            deployment = Deployment(
                endpoint,
                entity.name,
                model,
                lookup,
                why,
                self.metrics,
                self.loop,
                on_stopped=self._stopped,
            )
        except BaseException:
            self.release(entity.entity_name, version)
            raise
        # Several entities may share one version: loading counts once, warming each time.
        seconds = max(model.load_seconds, time.perf_counter() - started)
        self.metrics.model_load.labels(endpoint, entity.name).set(seconds)
        return deployment

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- Configuration changes (event loop) ----------------------------------------------
    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self.loop is not None
        return await self.loop.run_in_executor(self.loader, fn, *args)

    def add(self, stored: StoredEndpoint) -> Endpoint:
        """Register an endpoint and start loading its configuration."""
        endpoint = Endpoint(stored, SpoolWriter(self.settings.landing_dir, stored.name))
        self.endpoints[stored.name] = endpoint
        self.begin_update(endpoint, stored.config, first=True)
        return endpoint

    def begin_update(self, endpoint: Endpoint, config: EndpointConfig, first: bool = False) -> None:
        endpoint.pending = config
        endpoint.pending_start = now_ms()
        endpoint.pending_entities = {e.name: EntityRuntime(e) for e in config.served_entities}
        endpoint.config_update = IN_PROGRESS
        endpoint.message = ""
        self._spawn(self._update(endpoint, config, first))

    async def _update(self, endpoint: Endpoint, config: EndpointConfig, first: bool) -> None:
        created: list[Deployment] = []
        pending = endpoint.pending_entities
        try:
            for entity in config.served_entities:
                runtime = pending[entity.name]
                version = await self.run_blocking(self.resolve, entity)
                current = endpoint.entities.get(entity.name)
                if (
                    current is not None
                    and current.deployment is not None
                    and current.config.entity_name == entity.entity_name
                    and current.version == version
                ):
                    runtime.deployment = current.deployment
                    runtime.creation_timestamp = current.creation_timestamp
                else:
                    runtime.deployment = await self.run_blocking(
                        self._deploy, endpoint.name, entity, version
                    )
                    created.append(runtime.deployment)
                runtime.state = DEPLOYED
        except Exception as exc:
            for deployment in created:
                deployment.stop()
            for runtime in pending.values():
                if runtime.state == CREATING:
                    runtime.state, runtime.message = FAILED, str(exc)
            endpoint.config_update = UPDATE_FAILED
            endpoint.message = f"{type(exc).__name__}: {exc}"
            log.error("endpoint %s: configuration failed: %s", endpoint.name, exc)
            return
        if endpoint.deleted:
            for deployment in created:
                deployment.stop()
            return
        old = endpoint.deployments()
        endpoint.activate(config, pending)
        kept = {id(d) for d in endpoint.deployments()}
        for deployment in old:
            if id(deployment) not in kept:
                deployment.stop()
        endpoint.pending = None
        endpoint.pending_entities = {}
        endpoint.config_update = NOT_UPDATING
        stored = endpoint.stored
        if not first:
            stored.config = config
            stored.config_version += 1
            stored.last_updated_timestamp = now_ms()
            await self.run_blocking(self.store.save, stored)
        log.info("endpoint %s serves config version %d", endpoint.name, stored.config_version)

    def delete(self, name: str) -> None:
        endpoint = self.endpoints.pop(name)
        endpoint.deleted = True
        for deployment in endpoint.deployments():
            deployment.stop()
        endpoint.spool.seal()
        self.store.delete(name)
        self.metrics.forget(name, list(endpoint.entities))

    # --- Aliases -------------------------------------------------------------------------
    async def follow_aliases(self, interval: float) -> None:
        """Every ``interval`` seconds, move entities that follow an alias to its version."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self._poll_aliases()
            except Exception:
                log.exception("alias poll failed")

    async def _poll_aliases(self) -> None:
        for endpoint in list(self.endpoints.values()):
            if endpoint.config_update == IN_PROGRESS or not endpoint.ready:
                continue
            for runtime in list(endpoint.entities.values()):
                entity = runtime.config
                if entity.alias is None or runtime.deployment is None:
                    continue
                try:
                    version = await self.run_blocking(self.resolve, entity)
                except LookupError as exc:
                    runtime.message = str(exc)  # keep serving the version it has
                    continue
                if version == runtime.version or endpoint.config_update == IN_PROGRESS:
                    continue
                try:
                    deployment = await self.run_blocking(
                        self._deploy, endpoint.name, entity, version
                    )
                except Exception as exc:
                    runtime.message = f"version {version} of {entity.alias}: {exc}"
                    log.error("endpoint %s: %s", endpoint.name, runtime.message)
                    continue
                if endpoint.deleted or endpoint.entities.get(entity.name) is not runtime:
                    deployment.stop()
                    continue
                old, runtime.deployment = runtime.deployment, deployment
                runtime.message = ""
                endpoint.stored.last_updated_timestamp = now_ms()
                old.stop()
                log.info(
                    "endpoint %s: %s follows %s to version %d",
                    endpoint.name,
                    entity.name,
                    entity.alias,
                    version,
                )

    # --- Start and stop ------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Load the stored endpoints; start alias polling and the spool's rolling."""
        self.loop = loop
        stored, bad = self.store.load_all()
        for path, reason in bad:
            log.error("ignoring endpoint file %s: %s", path, reason)
        for item in stored:
            self.add(item)
        self._spawn(self.follow_aliases(alias_poll_seconds()))
        self._spawn(self._roll_spools())

    async def _roll_spools(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            for endpoint in list(self.endpoints.values()):
                if endpoint.spool.due():
                    try:
                        endpoint.spool.seal()
                    except OSError:
                        log.exception("sealing the inference log of %s failed", endpoint.name)
                        self.metrics.log_errors.labels(endpoint.name).inc()

    def stop(self) -> None:
        """Seal every spool and stop the scoring threads."""
        for task in list(self._tasks):
            task.cancel()
        for endpoint in self.endpoints.values():
            try:
                endpoint.spool.seal()
            except OSError:
                log.exception("sealing the inference log of %s failed", endpoint.name)
            for deployment in endpoint.deployments():
                deployment.stop()
        self.loader.shutdown(wait=False, cancel_futures=True)


__all__ = [
    "Deployment",
    "Endpoint",
    "EntityRuntime",
    "InputError",
    "ScoringFailed",
    "ServingState",
]
