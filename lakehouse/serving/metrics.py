"""Prometheus metrics of the serving process (names and labels are an interface: the Grafana
dashboard and the Prometheus tests query them).

==============================================  =========  ===============================
metric                                          type       labels
==============================================  =========  ===============================
``lakehouse_serving_requests_total``            counter    endpoint, served_entity, status
``lakehouse_serving_request_duration_seconds``  histogram  endpoint, served_entity
``lakehouse_serving_in_flight_requests``        gauge      endpoint
``lakehouse_serving_model_load_seconds``        gauge      endpoint, served_entity
``lakehouse_serving_feature_lookup_seconds``    histogram  endpoint
``lakehouse_serving_score``                     histogram  endpoint, served_entity
``lakehouse_serving_shadow_requests_total``     counter    endpoint, served_entity
``lakehouse_serving_inference_log_errors_total``  counter  endpoint
``lakehouse_serving_loaded_model``              gauge      model, version
==============================================  =========  ===============================

``status`` is the HTTP status code; ``served_entity`` is empty for a request that failed before
it was routed. ``lakehouse_serving_loaded_model`` is 1 for each model version in memory; a
version no endpoint serves any more loses its series. Each server owns one
:class:`ServingMetrics` (its own registry), so tests can start several in one process.

The whole-server ``/metrics`` also carries the metrics other processes leave as ``*.prom``
files in one folder (:class:`TextFiles`): the monitors' gauges, written at each refresh by a
batch job that is gone before any scrape (node_exporter's textfile collector).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

#: Buckets of request durations, seconds: sub-millisecond to seconds.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
#: Buckets of feature lookups, seconds.
LOOKUP_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.5,
)
#: Buckets of scores: 0.1 to 1.0 in steps of 0.1.
SCORE_BUCKETS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = logging.getLogger(__name__)

# The ``*_created`` series double the output and no dashboard reads them.
disable_created_metrics()


class ServingMetrics:
    """The metrics of one server, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "lakehouse_serving_requests",
            "Invocations answered, by endpoint, served entity and HTTP status.",
            ("endpoint", "served_entity", "status"),
            registry=r,
        )
        self.duration = Histogram(
            "lakehouse_serving_request_duration_seconds",
            "Time from receiving an invocation to answering it.",
            ("endpoint", "served_entity"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "lakehouse_serving_in_flight_requests",
            "Invocations received and not answered yet.",
            ("endpoint",),
            registry=r,
        )
        self.model_load = Gauge(
            "lakehouse_serving_model_load_seconds",
            "Seconds the served entity's current model version took to load and warm.",
            ("endpoint", "served_entity"),
            registry=r,
        )
        self.feature_lookup = Histogram(
            "lakehouse_serving_feature_lookup_seconds",
            "Time of one online feature store lookup (a batch of customers).",
            ("endpoint",),
            buckets=LOOKUP_BUCKETS,
            registry=r,
        )
        self.score = Histogram(
            "lakehouse_serving_score",
            "Scores (probability of default) answered, per served entity.",
            ("endpoint", "served_entity"),
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.shadow = Counter(
            "lakehouse_serving_shadow_requests",
            "Copies of invocations sent to a shadow entity.",
            ("endpoint", "served_entity"),
            registry=r,
        )
        self.log_errors = Counter(
            "lakehouse_serving_inference_log_errors",
            "Inference log records that could not be written.",
            ("endpoint",),
            registry=r,
        )

        self.loaded = Gauge(
            "lakehouse_serving_loaded_model",
            "1 for each model version loaded in the server's memory.",
            ("model", "version"),
            registry=r,
        )

    def render(self, endpoint: str | None = None) -> bytes:
        """The Prometheus text of every metric, or only the samples of ``endpoint``."""
        text = generate_latest(self.registry)
        if endpoint is None:
            return text
        return filter_endpoint(text.decode(), endpoint).encode()

    def forget(self, endpoint: str, served_entities: list[str]) -> None:
        """Drop the gauges of a deleted endpoint (counters and histograms stay, as Prometheus
        expects of counters)."""
        for entity in served_entities:
            with contextlib.suppress(KeyError):
                self.model_load.remove(endpoint, entity)
        with contextlib.suppress(KeyError):
            self.in_flight.remove(endpoint)

    def forget_model(self, model: str, version: str) -> None:
        """Drop the series of a model version no longer in memory."""
        with contextlib.suppress(KeyError):
            self.loaded.remove(model, version)


class TextFiles:
    """The ``*.prom`` files of ``folder`` (Prometheus text), read at each scrape.

    A file is parsed when it changed since the last scrape (name, size and modification time),
    and left out, with a warning, when it cannot be read or does not parse. Families of the
    same name in several files come out as one group under one ``# HELP`` and ``# TYPE``, as
    the text format requires. Writers replace a file by renaming a complete one over it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._parsed: dict[Path, tuple[tuple[int, int, int], dict[str, list[str]]]] = {}

    def render(self) -> bytes:
        """The samples of every file, grouped by metric family."""
        try:
            paths = sorted(self.folder.glob("*.prom"))
        except OSError:
            paths = []
        groups: dict[str, list[str]] = {}
        seen: dict[Path, tuple[tuple[int, int, int], dict[str, list[str]]]] = {}
        for path in paths:
            blocks = self._blocks(path, seen)
            for family, lines in blocks.items():
                if family in groups:
                    groups[family] += [line for line in lines if not line.startswith("#")]
                else:
                    groups[family] = list(lines)
        self._parsed = seen
        if not groups:
            return b""
        return ("\n".join(line for lines in groups.values() for line in lines) + "\n").encode()

    def _blocks(
        self, path: Path, seen: dict[Path, tuple[tuple[int, int, int], dict[str, list[str]]]]
    ) -> dict[str, list[str]]:
        try:
            stat = path.stat()
            key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            cached = self._parsed.get(path)
            if cached is not None and cached[0] == key:
                seen[path] = cached
                return cached[1]
            text = path.read_text(encoding="utf-8")
            for _family in text_string_to_metric_families(text):
                pass
        except Exception as exc:  # another process's file never fails the scrape
            log.warning("metrics file %s left out: %s", path, exc)
            return {}
        blocks = family_blocks(text)
        seen[path] = (key, blocks)
        return blocks


def family_blocks(text: str) -> dict[str, list[str]]:
    """The lines of Prometheus ``text`` by metric family: a family is named by its ``# HELP``
    or ``# TYPE`` line, and takes the samples that follow it."""
    blocks: dict[str, list[str]] = {}
    family = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(maxsplit=3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                family = parts[2]
                block = blocks.setdefault(family, [])
                if not any(known.split(maxsplit=2)[:2] == parts[:2] for known in block):
                    block.append(line)
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if family is None or not name.startswith(family):
            family = name
        blocks.setdefault(family, []).append(line)
    return blocks


def filter_endpoint(text: str, endpoint: str) -> str:
    """The lines of Prometheus ``text`` that describe metrics or carry ``endpoint="..."``."""
    wanted = f'endpoint="{_escape(endpoint)}"'
    lines = []
    for line in text.splitlines():
        if line.startswith("#") or wanted in line:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of Prometheus ``text``: ``(name, sorted labels) -> value`` (for tests, tools)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out
