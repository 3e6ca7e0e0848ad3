"""The monitors as the serving side sees them: their gauges files on the server's ``/metrics``,
the monitoring dashboard evaluated by Debian's Prometheus, and the retrain action's challenger
started as a canary on an endpoint of a running server."""

from __future__ import annotations

import datetime as dt
import json
import re
import runpy
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from pyspark.sql import SparkSession

from lakehouse.cli import main as cli_main
from lakehouse.monitoring.alerts import AlertRule
from lakehouse.monitoring.definition import MonitorInfo, MonitorTimeSeries, save_monitor
from lakehouse.monitoring.gauges import (
    METRIC_NAMES,
    DriftFigure,
    MonitorFigures,
    QualityFigure,
    write_figures,
)
from lakehouse.platform.catalog import TableCatalog
from lakehouse.serving.metrics import TextFiles, parse
from lakehouse.serving.process import ServerProcess, free_port
from lakehouse.workflows.monitoring import (
    CanaryRequest,
    MonitoringOutcome,
    actions_table_name,
    refresh_and_evaluate,
)
from tests.serving.conftest import Registry
from tests.serving.test_observability import PROMETHEUS_CONFIG, api, until

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAFANA = REPO_ROOT / "docker" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "monitoring.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "lakehouse.yml"
#: Grafana's variables, as "all" (or the default statistic) for Prometheus.
VARIABLES = {"$table": ".*", "$statistic": "psi", "$drift_type": ".*", "$__range": "5m"}

FIGURES = MonitorFigures(
    table="gold.monitored_predictions",
    refreshed_at=time.time(),
    windows={"1 day": (1767139200.0, 120)},
    drift=[
        DriftFigure("income", "psi", "BASELINE", "1 day", 0.31),
        DriftFigure("income", "ks", "CONSECUTIVE", "1 day", 0.12),
    ],
    quality=[
        QualityFigure("3", "roc_auc", 0.81),
        QualityFigure("3", "log_loss", 0.45),
        QualityFigure("3", "percent_labeled", 0.6),
    ],
    alerts_total={"input_psi": 2},
    firing={"input_psi": ["income"]},
)


def server_home(server: ServerProcess) -> Path:
    return Path(server.env["LAKEHOUSE_HOME"])


def scrape(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


# --- The folder of gauges files -------------------------------------------------------------------
def test_files_of_the_same_families_come_out_grouped_and_a_bad_file_is_left_out(
    tmp_path: Path,
) -> None:
    write_figures(FIGURES, tmp_path)
    write_figures(MonitorFigures("gold.other", 5.0, {"1 day": (0.0, 7)}), tmp_path)
    (tmp_path / "broken.prom").write_text("lakehouse_x{a=\n")
    (tmp_path / "notes.txt").write_text("not metrics\n")
    text = TextFiles(tmp_path).render().decode()
    types = re.findall(r"^# TYPE (\w+)", text, flags=re.M)
    assert len(types) == len(set(types)) == len(METRIC_NAMES)
    samples = parse(text)
    rows = {labels: v for (name, labels), v in samples.items() if name.endswith("_rows")}
    assert rows == {
        (("granularity", "1 day"), ("table", "gold.monitored_predictions")): 120,
        (("granularity", "1 day"), ("table", "gold.other")): 7,
    }
    assert "lakehouse_x" not in text
    assert TextFiles(tmp_path / "missing").render() == b""


# --- The dashboard --------------------------------------------------------------------------------
def dashboard_queries() -> list[str]:
    """Every PromQL expression of the monitoring dashboard: targets and template variables."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["query"]["query"])
        assert match, var
        exprs.append(match.group(1))
    return exprs


def concrete(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def test_the_monitoring_dashboard_is_provisioned_and_queries_only_the_gauges() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] == "Lakehouse model monitoring" and board["uid"] == "lakehouse-monitoring"
    datasource = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]
    uids = {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]}
    uids |= {p["datasource"]["uid"] for p in board["panels"]}
    uids |= {v["datasource"]["uid"] for v in board["templating"]["list"]}
    assert uids == {datasource["uid"]}
    # The provider loads every dashboard of the folder compose mounts.
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    mounts = dict(v.split(":")[:2] for v in compose["grafana"]["volumes"] if ":" in v)
    assert mounts["./docker/grafana/dashboards"] == provider["options"]["path"]
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("drift per column", "model quality per version", "alerts firing", "refresh age"):
        assert topic in titles
    queried = set().union(*(re.findall(r"\blakehouse_\w+", e) for e in dashboard_queries()))
    assert queried and queried <= set(METRIC_NAMES), queried - set(METRIC_NAMES)


@contextmanager
def prometheus(target: ServerProcess, folder: Path) -> Iterator[str]:
    """Debian's Prometheus with compose's scrape job pointed at ``target``, scraping 1/s."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian package prometheus; .ci/run installs it)")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{target.port}"]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(folder / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:

            def ready() -> bool:
                assert process.poll() is None, (folder / "prometheus.log").read_text()[-2000:]
                try:
                    with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                        return bool(response.status == 200)
                except OSError:
                    return False

            until(ready, timeout=60)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


# --- The server -----------------------------------------------------------------------------------
@pytest.mark.mlflow
def test_the_server_appends_the_gauges_files_at_each_scrape_and_prometheus_answers_the_dashboard(
    server: ServerProcess, tmp_path: Path
) -> None:
    folder = server_home(server) / "metrics" / "monitoring"
    write_figures(FIGURES, folder)
    (folder / "half.prom").write_text("# TYPE lakehouse_half gauge\nlakehouse_half{a=\n")
    text = scrape(server)
    samples = parse(text)
    table = ("table", "gold.monitored_predictions")
    psi = (
        "lakehouse_monitoring_drift",
        (
            ("column", "income"),
            ("drift_type", "BASELINE"),
            ("granularity", "1 day"),
            ("statistic", "psi"),
            table,
        ),
    )
    assert samples[psi] == 0.31
    assert samples[("lakehouse_monitoring_alerts_total", (("rule", "input_psi"), table))] == 2
    assert "# TYPE lakehouse_serving_requests_total counter" in text  # the server's own
    assert not any(name == "lakehouse_half" for name, _ in samples)

    # Read at scrape time: the next refresh's figures are in the next scrape.
    later = DriftFigure("income", "psi", "BASELINE", "1 day", 0.05)
    write_figures(replace(FIGURES, drift=[later, *FIGURES.drift[1:]]), folder)
    assert parse(scrape(server))[psi] == 0.05

    # Prometheus scrapes the server as compose does; every dashboard query has an answer.
    with prometheus(server, tmp_path) as url:
        for expr in map(concrete, dashboard_queries()):
            until(lambda e=expr: api(url, "query", query=e)["result"])


# --- Retrain, then canary -------------------------------------------------------------------------
MONDAY = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
ENDPOINT = "monitored"
EVERY_WINDOW = AlertRule(
    name="every_window", metric="count", table="profile", columns="table", above=0, action="retrain"
)


def monitored(spark: SparkSession, catalog: TableCatalog, name: str) -> None:
    """A two-day table with a daily time-series monitor."""
    rows = [
        (MONDAY + dt.timedelta(days=d, minutes=i), float(i + d)) for d in (0, 1) for i in range(20)
    ]
    spark.createDataFrame(rows, "ts timestamp, x double").write.format("delta").save(
        catalog.path(name)
    )
    save_monitor(
        spark,
        catalog,
        MonitorInfo(name, "silver", time_series=MonitorTimeSeries("ts", ["1 day"])),
    )


def action_row(spark: SparkSession, catalog: TableCatalog, outcome: MonitoringOutcome) -> dict:
    (row,) = catalog.read(spark, actions_table_name(outcome.info)).collect()
    return dict(row.asDict())


@pytest.mark.mlflow
def test_a_passing_challenger_becomes_the_endpoint_s_canary_and_a_dead_server_is_recorded(
    spark: SparkSession, registry: Registry, server: ServerProcess, tmp_path: Path
) -> None:
    catalog = TableCatalog(str(tmp_path / "tables"))
    settings = registry.settings.with_home(server_home(server))
    config = {
        "served_entities": [
            {"name": "champion", "entity_name": "credit_risk_model", "entity_version": "champion"}
        ]
    }
    status, body = server.request(
        "POST", "/api/2.0/serving-endpoints", {"name": ENDPOINT, "config": config}
    )
    assert status == 200, body
    server.wait_ready(ENDPOINT)

    def retrain(spark, settings, catalog):  # a gated challenger: the registry's version 2
        return "run-monitoring", registry.v2, "challenger"

    # No server where the request points: the action is recorded, its detail says why.
    monitored(spark, catalog, "silver.unserved")
    dead = CanaryRequest(ENDPOINT, 10, url=f"http://127.0.0.1:{free_port()}")
    outcome = refresh_and_evaluate(
        spark,
        settings,
        catalog,
        "silver.unserved",
        act=True,
        rules=[EVERY_WINDOW],
        retrain_fn=retrain,
        canary=dead,
    )
    (error,) = outcome.errors
    assert "cannot reach the serving endpoint server" in error and "\n" not in error
    row = action_row(spark, catalog, outcome)
    assert (row["status"], row["model_version"], row["detail"]) == (
        "challenger",
        registry.v2,
        error,
    )
    assert f"lakehouse endpoint canary {ENDPOINT} --version {registry.v2} --percent 10" in error

    # The running server: version 2 takes 10 % of the endpoint's traffic.
    monitored(spark, catalog, "silver.served")
    outcome = refresh_and_evaluate(
        spark,
        settings,
        catalog,
        "silver.served",
        act=True,
        rules=[EVERY_WINDOW],
        retrain_fn=retrain,
        canary=CanaryRequest(ENDPOINT, 10, url=server.url),
    )
    assert outcome.errors == []
    endpoint = server.wait_ready(ENDPOINT)
    served = {e["name"]: e["entity_version"] for e in endpoint["config"]["served_entities"]}
    assert served["canary"] == str(registry.v2)
    routes = {
        r["served_entity_name"]: r["traffic_percentage"]
        for r in endpoint["config"]["traffic_config"]["routes"]
    }
    assert routes == {"champion": 90, "canary": 10}
    row = action_row(spark, catalog, outcome)
    assert row["status"] == "challenger" and row["model_version"] == registry.v2
    assert row["detail"].startswith(f"canary on endpoint '{ENDPOINT}': version {registry.v2} takes")

    # The refresh's gauges are on the server's /metrics.
    samples = parse(scrape(server))
    firing = (
        "lakehouse_monitoring_alert_firing",
        (("column", ":table"), ("rule", "every_window"), ("table", "silver.served")),
    )
    assert samples[firing] == 1
    rows = ("lakehouse_monitoring_rows", (("granularity", "1 day"), ("table", "silver.served")))
    assert samples[rows] == 20


def test_canary_flags_are_checked_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["monitor", "refresh", "gold.x", "--canary-endpoint", "credit"]) == 2
    assert "--canary-endpoint needs --act" in capsys.readouterr().err
    args = ["monitor", "refresh", "gold.x", "--act", "--canary-endpoint", "credit"]
    assert cli_main([*args, "--canary-percent", "100"]) == 2
    assert "between 1 and 99" in capsys.readouterr().err
    # jobs/monitor.py takes the same flags, checked the same way before a session starts.
    job = runpy.run_path(str(REPO_ROOT / "jobs" / "monitor.py"))
    assert job["main"](["gold.x", "--canary-endpoint", "credit"]) == 2
    assert "--canary-endpoint needs --act" in capsys.readouterr().err
    assert (
        job["main"](["gold.x", "--act", "--canary-endpoint", "credit", "--canary-percent", "0"])
        == 2
    )
    assert "between 1 and 99" in capsys.readouterr().err
