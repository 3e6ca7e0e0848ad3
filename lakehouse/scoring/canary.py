"""Canary releases on a serving endpoint: the moves, the verdict and the record of each decision.

An endpoint of ``lakehouse serve`` (Databricks Model Serving's shape) serves one main entity,
named ``champion`` (it follows the registry's ``champion`` alias, or pins a version). A canary
adds a second entity, named ``canary``, pinned to a version that also gets the registry's
``challenger`` alias, and routes a share of the traffic to it:

* :func:`start_canary`: the ``canary`` entity with ``percent`` of the traffic, the rest to
  ``champion``;
* :func:`promote_canary`: the canary's version becomes the champion in the registry (alias
  moved, legacy stage in step) and takes all the traffic; the ``canary`` entity goes;
* :func:`rollback_canary`: all the traffic back to ``champion``, the ``canary`` entity and the
  ``challenger`` alias removed.

The automatic analysis compares the two entities on ``gold.inference_log``
(:func:`lakehouse.scoring.inference_log.analyze_canary` computes each side's figures; :func:`judge`
holds them against :class:`CanaryThresholds`).

Every decision, by hand or automatic, is a :class:`Decision`: written at once as one JSON file
into ``landing/serving_decisions/`` (this module starts no JVM) and taken into the Delta table
``gold.serving_decisions`` by the next ingest of the serving spools
(:func:`lakehouse.scoring.inference_log.ingest_decisions`, run by ``lakehouse endpoint
ingest-log`` and by ``analyze``), exactly once.

This module imports neither pyspark nor MLflow at import time, so the endpoint commands that only
talk to the server start quickly and never start a JVM.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lakehouse.models.config import CANARY_SECTION
from lakehouse.models.registry import ARCHIVED, CHALLENGER, CHAMPION, ModelRegistry
from lakehouse.models.tracking import mlflow_client
from lakehouse.platform.settings import Settings

#: The server's address when no ``--url`` is given, and the variables that override it.
DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "LAKEHOUSE_SERVING_URL"
TOKEN_ENV = "LAKEHOUSE_SERVING_TOKEN"

#: The served entities of an endpoint that the canary moves know by name.
CHAMPION_ENTITY = "champion"
CANARY_ENTITY = "canary"

#: The folder under ``landing/`` of the decisions on endpoints.
DECISIONS_FOLDER = "serving_decisions"
#: Files being written; Spark's file source skips folders whose name starts with ``_``.
OPEN_FOLDER = "_open"

#: The verdicts of an analysis.
PROMOTE = "promote"
ROLLBACK = "rollback"
WAIT = "wait"


class ServingError(Exception):
    """A request to the serving process failed, or an endpoint is not in the state a move needs.

    The message is one line, fit to print as it is.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --- The server's REST API -----------------------------------------------------------------------


class EndpointClient:
    """The serving endpoints REST API (``/api/2.0/serving-endpoints``) of one server.

    Args:
        url: the server's base URL, for example ``http://127.0.0.1:8000``.
        token: sent as ``Authorization: Bearer <token>`` when given.
        timeout: seconds to wait for one answer.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ServingError(f"bad server URL {url!r}: expected http://HOST:PORT")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_env(
        cls, url: str | None = None, env: Mapping[str, str] | None = None
    ) -> EndpointClient:
        """A client for ``url``, else ``$LAKEHOUSE_SERVING_URL``, else :data:`DEFAULT_URL`; the
        token from ``$LAKEHOUSE_SERVING_TOKEN``."""
        env = os.environ if env is None else env
        return cls(url or env.get(URL_ENV) or DEFAULT_URL, env.get(TOKEN_ENV) or None)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; the decoded JSON answer (None when the answer is empty).

        Raises:
            ServingError: the server cannot be reached, or answered with an error status (the
                message carries the server's own ``message`` and the status).
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                text = answer.read().decode()
        except urllib.error.HTTPError as exc:
            raise ServingError(_error_message(exc), status=exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServingError(
                f"cannot reach the serving endpoint server at {self.url}: {reason}"
            ) from None
        return json.loads(text) if text.strip() else None

    def list(self) -> list[dict[str, Any]]:
        """Every endpoint."""
        answer = self.call("GET", "/api/2.0/serving-endpoints") or {}
        return list(answer.get("endpoints") or [])

    def get(self, name: str) -> dict[str, Any]:
        """One endpoint; :class:`ServingError` naming it when the server has none of that name."""
        try:
            return dict(self.call("GET", _endpoint_path(name)))
        except ServingError as exc:
            if exc.status == 404:
                raise ServingError(f"endpoint {name!r} not found at {self.url}", 404) from None
            raise

    def create(self, name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """Create an endpoint from a config (``served_entities`` and ``traffic_config``)."""
        answer = self.call("POST", "/api/2.0/serving-endpoints", {"name": name, "config": config})
        return dict(answer or {})

    def update_config(self, name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the config of an endpoint."""
        try:
            return dict(self.call("PUT", f"{_endpoint_path(name)}/config", dict(config)) or {})
        except ServingError as exc:
            if exc.status == 404:
                raise ServingError(f"endpoint {name!r} not found at {self.url}", 404) from None
            raise

    def delete(self, name: str) -> None:
        """Delete an endpoint."""
        try:
            self.call("DELETE", _endpoint_path(name))
        except ServingError as exc:
            if exc.status == 404:
                raise ServingError(f"endpoint {name!r} not found at {self.url}", 404) from None
            raise

    def wait_ready(self, name: str, timeout: float = 300.0) -> dict[str, Any]:
        """The endpoint once its config is in place (``state.config_update`` no longer
        ``IN_PROGRESS``, as on Databricks; an endpoint without a state is taken as ready).

        Raises:
            ServingError: the update failed, or is still under way after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            endpoint = self.get(name)
            state = endpoint.get("state") or {}
            update = state.get("config_update")
            if update == "UPDATE_FAILED":
                raise ServingError(f"the config update of endpoint {name!r} failed")
            if update != "IN_PROGRESS" and state.get("ready", "READY") == "READY":
                return endpoint
            if time.monotonic() > deadline:
                raise ServingError(f"endpoint {name!r} not ready after {timeout:.0f} s")
            time.sleep(0.2)


def _endpoint_path(name: str) -> str:
    return f"/api/2.0/serving-endpoints/{urllib.parse.quote(name, safe='')}"


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The server's ``message`` (MLflow's and Databricks' error shape) and the status."""
    try:
        body = json.loads(exc.read().decode() or "{}")
        message = body.get("message") or body.get("error_code") or exc.reason
    except (ValueError, AttributeError, OSError):
        message = exc.reason
    return f"{' '.join(str(message).split())} (HTTP {exc.code})"


# --- An endpoint's config ------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointConfig:
    """The served entities and the traffic of one endpoint, as the canary moves read them.

    Attributes:
        name: the endpoint.
        entities: each served entity's ``name``, ``entity_name`` and ``entity_version``.
        routes: served entity name -> traffic percentage.
        shadow: the shadow entity and its share (``served_entity_name``, ``percentage``), if any.
    """

    name: str
    entities: tuple[dict[str, Any], ...]
    routes: dict[str, int]
    shadow: dict[str, Any] | None = None
    served: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, endpoint: Mapping[str, Any]) -> EndpointConfig:
        """Read the answer of ``GET /api/2.0/serving-endpoints/{name}``.

        The server shows the version an entity serves now in ``entity_version`` and the alias
        it follows, if any, in ``entity_alias``: the config keeps the alias (what a ``PUT``
        must send back to keep following it), ``served`` the versions.
        """
        config = endpoint.get("config") or endpoint.get("pending_config") or {}
        entities = []
        served: dict[str, int] = {}
        for raw in config.get("served_entities") or []:
            version = str(raw.get("entity_version"))
            entities.append(
                {
                    "name": raw.get("name"),
                    "entity_name": raw.get("entity_name"),
                    "entity_version": raw.get("entity_alias") or version,
                }
            )
            if version.isdigit():
                served[str(raw.get("name"))] = int(version)
        traffic = config.get("traffic_config") or {}
        routes = {
            str(route["served_entity_name"]): int(route.get("traffic_percentage") or 0)
            for route in traffic.get("routes") or []
        }
        shadow = traffic.get("shadow") or None
        return cls(str(endpoint.get("name", "")), tuple(entities), routes, shadow, served)

    def entity(self, name: str) -> dict[str, Any] | None:
        """The served entity called ``name``, if the endpoint has one."""
        return next((e for e in self.entities if e["name"] == name), None)

    def champion(self) -> dict[str, Any]:
        """The endpoint's main entity: the one named ``champion``, else the one following the
        ``champion`` alias, else the one with the most traffic."""
        found = self.entity(CHAMPION_ENTITY) or next(
            (e for e in self.entities if str(e["entity_version"]) == CHAMPION), None
        )
        if found is None:
            others = [e for e in self.entities if e["name"] != CANARY_ENTITY]
            if not others:
                raise ServingError(f"endpoint {self.name!r} serves no champion entity")
            found = max(others, key=lambda e: self.routes.get(e["name"], 0))
        return found

    def canary(self) -> dict[str, Any] | None:
        """The ``canary`` entity, if a canary runs."""
        return self.entity(CANARY_ENTITY)

    def body(self) -> dict[str, Any]:
        """The config as ``PUT .../config`` takes it."""
        traffic: dict[str, Any] = {
            "routes": [
                {"served_entity_name": name, "traffic_percentage": pct}
                for name, pct in self.routes.items()
            ]
        }
        if self.shadow:
            traffic["shadow"] = dict(self.shadow)
        return {"served_entities": [dict(e) for e in self.entities], "traffic_config": traffic}

    def summary(self) -> dict[str, Any]:
        """What the evidence of a decision records of the config."""
        return {
            "served_entities": [dict(e) for e in self.entities],
            "routes": dict(self.routes),
            "shadow": self.shadow,
        }

    def with_entities(
        self, entities: Sequence[dict[str, Any]], routes: Mapping[str, int]
    ) -> EndpointConfig:
        """The config with these entities and routes; a shadow on an entity that goes, goes."""
        names = {e["name"] for e in entities}
        shadow = self.shadow
        if shadow and shadow.get("served_entity_name") not in names:
            shadow = None
        return replace(self, entities=tuple(entities), routes=dict(routes), shadow=shadow)


def entity_config(name: str, model: str, version: int | str) -> dict[str, Any]:
    """A served entity: ``version`` is a version number or an alias such as ``champion``."""
    return {"name": name, "entity_name": model, "entity_version": str(version)}


def served_version(
    registry: ModelRegistry, entity: Mapping[str, Any], config: EndpointConfig | None = None
) -> int:
    """The version an entity serves: as the server reports it, else its number, else the
    version holding its alias now."""
    if config is not None and entity["name"] in config.served:
        return config.served[str(entity["name"])]
    version = str(entity["entity_version"])
    if version.isdigit():
        return int(version)
    resolved = registry.aliases().get(version)
    if resolved is None:
        raise ServingError(f"model {registry.name!r} has no version with alias {version!r}")
    return resolved


# --- Thresholds and the verdict ------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryThresholds:
    """What a canary must show against the champion to be promoted.

    Attributes:
        min_requests: requests each side needs before there is a verdict; fewer gives ``wait``.
        max_error_rate_increase: how far the canary's share of server errors (status 5xx) may
            exceed the champion's.
        max_p50_ratio: the canary's median latency at most this multiple of the champion's
            (plus ``latency_slack_ms``).
        max_p99_ratio: the same for the 99th percentile.
        latency_slack_ms: milliseconds added to both latency bounds, so that a difference far
            below what a caller notices does not fail a canary.
        max_psi: population stability index of the canary's scores against the champion's
            (10 bins at the champion's deciles) at most this.
        max_ks: two-sample Kolmogorov-Smirnov statistic of the scores at most this.
        min_labelled: labelled predictions each side needs before outcomes are compared;
            fewer skips that check.
        max_auc_drop: how far the canary's ROC AUC on observed outcomes may fall below the
            champion's.
    """

    min_requests: int = 200
    max_error_rate_increase: float = 0.01
    max_p50_ratio: float = 1.25
    max_p99_ratio: float = 1.5
    latency_slack_ms: float = 5.0
    max_psi: float = 0.25
    max_ks: float = 0.3
    min_labelled: int = 50
    max_auc_drop: float = 0.02

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"canary threshold {f.name} must be >= 0, got {value}")
        if self.min_requests < 1:
            raise ValueError("canary threshold min_requests must be >= 1")

    def override(self, values: Mapping[str, Any]) -> CanaryThresholds:
        """A copy with the given fields replaced (None values are left out)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


_INT_THRESHOLDS = ("min_requests", "min_labelled")


def load_thresholds(path: str | Path, base: CanaryThresholds | None = None) -> CanaryThresholds:
    """The thresholds of a YAML file: a mapping of some fields of :class:`CanaryThresholds`
    (the others keep ``base``'s values, default the class defaults).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not such a mapping, an unknown key or a bad value; the message names the file.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"thresholds file {path} not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"thresholds file {path} cannot be read: {exc}") from None
    known = [f.name for f in fields(CanaryThresholds)]
    if isinstance(data, dict) and CANARY_SECTION in data:  # a gate file: its canary section
        data = data[CANARY_SECTION]
    if not isinstance(data, dict):
        raise ValueError(f"thresholds file {path} must be a mapping of {', '.join(known)}")
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ValueError(f"thresholds file {path}: unknown key(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        integral = key in _INT_THRESHOLDS
        ok = isinstance(value, int if integral else int | float) and not isinstance(value, bool)
        if not ok:
            kind = "an integer" if integral else "a number"
            raise ValueError(f"thresholds file {path}: {key} must be {kind}, got {value!r}")
        values[key] = value if integral else float(value)
    try:
        return (base or CanaryThresholds()).override(values)
    except ValueError as exc:
        raise ValueError(f"thresholds file {path}: {exc}") from None


@dataclass(frozen=True)
class EntityStats:
    """One side of a canary analysis: a served entity's requests in the window.

    Attributes:
        entity: the served entity's name.
        version: the model version it served.
        requests: its records in the inference log (one per request it answered).
        errors: those with a server error (status 5xx).
        p50_ms: median execution duration of the successful requests (None without any).
        p99_ms: their 99th percentile.
        scores: every score it returned.
        outcomes: (score, defaulted) of the predictions whose application has a label.
    """

    entity: str
    version: int
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    scores: np.ndarray = field(repr=False)
    outcomes: np.ndarray = field(repr=False)

    @property
    def error_rate(self) -> float:
        """The share of requests with a server error."""
        return self.errors / self.requests if self.requests else 0.0

    @property
    def auc(self) -> float | None:
        """ROC AUC on the observed outcomes; None without both classes."""
        if len(self.outcomes) == 0 or len(np.unique(self.outcomes[:, 1])) < 2:
            return None
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(self.outcomes[:, 1], self.outcomes[:, 0]))

    def summary(self) -> dict[str, Any]:
        """The figures a decision's evidence records."""
        scores = self.scores
        quantiles = (
            dict(
                zip(
                    ("p10", "p50", "p90"),
                    np.quantile(scores, [0.1, 0.5, 0.9]).tolist(),
                    strict=True,
                )
            )
            if len(scores)
            else {}
        )
        return {
            "entity": self.entity,
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "latency_p50_ms": self.p50_ms,
            "latency_p99_ms": self.p99_ms,
            "scores": len(scores),
            "score_mean": float(scores.mean()) if len(scores) else None,
            "score_quantiles": quantiles,
            "labelled": len(self.outcomes),
            "roc_auc": self.auc,
        }


@dataclass(frozen=True)
class Check:
    """One comparison of an analysis: ``passed`` is None when it was skipped (too little data)."""

    name: str
    passed: bool | None
    value: float | None
    limit: float | None
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The outcome of an analysis: ``promote``, ``rollback`` or ``wait``, with every check."""

    verdict: str
    reason: str
    checks: tuple[Check, ...]
    canary: EntityStats
    champion: EntityStats
    thresholds: CanaryThresholds

    def evidence(self) -> dict[str, Any]:
        """The metrics and thresholds behind the verdict, as the audit row keeps them."""
        return {
            "verdict": self.verdict,
            "canary": self.canary.summary(),
            "champion": self.champion.summary(),
            "checks": [asdict(c) for c in self.checks],
            "thresholds": asdict(self.thresholds),
        }


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference``: bins at the
    reference's quantiles, empty bins smoothed to a small share."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant reference: one bin for it, one for the rest
        edges = np.array([edges[0], np.nextafter(edges[0], np.inf)])
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / len(reference)
    actual = np.histogram(current, edges)[0] / len(current)
    expected = np.clip(expected, 1e-4, None)
    actual = np.clip(actual, 1e-4, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value."""
    from scipy.stats import ks_2samp

    result = ks_2samp(reference, current)
    return float(result.statistic), float(result.pvalue)


def judge(canary: EntityStats, champion: EntityStats, thresholds: CanaryThresholds) -> Verdict:
    """Hold the canary against the champion.

    ``wait`` while either side has fewer than ``min_requests`` requests; otherwise ``rollback``
    when any check fails, ``promote`` when none does. The checks: error rate, latency p50 and
    p99, score distribution (PSI and KS) and, once both sides have ``min_labelled`` labelled
    predictions of both classes, ROC AUC on the observed outcomes.
    """
    t = thresholds
    checks = [
        Check(
            "error_rate",
            canary.error_rate <= champion.error_rate + t.max_error_rate_increase,
            canary.error_rate,
            champion.error_rate + t.max_error_rate_increase,
            f"canary {canary.error_rate:.4f} vs champion {champion.error_rate:.4f} "
            f"(+{t.max_error_rate_increase} allowed)",
        ),
        _latency_check("latency_p50", canary.p50_ms, champion.p50_ms, t.max_p50_ratio, t),
        _latency_check("latency_p99", canary.p99_ms, champion.p99_ms, t.max_p99_ratio, t),
        *_distribution_checks(canary.scores, champion.scores, t),
        _outcome_check(canary, champion, t),
    ]
    failed = [c for c in checks if c.passed is False]
    short = [s for s in (canary, champion) if s.requests < t.min_requests]
    if short:
        names = ", ".join(f"{s.entity} {s.requests}" for s in short)
        verdict, reason = WAIT, f"too few requests ({names}; {t.min_requests} needed)"
    elif failed:
        verdict = ROLLBACK
        reason = "; ".join(f"{c.name} failed: {c.detail}" for c in failed)
    else:
        verdict = PROMOTE
        skipped = [c.name for c in checks if c.passed is None]
        reason = "every check passed" + (f" ({', '.join(skipped)} skipped)" if skipped else "")
    return Verdict(verdict, reason, tuple(checks), canary, champion, t)


def _latency_check(
    name: str, canary: float | None, champion: float | None, ratio: float, t: CanaryThresholds
) -> Check:
    if canary is None or champion is None:
        return Check(name, None, canary, None, "no successful request on one side")
    limit = champion * ratio + t.latency_slack_ms
    return Check(
        name,
        canary <= limit,
        canary,
        limit,
        f"canary {canary:.2f} ms vs limit {limit:.2f} ms "
        f"(champion {champion:.2f} ms x {ratio} + {t.latency_slack_ms} ms)",
    )


def _distribution_checks(
    canary: np.ndarray, champion: np.ndarray, t: CanaryThresholds
) -> list[Check]:
    if len(canary) == 0 or len(champion) == 0:
        detail = "no score on one side"
        return [
            Check("score_psi", None, None, t.max_psi, detail),
            Check("score_ks", None, None, t.max_ks, detail),
        ]
    index = psi(champion, canary)
    statistic, p_value = ks_statistic(champion, canary)
    return [
        Check(
            "score_psi", index <= t.max_psi, index, t.max_psi, f"PSI {index:.4f} (max {t.max_psi})"
        ),
        Check(
            "score_ks",
            statistic <= t.max_ks,
            statistic,
            t.max_ks,
            f"KS {statistic:.4f}, p-value {p_value:.3g} (max {t.max_ks})",
        ),
    ]


def _outcome_check(canary: EntityStats, champion: EntityStats, t: CanaryThresholds) -> Check:
    canary_auc, champion_auc = canary.auc, champion.auc
    few = min(len(canary.outcomes), len(champion.outcomes)) < t.min_labelled
    if few or canary_auc is None or champion_auc is None:
        return Check(
            "outcome_auc",
            None,
            canary_auc,
            None,
            f"labelled predictions: canary {len(canary.outcomes)}, champion "
            f"{len(champion.outcomes)} ({t.min_labelled} of both classes needed)",
        )
    limit = champion_auc - t.max_auc_drop
    return Check(
        "outcome_auc",
        canary_auc >= limit,
        canary_auc,
        limit,
        f"ROC AUC canary {canary_auc:.4f} vs champion {champion_auc:.4f} "
        f"(-{t.max_auc_drop} allowed)",
    )


# --- Decisions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One decision on an endpoint, as a row of ``gold.serving_decisions``.

    Attributes:
        endpoint_name: the endpoint.
        action: ``create``, ``canary``, ``promote``, ``rollback``, ``delete``, or ``analyze``
            (an analysis that moved nothing).
        trigger: ``manual`` (a command) or ``automatic`` (an analysis).
        verdict: the analysis' verdict (``promote``, ``rollback``, ``wait``); None by hand.
        applied: whether the endpoint (and registry) changed.
        reason: one line.
        evidence: the metrics and thresholds (an analysis) or the configs before and after.
        model_name: the registered model.
        champion_version: the champion's version when the decision was taken.
        canary_version: the canary's version, if one was involved.
        canary_percent: the canary's share of the traffic after the decision.
    """

    endpoint_name: str
    action: str
    trigger: str
    applied: bool
    reason: str
    evidence: dict[str, Any]
    model_name: str | None = None
    champion_version: int | None = None
    canary_version: int | None = None
    canary_percent: int | None = None
    verdict: str | None = None
    decision_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    decided_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    decided_by: str = field(default_factory=lambda: _user())

    def record(self) -> dict[str, Any]:
        """The JSON object of the decision's spool file."""
        record = asdict(self)
        record["decided_at_ms"] = int(self.decided_at.timestamp() * 1000)
        del record["decided_at"]
        record["evidence"] = json.dumps(self.evidence, sort_keys=True, default=_json_default)
        return record


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def decisions_dir(settings: Settings) -> Path:
    """``landing/serving_decisions``: the decisions waiting to be ingested."""
    return settings.landing_dir / DECISIONS_FOLDER


def record_decision(settings: Settings, decision: Decision) -> Path:
    """Write ``decision`` into the decisions spool; the path of its file.

    The file is written in ``_open/`` and renamed into place, so the ingest never reads half
    of one.
    """
    folder = decisions_dir(settings)
    (folder / OPEN_FOLDER).mkdir(parents=True, exist_ok=True)
    stamp = decision.decided_at.strftime("%Y%m%dT%H%M%S%f")
    name = f"{stamp}-{decision.decision_id}.jsonl"
    partial = folder / OPEN_FOLDER / name
    with partial.open("w", encoding="utf-8") as f:
        f.write(json.dumps(decision.record(), sort_keys=True, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())
    target = folder / name
    os.replace(partial, target)
    return target


# --- The moves -----------------------------------------------------------------------------------


def registry_of(settings: Settings, model: str) -> ModelRegistry:
    """The registry of ``model`` on the settings' stores."""
    return ModelRegistry(mlflow_client(settings), model)


def _apply(client: EndpointClient, config: EndpointConfig) -> EndpointConfig:
    """Put ``config`` in place and wait until the server serves it."""
    for attempt in range(3):
        try:
            client.update_config(config.name, config.body())
            break
        except ServingError as exc:
            # Another update (an alias the endpoint follows moved) is under way: wait for it.
            if exc.status != 409 or attempt == 2:
                raise
            client.wait_ready(config.name)
    return EndpointConfig.of(client.wait_ready(config.name))


def create_endpoint(
    client: EndpointClient,
    settings: Settings,
    name: str,
    version: int | str = CHAMPION,
    model: str | None = None,
) -> Decision:
    """Create endpoint ``name`` serving ``model`` (default the settings' model) at ``version``
    (a number, or an alias the endpoint follows) with all the traffic; record the decision."""
    model = model or settings.model_name
    entity = entity_config(CHAMPION_ENTITY, model, version)
    config = EndpointConfig(name, (entity,), {CHAMPION_ENTITY: 100})
    client.create(name, config.body())
    after = EndpointConfig.of(client.wait_ready(name))
    champion = served_version(registry_of(settings, model), entity, after)
    decision = Decision(
        name,
        "create",
        "manual",
        True,
        f"{model} version {champion}"
        + ("" if str(version).isdigit() else f" (alias {version}, followed)")
        + " serves all the traffic",
        {"after": after.summary()},
        model_name=model,
        champion_version=champion,
    )
    record_decision(settings, decision)
    return decision


def delete_endpoint(client: EndpointClient, settings: Settings, name: str) -> Decision:
    """Delete endpoint ``name``; record the decision."""
    before = EndpointConfig.of(client.get(name))
    client.delete(name)
    decision = Decision(
        name, "delete", "manual", True, "endpoint deleted", {"before": before.summary()}
    )
    record_decision(settings, decision)
    return decision


def start_canary(
    client: EndpointClient, settings: Settings, name: str, version: int, percent: int
) -> Decision:
    """Serve ``version`` as the ``canary`` entity of ``name`` with ``percent`` % of the traffic,
    the rest to the champion entity; ``version`` gets the registry's ``challenger`` alias.

    Run again to change the share (or the version) of a running canary.

    Raises:
        ValueError: ``percent`` is not between 1 and 99.
        ServingError: unknown endpoint or version, or ``version`` is the champion's.
    """
    if not 1 <= percent <= 99:
        raise ValueError(f"--percent must be between 1 and 99, got {percent}")
    before = EndpointConfig.of(client.get(name))
    champion = before.champion()
    model = str(champion["entity_name"])
    registry = registry_of(settings, model)
    champion_version = served_version(registry, champion, before)
    if version == champion_version:
        raise ServingError(f"version {version} of {model} is already the champion of {name!r}")
    try:
        registry.set_challenger(version)
    except ValueError as exc:
        raise ServingError(str(exc)) from None
    canary = entity_config(CANARY_ENTITY, model, version)
    kept = [e for e in before.entities if e["name"] not in (CANARY_ENTITY, champion["name"])]
    shadow = (before.shadow or {}).get("served_entity_name")
    entities = [champion, canary, *[e for e in kept if e["name"] == shadow]]
    routes = {champion["name"]: 100 - percent, CANARY_ENTITY: percent}
    after = _apply(client, before.with_entities(entities, routes))
    decision = Decision(
        name,
        "canary",
        "manual",
        True,
        f"version {version} takes {percent}% of the traffic, champion version "
        f"{champion_version} the rest",
        {"before": before.summary(), "after": after.summary()},
        model_name=model,
        champion_version=champion_version,
        canary_version=version,
        canary_percent=percent,
    )
    record_decision(settings, decision)
    return decision


def running_canary(config: EndpointConfig, move: str) -> tuple[dict[str, Any], int]:
    """The ``canary`` entity of ``config`` and its version; :class:`ServingError` without one."""
    canary = config.canary()
    if canary is None:
        raise ServingError(f"endpoint {config.name!r} has no canary to {move}")
    return canary, int(str(canary["entity_version"]))


def promote_canary(
    client: EndpointClient,
    settings: Settings,
    name: str,
    *,
    force: bool = False,
    trigger: str = "manual",
    reason: str | None = None,
    evidence: dict[str, Any] | None = None,
    verdict: str | None = None,
) -> Decision:
    """Make the canary's version the champion and give it all the traffic.

    First the canary takes all the traffic (it is loaded and warm); then the registry's
    ``champion`` alias moves to its version (the legacy stage in step, the former champion
    archived); then the champion entity, following the alias or pinned to the new version, is
    loaded afresh and takes all the traffic, and the ``canary`` entity goes. No request fails on
    the way and none is answered by the former champion after the first step.

    Raises:
        ServingError: unknown endpoint, no canary, or the registry refuses (a version the gate
            rejected needs ``force``).
    """
    before = EndpointConfig.of(client.get(name))
    canary, version = running_canary(before, "promote")
    champion = before.champion()
    model = str(champion["entity_name"])
    registry = registry_of(settings, model)
    champion_version = served_version(registry, champion, before)
    _apply(client, before.with_entities([canary], {CANARY_ENTITY: 100}))
    try:
        registry.promote(version, force=force)
    except ValueError as exc:
        # The registry refused: the traffic goes back where it was.
        _apply(client, before)
        raise ServingError(str(exc)) from None
    follows = not str(champion["entity_version"]).isdigit()
    new = entity_config(
        str(champion["name"]), model, champion["entity_version"] if follows else version
    )
    after = _apply(client, before.with_entities([new], {new["name"]: 100}))
    decision = Decision(
        name,
        "promote",
        trigger,
        True,
        reason or f"version {version} promoted from canary to champion (was {champion_version})",
        {"before": before.summary(), "after": after.summary(), **(evidence or {})},
        model_name=model,
        champion_version=champion_version,
        canary_version=version,
        canary_percent=0,
        verdict=verdict,
    )
    record_decision(settings, decision)
    return decision


def rollback_canary(
    client: EndpointClient,
    settings: Settings,
    name: str,
    *,
    trigger: str = "manual",
    reason: str | None = None,
    evidence: dict[str, Any] | None = None,
    verdict: str | None = None,
) -> Decision:
    """Send all the traffic back to the champion and remove the ``canary`` entity; the
    canary's version loses the ``challenger`` alias (and its Staging stage).

    Raises:
        ServingError: unknown endpoint or no canary.
    """
    before = EndpointConfig.of(client.get(name))
    _, version = running_canary(before, "roll back")
    champion = before.champion()
    model = str(champion["entity_name"])
    registry = registry_of(settings, model)
    champion_version = served_version(registry, champion, before)
    after = _apply(client, before.with_entities([champion], {champion["name"]: 100}))
    if registry.aliases().get(CHALLENGER) == version:
        registry.client.delete_registered_model_alias(model, CHALLENGER)
        # Aliases and legacy stages stay in step: a version without an alias is Archived.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stages are deprecated in MLflow
            registry.client.transition_model_version_stage(model, str(version), ARCHIVED)
    registry.tag_version(version, {"lakehouse.canary.rolled_back_at": str(datetime.now(UTC))})
    decision = Decision(
        name,
        "rollback",
        trigger,
        True,
        reason
        or f"canary version {version} rolled back; champion version {champion_version} "
        "serves all the traffic",
        {"before": before.summary(), "after": after.summary(), **(evidence or {})},
        model_name=model,
        champion_version=champion_version,
        canary_version=version,
        canary_percent=0,
        verdict=verdict,
    )
    record_decision(settings, decision)
    return decision
