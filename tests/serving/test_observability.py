"""Prometheus and Grafana as docker-compose.yml runs them, against a real serving process.

Debian's ``prometheus`` scrapes ``lakehouse serve`` with the scrape job of
``docker/prometheus/prometheus.yml`` (its target rewritten to the test's port), and the metrics
are read back through Prometheus's HTTP API. Every query of the provisioned Grafana dashboard
must name metrics the server exports, and must parse as PromQL (Prometheus's own parser).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lakehouse.serving.metrics import parse
from lakehouse.serving.process import ServerProcess, free_port
from tests.serving.conftest import Registry, request_rows, start_server

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = REPO_ROOT / "docker" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO_ROOT / "docker" / "grafana" / "dashboards" / "serving.json"
DATASOURCE = REPO_ROOT / "docker" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
ENDPOINT = "observed"
#: Suffixes Prometheus adds to a histogram's series.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

pytestmark = pytest.mark.mlflow


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variables."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for var in board.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query or "")
        if match:
            exprs.append(match.group(1))
    return exprs


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\blakehouse_\w+", expr))


def test_the_dashboard_is_provisioned_on_the_compose_datasource() -> None:
    board = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]
    uids = {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]}
    assert uids == {datasource["uid"]}
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("traffic split", "p50", "p99", "errors", "score distribution"):
        assert topic in titles
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    mounts = " ".join(compose["grafana"]["volumes"])
    assert "./docker/grafana/dashboards" in mounts and "./docker/grafana/provisioning" in mounts
    assert any("prometheus.yml" in v for v in compose["prometheus"]["volumes"])
    assert compose["serving"]["command"][:2] == ["lakehouse", "serve"]


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("prometheus is not installed (Debian package prometheus; .ci/run installs it)")
    return path


@pytest.fixture(scope="module")
def served(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with one endpoint (champion 80%, challenger 20%) that has answered requests."""
    server = start_server(registry.env, tmp_path_factory.mktemp("observability-logs"))
    config = {
        "served_entities": [
            {"name": "champion", "entity_name": "credit_risk_model", "entity_version": "champion"},
            {
                "name": "challenger",
                "entity_name": "credit_risk_model",
                "entity_version": str(registry.v2),
            },
        ],
        "traffic_config": {
            "routes": [
                {"served_entity_name": "champion", "traffic_percentage": 80},
                {"served_entity_name": "challenger", "traffic_percentage": 20},
            ]
        },
    }
    status, body = server.request(
        "POST", "/api/2.0/serving-endpoints", {"name": ENDPOINT, "config": config}
    )
    assert status == 200, body
    server.wait_ready(ENDPOINT)
    rows = request_rows(40).to_dict(orient="records")
    for i, row in enumerate(rows):
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
        status, body = server.request(
            "POST",
            f"/serving-endpoints/{ENDPOINT}/invocations",
            {"dataframe_records": [clean], "client_request_id": f"c{i}"},
        )
        assert status == 200, body
    status, _ = server.request("POST", f"/serving-endpoints/{ENDPOINT}/invocations", {"nope": 1})
    assert status == 400
    yield server
    server.stop()


def exported_names(server: ServerProcess) -> set[str]:
    """Names of the series the server declares (``# TYPE`` lines), with the suffixes Prometheus
    gives them: a labelled counter nothing has counted yet has no sample but is declared."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    names = set()
    for family, kind in re.findall(r"^# TYPE (\w+) (\w+)$", text, flags=re.M):
        names.add(family)
        if kind == "counter":
            names.add(family if family.endswith("_total") else f"{family}_total")
        if kind == "histogram":
            names.update(family + suffix for suffix in HISTOGRAM_SUFFIXES)
    assert {name for name, _labels in parse(text)} <= names
    return names


def test_every_metric_the_dashboard_queries_is_exported(served: ServerProcess) -> None:
    exported = exported_names(served)
    queried = set().union(*(metric_names(e) for e in dashboard_queries()))
    assert queried, "the dashboard queries no lakehouse metric"
    missing = sorted(queried - exported)
    assert not missing, f"the dashboard queries metrics the server does not export: {missing}"


@pytest.fixture(scope="module")
def prometheus(
    prometheus_bin: str, served: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Debian's Prometheus with compose's scrape job pointed at the test server, scraping 1/s."""
    folder = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{served.port}"]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(folder / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, (folder / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def api(prometheus: str, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{prometheus}/api/v1/{path}?{query}", timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def until(fn: Any, timeout: float = 30.0) -> Any:
    """The first truthy value of ``fn()``, polled; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for Prometheus"
        time.sleep(0.5)


def test_prometheus_scrapes_the_server_and_answers_the_dashboard(
    prometheus: str, served: ServerProcess
) -> None:
    target = until(
        lambda: [t for t in api(prometheus, "targets")["activeTargets"] if t["health"] == "up"]
    )
    assert target[0]["labels"]["job"] == "lakehouse-serving"

    def by_entity() -> dict[str, float]:
        result = api(
            prometheus,
            "query",
            query="sum by (served_entity) (lakehouse_serving_requests_total"
            f'{{endpoint="{ENDPOINT}",status="200"}})',
        )["result"]
        return {r["metric"]["served_entity"]: float(r["value"][1]) for r in result}

    counts = until(lambda: by_entity() if sum(by_entity().values()) >= 40 else None)
    assert sum(counts.values()) == 40
    assert set(counts) <= {"champion", "challenger"} and counts.get("champion", 0) > 0

    errors = api(
        prometheus,
        "query",
        query=f'sum(lakehouse_serving_requests_total{{endpoint="{ENDPOINT}",status="400"}})',
    )["result"]
    assert float(errors[0]["value"][1]) == 1

    scored = api(
        prometheus,
        "query",
        query=f'sum(lakehouse_serving_score_count{{endpoint="{ENDPOINT}"}})',
    )["result"]
    assert float(scored[0]["value"][1]) == 40

    # Every dashboard query is valid PromQL and evaluates (Grafana's variables set to "all").
    for expr in dashboard_queries():
        concrete = expr.replace("$endpoint", ".*")
        api(prometheus, "query", query=concrete)
