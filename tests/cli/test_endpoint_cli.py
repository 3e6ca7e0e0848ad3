"""``lakehouse endpoint``: canary, promotion and rollback against a real serving process, every
decision in ``gold.serving_decisions``, every answered request once in ``gold.inference_log``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pyspark.sql import SparkSession

from lakehouse.cli import main as cli_main
from lakehouse.models.registry import promote
from lakehouse.platform.catalog import GOLD_INFERENCE_LOG, GOLD_SERVING_DECISIONS, TableCatalog
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.serving.process import ServerProcess, free_port
from tests.conftest import REPO_ROOT
from tests.serving.conftest import register, request_rows

ENDPOINT = "credit"


@dataclass
class Served:
    settings: Settings
    env: dict[str, str]
    server: ServerProcess
    v1: int
    v2: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Versions 1 (champion) and 2 of the model in a temporary home, and ``lakehouse serve``
    on it (started as a subprocess on a free port; ready once ``/health`` answers)."""
    home = tmp_path_factory.mktemp("endpoint-home")
    env = {
        "LAKEHOUSE_HOME": str(home),
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
        "LAKEHOUSE_SERVING_ALIAS_POLL_SECONDS": "0.2",
        "LAKEHOUSE_SERVING_SPOOL_ROLL_SECONDS": "0.5",
    }
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "LAKEHOUSE_SERVING_TOKEN"):
        os.environ.pop(key, None)
    settings = load_settings("local", env=env)
    v1 = register(settings, 1)
    v2 = register(settings, 2)
    promote(settings, v1)  # alias and stage in step, as training leaves them
    log = tmp_path_factory.mktemp("endpoint-logs") / "server.log"
    with ServerProcess(env=env, log_path=log) as server:
        yield Served(settings, {**env, "LAKEHOUSE_SERVING_URL": server.url}, server, v1, v2)


@pytest.fixture
def cli_env(served: Served, monkeypatch: pytest.MonkeyPatch) -> Served:
    """The CLI of this process pointed at the server and its home."""
    for key, value in served.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LAKEHOUSE_PROFILE", raising=False)
    return served


def endpoint(served: Served) -> tuple[dict[str, int], dict[str, int]]:
    """(routes, served versions) of the endpoint as the server shows them."""
    status, body = served.server.request("GET", f"/api/2.0/serving-endpoints/{ENDPOINT}")
    assert status == 200, body
    config = body["config"]
    routes = {
        r["served_entity_name"]: r["traffic_percentage"] for r in config["traffic_config"]["routes"]
    }
    versions = {e["name"]: int(e["entity_version"]) for e in config["served_entities"]}
    return routes, versions


def registry_state(settings: Settings) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Version -> (stage, aliases)."""
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    aliases: dict[int, list[str]] = {}
    for alias, version in (client.get_registered_model(settings.model_name).aliases or {}).items():
        aliases.setdefault(int(version), []).append(alias)
    return {
        int(mv.version): (mv.current_stage, tuple(sorted(aliases.get(int(mv.version), []))))
        for mv in client.search_model_versions(f"name = '{settings.model_name}'")
    }


def invoke(served: Served, n: int) -> Counter[str]:
    """Send ``n`` one-row requests; which served entity answered how many (all must succeed)."""
    frame = request_rows(n)
    rows = frame.astype(object).where(frame.notna(), None)  # JSON has no NaN
    answered: Counter[str] = Counter()
    for i, record in enumerate(rows.to_dict(orient="records")):
        body = json.dumps(
            {"dataframe_records": [record], "client_request_id": f"req-{uuid.uuid4().hex[:8]}-{i}"}
        ).encode()
        request = urllib.request.Request(
            f"{served.server.url}/serving-endpoints/{ENDPOINT}/invocations",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
            answered[answer.headers["X-Lakehouse-Served-Entity"]] += 1
    return answered


def wait_sealed(settings: Settings, timeout: float = 20.0) -> None:
    """Wait until the server has sealed every spool file it wrote."""
    open_dir = settings.landing_dir / "inference_log" / "_open"
    deadline = time.monotonic() + timeout
    while any(p.stat().st_size for p in open_dir.glob("*.jsonl")):
        assert time.monotonic() < deadline, "the server did not seal its spool files"
        time.sleep(0.1)


def no_jvm_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``env`` with a ``java`` first on the PATH that refuses to start."""
    stub = tmp_path / "no-java"
    stub.mkdir()
    (stub / "java").write_text("#!/bin/sh\necho 'no JVM here' >&2\nexit 1\n")
    (stub / "java").chmod(0o755)
    out = {k: v for k, v in {**os.environ, **env}.items() if k != "JAVA_HOME"}
    out["PATH"] = f"{stub}{os.pathsep}{out['PATH']}"
    return out


def lakehouse(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``lakehouse ARGS`` in a child process."""
    script = Path(sys.executable).with_name("lakehouse")
    return subprocess.run(
        [str(script), *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.mlflow
@pytest.mark.service
def test_canary_promote_rollback_and_automatic_analysis_against_the_server(
    cli_env: Served,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    spark: SparkSession,
) -> None:
    served = cli_env
    settings = served.settings
    v1, v2 = served.v1, served.v2

    assert cli_main(["endpoint", "create", ENDPOINT]) == 0
    assert f"endpoint {ENDPOINT} created: credit_risk_model version {v1}" in capsys.readouterr().out
    assert endpoint(served) == ({"champion": 100}, {"champion": v1})

    # A canary from a process that cannot start a JVM: the command needs none.
    done = lakehouse(
        ["endpoint", "canary", ENDPOINT, "--version", str(v2), "--percent", "30"],
        no_jvm_env(served.env, tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert f"version {v2} takes 30% of the traffic" in done.stdout
    assert endpoint(served) == ({"champion": 70, "canary": 30}, {"champion": v1, "canary": v2})
    assert registry_state(settings)[v2] == ("Staging", ("challenger",))
    answered = invoke(served, 120)
    assert set(answered) == {"champion", "canary"}
    sent = sum(answered.values())

    # Rollback by hand: all the traffic back, the challenger alias gone.
    assert cli_main(["endpoint", "rollback", ENDPOINT]) == 0
    assert f"canary version {v2} rolled back" in capsys.readouterr().out
    assert endpoint(served) == ({"champion": 100}, {"champion": v1})
    assert registry_state(settings) == {v1: ("Production", ("champion",)), v2: ("Archived", ())}
    assert cli_main(["endpoint", "promote", ENDPOINT]) == 1
    assert capsys.readouterr().err == f"error: endpoint {ENDPOINT!r} has no canary to promote\n"

    # Canary again, then promotion by hand: the champion alias moves, the endpoint follows it.
    assert cli_main(["endpoint", "canary", ENDPOINT, "--version", str(v2), "--percent", "50"]) == 0
    assert cli_main(["endpoint", "promote", ENDPOINT]) == 0
    assert f"version {v2} promoted from canary to champion (was {v1})" in capsys.readouterr().out
    assert endpoint(served) == ({"champion": 100}, {"champion": v2})
    assert registry_state(settings) == {v2: ("Production", ("champion",)), v1: ("Archived", ())}
    assert invoke(served, 20) == Counter({"champion": 20})
    sent += 20

    # The former champion as canary; the analysis (lenient thresholds) promotes it back.
    assert cli_main(["endpoint", "canary", ENDPOINT, "--version", str(v1), "--percent", "50"]) == 0
    last = invoke(served, 120)
    sent += sum(last.values())
    wait_sealed(settings)
    lenient = [
        "--min-requests", "20", "--max-error-rate-increase", "0.5", "--max-psi", "100",
        "--max-ks", "1", "--max-p50-ratio", "100", "--max-p99-ratio", "100",
    ]  # fmt: skip
    done = lakehouse(["endpoint", "analyze", ENDPOINT, "--apply", *lenient], served.env)
    assert done.returncode == 0, done.stderr
    assert "verdict: promote" in done.stdout
    assert f"applied: canary of endpoint {ENDPOINT} promoted" in done.stdout
    assert endpoint(served) == ({"champion": 100}, {"champion": v1})
    assert registry_state(settings) == {v1: ("Production", ("champion",)), v2: ("Archived", ())}

    # Every answered request is in the inference log once; every decision is in the audit table.
    catalog = TableCatalog(settings.tables_root)
    log = catalog.read(spark, GOLD_INFERENCE_LOG).where(f"endpoint_name = '{ENDPOINT}'")
    assert log.count() == sent
    assert log.select("databricks_request_id").distinct().count() == sent
    assert {r[0] for r in log.select("route").distinct().collect()} == {"primary"}
    decisions = catalog.read(spark, GOLD_SERVING_DECISIONS).orderBy("decided_at").collect()
    assert [(d["action"], d["trigger"], d["canary_version"]) for d in decisions] == [
        ("create", "manual", None),
        ("canary", "manual", v2),
        ("rollback", "manual", v2),
        ("canary", "manual", v2),
        ("promote", "manual", v2),
        ("canary", "manual", v1),
        ("promote", "automatic", v1),
    ]
    automatic = json.loads(decisions[-1]["evidence"])
    assert decisions[-1]["verdict"] == "promote"
    assert automatic["thresholds"]["min_requests"] == 20
    assert automatic["canary"]["version"] == v1 and automatic["champion"]["version"] == v2
    # Compared from the canary's first request on: the champion's answers before it are not.
    assert automatic["canary"]["requests"] == last["canary"]
    assert 0 < automatic["champion"]["requests"] <= last["champion"]
    assert automatic["after"]["routes"] == {"champion": 100}


@pytest.mark.mlflow
@pytest.mark.service
def test_bad_input_gets_one_line_and_a_non_zero_exit(
    cli_env: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["endpoint", "get", "nowhere"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: endpoint 'nowhere' not found at {cli_env.server.url}\n"

    closed = f"http://127.0.0.1:{free_port()}"
    assert cli_main(["endpoint", "list", "--url", closed]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the serving endpoint server at {closed}: ")
    assert err.count("\n") == 1

    assert cli_main(["endpoint", "list", "--url", "localhost:8000"]) == 1
    assert "bad server URL 'localhost:8000'" in capsys.readouterr().err

    with pytest.raises(SystemExit) as usage:
        cli_main(["endpoint", "canary", ENDPOINT, "--version", "2", "--percent", "100"])
    assert usage.value.code == 2
    assert "expected 1 to 99 (100 is a promotion), got 100" in capsys.readouterr().err

    assert cli_main(["endpoint", "canary", "nowhere", "--version", "2", "--percent", "10"]) == 1
    assert "endpoint 'nowhere' not found" in capsys.readouterr().err
