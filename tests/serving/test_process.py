"""The serving process as a process: its token, SIGKILL under load, restarts."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lakehouse.serving.process import ServerProcess
from tests.serving.conftest import MODEL, Registry, own_home, request_rows, start_server

pytestmark = pytest.mark.mlflow

API = "/api/2.0/serving-endpoints"
TOKEN = "s3cret-token"


def call(server: ServerProcess, method: str, path: str, body: Any, auth: str | None) -> int:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    conn.request(method, path, None if body is None else json.dumps(body), headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def test_a_token_guards_every_route_and_the_log_can_be_off(
    registry: Registry, tmp_path: Path
) -> None:
    env = {
        **own_home(registry, tmp_path / "home"),
        "LAKEHOUSE_SERVING_TOKEN": TOKEN,
        "LAKEHOUSE_SERVING_INFERENCE_LOG": "off",
    }
    server = start_server(env, tmp_path / "logs")
    try:
        config = {"served_entities": [{"name": "a", "entity_name": MODEL, "entity_version": "1"}]}
        rows = json.loads(request_rows(1).to_json(orient="records"))
        routes: list[tuple[str, str, Any]] = [
            ("POST", API, {"name": "guarded", "config": config}),
            ("GET", API, None),
            ("GET", f"{API}/guarded", None),
            ("PUT", f"{API}/guarded/config", config),
            ("POST", "/serving-endpoints/guarded/invocations", {"dataframe_records": rows}),
            ("GET", "/serving-endpoints/guarded/metrics", None),
            ("GET", "/metrics", None),
            ("GET", "/health", None),
            ("DELETE", f"{API}/guarded", None),
        ]
        for method, path, body in routes:
            assert call(server, method, path, body, None) == 401, (method, path)
            assert call(server, method, path, body, "Bearer wrong") == 403, (method, path)
            assert call(server, method, path, body, "Basic abc") == 401, (method, path)
            status = call(server, method, path, body, f"Bearer {TOKEN}")
            assert status == 200, (method, path, status)
            if method in ("POST", "PUT") and path.startswith(API):
                server.wait_ready("guarded")
        # Nothing was created by the refused requests: the list is empty after the delete.
        assert server.request("GET", API) == (200, {"endpoints": []})
    finally:
        server.stop()
    # The inference log was off: the answered (and refused) invocations left no record.
    assert spooled(tmp_path / "home") == []


def spooled(home: Path) -> list[dict[str, Any]]:
    folder = home / "landing" / "inference_log"
    return [
        json.loads(line)
        for path in [*folder.glob("*.jsonl"), *folder.glob("_open/*.jsonl")]
        for line in path.read_text().splitlines()
    ]


def test_sigkill_under_load_loses_no_answered_request_and_a_restart_resumes(
    registry: Registry, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = {**own_home(registry, home), "LAKEHOUSE_SERVING_SPOOL_ROLL_SECONDS": "0.3"}
    server = start_server(env, tmp_path / "logs")
    config = {
        "served_entities": [{"name": "a", "entity_name": MODEL, "entity_version": "champion"}]
    }
    assert server.request("POST", API, {"name": "durable", "config": config})[0] == 200
    server.wait_ready("durable")
    body = json.dumps({"dataframe_records": json.loads(request_rows(2).to_json(orient="records"))})
    answered: list[str] = []
    lock = threading.Lock()

    def load() -> None:
        while True:
            try:
                conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
                while True:
                    conn.request("POST", "/serving-endpoints/durable/invocations", body)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status == 200:
                        with lock:
                            answered.append(resp.getheader("x-request-id"))
            except OSError:
                return

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 30
    while len(answered) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    for worker in workers:
        worker.join()
    assert len(answered) >= 300
    open_files = list((home / "landing" / "inference_log" / "_open").glob("*.jsonl"))
    ids = [line["databricks_request_id"] for line in spooled(home)]
    assert len(ids) == len(set(ids))
    assert set(answered) <= set(ids)

    # A new server seals the dead one's open file and serves the stored endpoint again.
    restarted = start_server(env, tmp_path / "logs")
    try:
        ready = restarted.wait_ready("durable")
        assert ready["config"]["served_entities"][0]["entity_version"] == str(registry.v1)
        if open_files:
            assert not any(p.exists() for p in open_files)
        sealed = list((home / "landing" / "inference_log").glob("any-*.jsonl"))
        assert len(sealed) == len(open_files)
        status, answer = restarted.request(
            "POST", "/serving-endpoints/durable/invocations", json.loads(body)
        )
        assert status == 200 and len(answer["predictions"]) == 2
    finally:
        restarted.stop()
    # A clean stop seals what it wrote: nothing is left open.
    assert not list((home / "landing" / "inference_log" / "_open").glob("*.jsonl"))
    assert len(spooled(home)) == len(ids) + 1
