"""The serving process over real HTTP: formats, routing, shadow, switches, bad input, SDK."""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lakehouse.serving.metrics import parse
from lakehouse.serving.process import ServerProcess
from tests.serving.conftest import (
    MODEL,
    NUMERIC,
    Registry,
    expected_scores,
    request_rows,
    set_alias,
)

pytestmark = pytest.mark.mlflow

API = "/api/2.0/serving-endpoints"


def entity(name: str, version: str | int) -> dict[str, Any]:
    return {"name": name, "entity_name": MODEL, "entity_version": str(version)}


def create(server: ServerProcess, name: str, config: dict[str, Any]) -> dict[str, Any]:
    status, body = server.request("POST", API, {"name": name, "config": config})
    assert status == 200, body
    return server.wait_ready(name)


def records(rows: Any) -> list[dict[str, Any]]:
    return json.loads(rows.to_json(orient="records"))


class Client:
    """A keep-alive HTTP client for many small requests."""

    def __init__(self, server: ServerProcess) -> None:
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        self.headers = {"Content-Type": "application/json"}
        if server.token:
            self.headers["Authorization"] = f"Bearer {server.token}"

    def post(self, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        self.conn.request("POST", path, json.dumps(body), self.headers)
        resp = self.conn.getresponse()
        data = json.loads(resp.read())
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def close(self) -> None:
        self.conn.close()


def invoke_many(
    server: ServerProcess, path: str, bodies: list[Any], threads: int = 8
) -> list[tuple[int, dict[str, str], Any]]:
    """Send ``bodies`` over ``threads`` keep-alive connections; answers in order."""
    chunks = [list(range(i, len(bodies), threads)) for i in range(threads)]
    out: list[Any] = [None] * len(bodies)

    def work(indices: list[int]) -> None:
        client = Client(server)
        try:
            for i in indices:
                out[i] = client.post(path, bodies[i])
        finally:
            client.close()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, chunks))
    return out


@contextmanager
def continuous_load(
    server: ServerProcess, path: str, body: Any, threads: int = 4
) -> Iterator[list[tuple[int, str]]]:
    """Requests without pause on ``threads`` connections while the block runs; the answers
    as (status, model version) pairs."""
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def work() -> None:
        client = Client(server)
        try:
            while not stop.is_set():
                try:
                    status, headers, _ = client.post(path, body)
                except OSError as exc:  # a failed request counts as a failure
                    answers.append((-1, repr(exc)))
                    client.close()
                    client = Client(server)
                    continue
                answers.append((status, headers.get("x-lakehouse-model-version", "")))
        finally:
            client.close()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield answers
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def spool_lines(home: Path, endpoint: str | None = None) -> list[dict[str, Any]]:
    """Every record of the inference log spool, sealed and open."""
    folder = home / "landing" / "inference_log"
    lines = []
    for path in sorted([*folder.glob("*.jsonl"), *folder.glob("_open/*.jsonl")]):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if endpoint is None or rec["endpoint_name"] == endpoint:
                lines.append(rec)
    return lines


# --- Request formats ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def champion(server: ServerProcess) -> str:
    create(server, "champ", {"served_entities": [entity("current", "champion")]})
    return "/serving-endpoints/champ/invocations"


def test_every_request_format_gives_the_batch_score(
    server: ServerProcess, registry: Registry, champion: str
) -> None:
    rows = request_rows(6)
    expected = expected_scores(registry.settings, registry.v1, rows)
    split = json.loads(rows.to_json(orient="split"))
    columnar = {c: json.loads(rows[c].to_json(orient="values")) for c in rows.columns}
    bodies = {
        "dataframe_split": {
            "dataframe_split": {"columns": split["columns"], "data": split["data"]}
        },
        "dataframe_records": {"dataframe_records": records(rows)},
        "instances": {"instances": records(rows)},
        "inputs": {"inputs": columnar},
        "inputs as records": {"inputs": records(rows)},
    }
    client = Client(server)
    for kind, body in bodies.items():
        status, headers, answer = client.post(champion, body)
        assert status == 200, (kind, answer)
        assert answer["predictions"] == expected, kind
        assert headers["x-lakehouse-served-entity"] == "current"
        assert headers["x-lakehouse-model-version"] == str(registry.v1)
    client.close()


def test_a_batch_answers_row_by_row_like_single_rows(server: ServerProcess, champion: str) -> None:
    rows = records(request_rows(20, seed=5))
    status, _, batch = Client(server).post(champion, {"dataframe_records": rows})
    assert status == 200
    singles = invoke_many(server, champion, [{"dataframe_records": [r]} for r in rows], threads=4)
    assert [answer["predictions"][0] for _, _, answer in singles] == batch["predictions"]


# --- The Databricks SDK ------------------------------------------------------------------------
def test_databricks_sdk_creates_reads_updates_queries_and_deletes(
    server: ServerProcess, registry: Registry
) -> None:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.serving import (
        EndpointCoreConfigInput,
        EndpointStateConfigUpdate,
        EndpointStateReady,
        Route,
        ServedEntityInput,
        TrafficConfig,
    )

    w = WorkspaceClient(host=server.url, token="any-token")
    endpoint = w.serving_endpoints.create(
        name="sdk",
        config=EndpointCoreConfigInput(
            name="sdk",
            served_entities=[
                ServedEntityInput(
                    name="a",
                    entity_name=MODEL,
                    entity_version=str(registry.v1),
                    workload_size="Small",
                    scale_to_zero_enabled=True,
                )
            ],
        ),
    ).result()
    assert endpoint.state.ready == EndpointStateReady.READY
    assert endpoint.config.served_entities[0].entity_version == str(registry.v1)
    assert "sdk" in [e.name for e in w.serving_endpoints.list()]
    got = w.serving_endpoints.get("sdk")
    assert got.config.config_version == 1
    rows = request_rows(3)
    answer = w.serving_endpoints.query("sdk", dataframe_records=records(rows))
    assert answer.predictions == expected_scores(registry.settings, registry.v1, rows)
    assert answer.served_model_name == "a"
    updated = w.serving_endpoints.update_config(
        "sdk",
        served_entities=[
            ServedEntityInput(name="b", entity_name=MODEL, entity_version="challenger")
        ],
        traffic_config=TrafficConfig(
            routes=[Route(served_entity_name="b", traffic_percentage=100)]
        ),
    ).result()
    assert updated.state.config_update == EndpointStateConfigUpdate.NOT_UPDATING
    assert updated.config.config_version == 2
    assert updated.config.served_entities[0].entity_version == str(registry.v2)
    answer = w.serving_endpoints.query("sdk", dataframe_records=records(rows))
    assert answer.predictions == expected_scores(registry.settings, registry.v2, rows)
    w.serving_endpoints.delete("sdk")
    assert "sdk" not in [e.name for e in w.serving_endpoints.list()]
    from databricks.sdk.errors import NotFound

    with pytest.raises(NotFound):
        w.serving_endpoints.get("sdk")


# --- Traffic split and shadow -------------------------------------------------------------------
def test_traffic_split_follows_the_percentages_and_sticks_per_client_id(
    server: ServerProcess, registry: Registry
) -> None:
    create(
        server,
        "split",
        {
            "served_entities": [entity("main", registry.v1), entity("canary", registry.v2)],
            "traffic_config": {
                "routes": [
                    {"served_entity_name": "main", "traffic_percentage": 80},
                    {"served_entity_name": "canary", "traffic_percentage": 20},
                ]
            },
        },
    )
    path = "/serving-endpoints/split/invocations"
    row = records(request_rows(1))
    answers = invoke_many(server, path, [{"dataframe_records": row}] * 5000)
    assert {status for status, _, _ in answers} == {200}
    counts = Counter(headers["x-lakehouse-served-entity"] for _, headers, _ in answers)
    assert abs(counts["canary"] / 5000 - 0.20) <= 0.02, counts
    # Each answer comes from the version its header names.
    by_entity = {h["x-lakehouse-served-entity"]: a["predictions"] for _, h, a in answers}
    assert by_entity["main"] != by_entity["canary"]

    ids = [f"client-{i}" for i in range(150)]
    bodies = [{"dataframe_records": row, "client_request_id": c} for c in ids * 3]
    sticky = invoke_many(server, path, bodies)
    seen: dict[str, set[str]] = {}
    for body, (_, headers, _) in zip(bodies, sticky, strict=True):
        seen.setdefault(body["client_request_id"], set()).add(headers["x-lakehouse-served-entity"])
    assert all(len(entities) == 1 for entities in seen.values())
    assert {next(iter(e)) for e in seen.values()} == {"main", "canary"}


def test_shadow_answers_are_logged_never_returned(
    server: ServerProcess, registry: Registry
) -> None:
    create(
        server,
        "shadowed",
        {
            "served_entities": [entity("main", registry.v1), entity("shadow", registry.v2)],
            "traffic_config": {
                "routes": [{"served_entity_name": "main", "traffic_percentage": 100}],
                "shadow": {"served_entity_name": "shadow", "percentage": 100},
            },
        },
    )
    rows = request_rows(2)
    primary = expected_scores(registry.settings, registry.v1, rows)
    shadow = expected_scores(registry.settings, registry.v2, rows)
    assert primary != shadow
    answers = invoke_many(
        server,
        "/serving-endpoints/shadowed/invocations",
        [{"dataframe_records": records(rows)}] * 20,
    )
    request_ids = set()
    for status, headers, answer in answers:
        assert status == 200
        assert answer["predictions"] == primary
        assert headers["x-lakehouse-served-entity"] == "main"
        request_ids.add(headers["x-request-id"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = spool_lines(Path(server.env["LAKEHOUSE_HOME"]), "shadowed")
        if len(lines) >= 40:
            break
        time.sleep(0.1)
    by_route: dict[str, dict[str, Any]] = {"primary": {}, "shadow": {}}
    for line in lines:
        by_route[line["route"]][line["databricks_request_id"]] = line
    assert set(by_route["primary"]) == request_ids
    assert set(by_route["shadow"]) == request_ids
    some = by_route["shadow"][next(iter(request_ids))]
    assert json.loads(some["response"])["predictions"] == shadow
    assert some["served_entity_name"] == "shadow"
    assert some["model_version"] == registry.v2
    _, text = server.request("GET", "/serving-endpoints/shadowed/metrics")
    samples = parse(text)
    key = (
        "lakehouse_serving_shadow_requests_total",
        (("endpoint", "shadowed"), ("served_entity", "shadow")),
    )
    assert samples[key] == 20


# --- Switches under load -----------------------------------------------------------------------
def test_config_update_under_load_fails_no_request(
    server: ServerProcess, registry: Registry
) -> None:
    create(server, "switch", {"served_entities": [entity("old", registry.v1)]})
    path = "/serving-endpoints/switch/invocations"
    body = {"dataframe_records": records(request_rows(1))}
    with continuous_load(server, path, body) as answers:
        time.sleep(0.5)
        status, reply = server.request(
            "PUT", f"{API}/switch/config", {"served_entities": [entity("new", registry.v2)]}
        )
        assert status == 200, reply
        assert reply["state"]["config_update"] == "IN_PROGRESS"
        ready = server.wait_ready("switch")
        time.sleep(0.5)
    assert ready["config"]["config_version"] == 2
    assert answers and all(status == 200 for status, _ in answers), Counter(answers)
    versions = [v for _, v in answers]
    assert str(registry.v1) in versions and versions[-1] == str(registry.v2)
    # Once switched, only the new version answers.
    assert versions[versions.index(str(registry.v2)) :].count(str(registry.v1)) <= 4


def test_an_alias_move_is_followed_under_load(server: ServerProcess, registry: Registry) -> None:
    set_alias(registry.settings, "follow", registry.v1)
    create(server, "follower", {"served_entities": [entity("live", "follow")]})
    path = "/serving-endpoints/follower/invocations"
    body = {"dataframe_records": records(request_rows(1))}
    with continuous_load(server, path, body) as answers:
        time.sleep(0.5)
        set_alias(registry.settings, "follow", registry.v2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not answers or answers[-1][1] != str(registry.v2)):
            time.sleep(0.05)
        time.sleep(0.3)
    assert all(status == 200 for status, _ in answers), Counter(answers)
    assert answers[0][1] == str(registry.v1) and answers[-1][1] == str(registry.v2)
    _, shown = server.request("GET", f"{API}/follower")
    entity_json = shown["config"]["served_entities"][0]
    assert (entity_json["entity_version"], entity_json["entity_alias"]) == (
        str(registry.v2),
        "follow",
    )


def loaded_versions(server: ServerProcess) -> set[int]:
    """The versions of the test model the server holds in memory (its metric says)."""
    _, text = server.request("GET", "/metrics")
    return {
        int(dict(labels)["version"])
        for (name, labels), value in parse(text).items()
        if name == "lakehouse_serving_loaded_model" and dict(labels)["model"] == MODEL and value
    }


def until_unloaded(server: ServerProcess, version: int) -> set[int]:
    """The loaded versions once ``version`` is no longer among them (fails after 30 s)."""
    deadline = time.monotonic() + 30
    while version in (loaded := loaded_versions(server)):
        assert time.monotonic() < deadline, f"version {version} still loaded: {loaded}"
        time.sleep(0.05)
    return loaded


def test_a_version_no_endpoint_serves_is_dropped_from_memory(
    server: ServerProcess, registry: Registry
) -> None:
    from tests.serving.conftest import register

    fresh = register(registry.settings, 8)  # served by this test's endpoint only
    set_alias(registry.settings, "transient", fresh)
    create(server, "transient", {"served_entities": [entity("live", "transient")]})
    path = "/serving-endpoints/transient/invocations"
    body = {"dataframe_records": records(request_rows(1))}
    assert fresh in loaded_versions(server)
    # The alias moves: once the endpoint serves v1, nothing serves the fresh version.
    with continuous_load(server, path, body, threads=2) as answers:
        set_alias(registry.settings, "transient", registry.v1)
        loaded = until_unloaded(server, fresh)
    assert registry.v1 in loaded
    assert all(status == 200 for status, _ in answers), Counter(answers)
    assert answers[-1][1] == str(registry.v1)
    # A configuration update: the fresh version is loaded again, then replaced and dropped.
    status, _ = server.request(
        "PUT", f"{API}/transient/config", {"served_entities": [entity("pinned", fresh)]}
    )
    assert status == 200
    server.wait_ready("transient")
    assert fresh in loaded_versions(server)
    status, _ = server.request(
        "PUT", f"{API}/transient/config", {"served_entities": [entity("pinned", registry.v2)]}
    )
    assert status == 200
    server.wait_ready("transient")
    assert registry.v2 in until_unloaded(server, fresh)
    status, headers, _ = Client(server).post(path, body)
    assert (status, headers["x-lakehouse-model-version"]) == (200, str(registry.v2))


# --- Bad input ---------------------------------------------------------------------------------
def test_bad_requests_get_their_code_and_name_the_field(
    server: ServerProcess, registry: Registry, champion: str
) -> None:
    create(server, "strict", {"served_entities": [entity("s", registry.strict)]})
    row = records(request_rows(1))[0]
    strict_row = {c: row[c] for c in NUMERIC}

    def post_raw(path: str, data: bytes) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        conn.request("POST", path, data, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        out = resp.status, json.loads(resp.read())
        conn.close()
        return out

    cases: list[tuple[str, bytes, int, str, str]] = [
        ("malformed JSON", b'{"dataframe_records": [', 400, "BAD_REQUEST", "JSON"),
        ("no format", b'{"rows": []}', 400, "BAD_REQUEST", "rows"),
        ("empty batch", b'{"dataframe_records": []}', 400, "BAD_REQUEST", "no rows"),
        (
            "missing column",
            json.dumps(
                {"dataframe_records": [{k: v for k, v in row.items() if k != "age"}]}
            ).encode(),
            400,
            "BAD_REQUEST",
            "age",
        ),
        (
            "extra column",
            json.dumps({"dataframe_records": [{**row, "shoe_size": 42}]}).encode(),
            400,
            "BAD_REQUEST",
            "shoe_size",
        ),
        (
            "wrong type",
            json.dumps({"dataframe_records": [{**row, "credit_score": "high"}]}).encode(),
            400,
            "BAD_REQUEST",
            "credit_score",
        ),
        (
            "split row too short",
            json.dumps(
                {"dataframe_split": {"columns": ["age", "purpose"], "data": [[1]]}}
            ).encode(),
            400,
            "BAD_REQUEST",
            "dataframe_split.data",
        ),
    ]
    for what, data, status, code, named in cases:
        got_status, answer = post_raw(champion, data)
        assert (got_status, answer["error_code"]) == (status, code), (what, answer)
        assert named in answer["message"], (what, answer)
    # A missing value the imputing model takes, the strict one cannot.
    ok, _ = post_raw(champion, json.dumps({"dataframe_records": [{**row, "age": None}]}).encode())
    assert ok == 200
    for value in (None, math.nan):
        data = json.dumps({"dataframe_records": [{**strict_row, "age": value}]}).encode()
        status, answer = post_raw("/serving-endpoints/strict/invocations", data)
        assert status == 400 and "age" in answer["message"], answer
    status, answer = post_raw("/serving-endpoints/nowhere/invocations", b"{}")
    assert (status, answer["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    big = json.dumps({"dataframe_records": [row] * 2000}).encode()
    assert len(big) > 200_000
    status, answer = post_raw(champion, big)
    assert status == 413
    # The server still answers, and logged the failures of known endpoints.
    assert post_raw(champion, json.dumps({"dataframe_records": [row]}).encode())[0] == 200
    statuses = Counter(
        line["status_code"] for line in spool_lines(Path(server.env["LAKEHOUSE_HOME"]), "champ")
    )
    assert statuses[400] >= len(cases) and statuses[413] == 1


def test_an_endpoint_still_loading_answers_503(server: ServerProcess, registry: Registry) -> None:
    from tests.serving.conftest import register

    fresh = register(registry.settings, 7)  # never loaded by this server yet
    status, _ = server.request(
        "POST", API, {"name": "loading", "config": {"served_entities": [entity("x", fresh)]}}
    )
    assert status == 200
    status, answer = server.request(
        "POST",
        "/serving-endpoints/loading/invocations",
        {"dataframe_records": records(request_rows(1))},
    )
    assert (status, answer["error_code"]) == (503, "TEMPORARILY_UNAVAILABLE")
    server.wait_ready("loading")
    status, _ = server.request(
        "POST",
        "/serving-endpoints/loading/invocations",
        {"dataframe_records": records(request_rows(1))},
    )
    assert status == 200


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"served_entities": []}, "config.served_entities"),
        (
            {
                "served_entities": [entity("a", "1")],
                "traffic_config": {
                    "routes": [{"served_entity_name": "a", "traffic_percentage": 90}]
                },
            },
            "sum to 100",
        ),
        (
            {
                "served_entities": [entity("a", "1")],
                "traffic_config": {
                    "routes": [{"served_entity_name": "b", "traffic_percentage": 100}]
                },
            },
            "routes[0].served_entity_name",
        ),
        (
            {
                "served_entities": [entity("a", "1")],
                "traffic_config": {
                    "routes": [{"served_entity_name": "a", "traffic_percentage": 99.5}]
                },
            },
            "routes[0].traffic_percentage",
        ),
        ({"served_entities": [entity("a", "nosuchalias")]}, "served_entities[0].entity_version"),
        (
            {"served_entities": [{"name": "a", "entity_name": MODEL}]},
            "served_entities[0].entity_version",
        ),
    ],
)
def test_bad_configs_are_refused_naming_the_field(
    server: ServerProcess, config: dict[str, Any], field: str
) -> None:
    status, answer = server.request("POST", API, {"name": "bad", "config": config})
    assert (status, answer["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert field in answer["message"]
    assert server.request("GET", f"{API}/bad")[0] == 404


# --- Metrics -----------------------------------------------------------------------------------
METRICS = (
    "lakehouse_serving_requests_total",
    "lakehouse_serving_request_duration_seconds_bucket",
    "lakehouse_serving_in_flight_requests",
    "lakehouse_serving_model_load_seconds",
    "lakehouse_serving_score_bucket",
    "lakehouse_serving_shadow_requests_total",
    "lakehouse_serving_inference_log_errors_total",
    "lakehouse_serving_feature_lookup_seconds_bucket",
    "lakehouse_serving_loaded_model",
)


def test_metrics_name_every_series(server: ServerProcess, champion: str) -> None:
    Client(server).post(champion, {"dataframe_records": records(request_rows(3))})
    status, text = server.request("GET", "/metrics")
    assert status == 200
    names = {name for name, _ in parse(text)}
    # Families without a sample yet are still described.
    for metric in METRICS:
        family = metric.removesuffix("_total").removesuffix("_bucket")
        assert metric in names or f"# TYPE {family}" in text, metric
    samples = parse(text)
    labels = (("endpoint", "champ"), ("served_entity", "current"), ("status", "200"))
    assert samples[("lakehouse_serving_requests_total", labels)] >= 1
    buckets = sorted(
        dict(lbl)["le"]
        for name, lbl in samples
        if name == "lakehouse_serving_score_bucket" and dict(lbl)["endpoint"] == "champ"
    )
    assert buckets == sorted(
        ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0", "+Inf"]
    )
    _, own = server.request("GET", "/serving-endpoints/champ/metrics")
    assert {dict(lbl).get("endpoint") for _, lbl in parse(own)} == {"champ"}
