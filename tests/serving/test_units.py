"""Pure parts of serving: the spool's files, configuration checks, payload parsing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse.serving.app import records_of
from lakehouse.serving.config import ConfigError, EndpointStore, StoredEndpoint, parse_config
from lakehouse.serving.model import InputError
from lakehouse.serving.spool import (
    INFERENCE_LOG_ENV,
    MAX_LINES,
    RECORD_FIELDS,
    SpoolWriter,
    inference_log_enabled,
    record,
    seal_orphans,
)


def rec(i: int) -> dict[str, object]:
    return record(
        request_id=f"r{i}",
        client_request_id=None,
        timestamp_ms=1_767_225_600_000 + i,
        status_code=200,
        execution_duration_ms=1.5,
        request="{}",
        response='{"predictions":[0.1]}',
        endpoint_name="e",
        served_entity_name="a",
        model_name="m",
        model_version=3,
    )


def test_a_record_has_the_inference_table_fields() -> None:
    line = rec(0)
    assert tuple(line) == RECORD_FIELDS
    assert (line["date"], line["route"], line["sampling_fraction"]) == (
        "2026-01-01",
        "primary",
        1.0,
    )
    assert line["logging_error_codes"] == []


def test_lines_go_to_an_open_file_then_a_sealed_one(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "credit", roll_after=3600)
    for i in range(3):
        writer.write(rec(i))
    open_files = list((tmp_path / "inference_log" / "_open").glob("*.jsonl"))
    assert len(open_files) == 1 and open_files[0].name.startswith(f"{os.getpid()}-")
    assert not writer.due()
    sealed = writer.seal()
    assert sealed is not None and sealed.parent == tmp_path / "inference_log"
    assert sealed.name.startswith(f"credit-{os.getpid()}-")
    assert [json.loads(x)["databricks_request_id"] for x in sealed.read_text().splitlines()] == [
        "r0",
        "r1",
        "r2",
    ]
    assert writer.seal() is None  # nothing written since
    assert not list((tmp_path / "inference_log" / "_open").iterdir())


def test_a_full_file_is_sealed_at_max_lines(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "e", roll_after=3600)
    for i in range(MAX_LINES + 1):
        writer.write(rec(i))
    sealed = list((tmp_path / "inference_log").glob("e-*.jsonl"))
    assert len(sealed) == 1 and len(sealed[0].read_text().splitlines()) == MAX_LINES
    writer.seal()
    assert len(list((tmp_path / "inference_log").glob("e-*.jsonl"))) == 2


def test_seal_orphans_takes_only_files_of_dead_writers(tmp_path: Path) -> None:
    open_dir = tmp_path / "inference_log" / "_open"
    open_dir.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    (open_dir / f"{dead_pid}-1.jsonl").write_text(json.dumps(rec(1)) + "\n")
    (open_dir / f"{dead_pid}-2.jsonl").write_text("")  # empty: removed
    (open_dir / f"{os.getpid()}-9.jsonl").write_text(json.dumps(rec(2)) + "\n")  # alive
    sealed = seal_orphans(tmp_path)
    assert [p.name.split("-")[:3] for p in sealed] == [["any", str(dead_pid), "1"]]
    assert sorted(p.name for p in open_dir.iterdir()) == [f"{os.getpid()}-9.jsonl"]
    assert seal_orphans(tmp_path) == []


def entity(name: str, version: str = "1") -> dict[str, object]:
    return {"name": name, "entity_name": "m", "entity_version": version}


def test_a_config_parses_with_routes_shadow_and_defaults() -> None:
    config = parse_config(
        {
            "name": "ignored",
            "served_entities": [entity("a", "champion"), {"entity_name": "m", "entity_version": 2}],
            "traffic_config": {
                "routes": [
                    {"served_entity_name": "a", "traffic_percentage": 75},
                    {"served_entity_name": "m-2", "traffic_percentage": 25},
                ],
                "shadow": {"served_entity_name": "m-2", "percentage": 10},
            },
        }
    )
    assert [(e.name, e.alias) for e in config.served_entities] == [("a", "champion"), ("m-2", None)]
    assert config.routes == (("a", 75), ("m-2", 25))
    assert config.shadow is not None and config.shadow.percentage == 10
    assert parse_config(config.to_json()) == config
    single = parse_config({"served_entities": [entity("only")]})
    assert single.routes == (("only", 100),)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({}, "config.served_entities"),
        ({"served_entities": [entity("a"), entity("a")]}, "config.served_entities[1].name"),
        ({"served_entities": [entity("a"), entity("b")]}, "config.traffic_config.routes"),
        (
            {"served_entities": [entity("a", "no such!")]},
            "config.served_entities[0].entity_version",
        ),
        ({"served_entities": [{**entity("a"), "color": 1}]}, "config.served_entities[0].color"),
        (
            {"served_entities": [{**entity("a"), "workload_size": "Huge"}]},
            "config.served_entities[0].workload_size",
        ),
        (
            {
                "served_entities": [entity("a")],
                "traffic_config": {
                    "routes": [{"served_entity_name": "a", "traffic_percentage": 101}]
                },
            },
            "config.traffic_config.routes[0].traffic_percentage",
        ),
        (
            {
                "served_entities": [entity("a")],
                "traffic_config": {
                    "routes": [{"served_entity_name": "a", "traffic_percentage": 100}],
                    "shadow": {"served_entity_name": "z", "percentage": 5},
                },
            },
            "config.traffic_config.shadow.served_entity_name",
        ),
    ],
)
def test_a_bad_config_names_its_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert caught.value.field == field


def test_endpoint_files_are_written_whole_and_read_back(tmp_path: Path) -> None:
    store = EndpointStore(tmp_path / "endpoints")
    stored = StoredEndpoint("e", parse_config({"served_entities": [entity("a")]}), 3, 10, 20)
    store.save(stored)
    (tmp_path / "endpoints" / "broken.json").write_text("{not json")
    loaded, bad = store.load_all()
    assert [(e.name, e.config, e.config_version) for e in loaded] == [("e", stored.config, 3)]
    assert [p.name for p, _ in bad] == ["broken.json"]
    assert [p.name for p in (tmp_path / "endpoints").iterdir() if p.name.startswith(".tmp")] == []


def test_every_input_format_gives_the_same_rows() -> None:
    rows = [{"a": 1.0, "b": "x"}, {"a": 2.0, "b": None}]
    formats = [
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, "x"], [2.0, None]]}},
        {"dataframe_records": rows},
        {"instances": rows},
        {"inputs": {"a": [1.0, 2.0], "b": ["x", None]}},
        {"inputs": rows},
    ]
    for body in formats:
        assert records_of({**body, "client_request_id": "c"}) == (rows, "c")
    assert records_of({"inputs": {"a": 1.0, "b": "x"}}) == ([rows[0]], None)
    for bad in (
        {},
        {"dataframe_records": rows, "instances": rows},
        {"inputs": [[1, 2]]},
        {"dataframe_records": rows, "client_request_id": 5},
    ):
        with pytest.raises(InputError):
            records_of(bad)


@pytest.mark.parametrize(
    ("value", "enabled"), [(None, True), ("on", True), ("ON", True), ("off", False), ("0", False)]
)
def test_the_inference_log_switch(value: str | None, enabled: bool) -> None:
    env = {} if value is None else {INFERENCE_LOG_ENV: value}
    assert inference_log_enabled(env) is enabled


def test_serve_refuses_a_bad_switch_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lakehouse.cli import main

    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path))
    monkeypatch.setenv(INFERENCE_LOG_ENV, "maybe")
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{INFERENCE_LOG_ENV} must be on or off, got 'maybe'" in err
    assert "Traceback" not in err


def test_the_serving_redis_client_fails_fast_unless_told_otherwise() -> None:
    from lakehouse.serving.features import serving_redis_url

    assert serving_redis_url("redis:6379") == (
        "redis:6379,retry=null,socket_connect_timeout=1,socket_timeout=2"
    )
    assert serving_redis_url("redis:6379,socket_timeout=10,password=x") == (
        "redis:6379,socket_timeout=10,password=x,retry=null,socket_connect_timeout=1"
    )
