"""The inference log in Delta: spool files ingested exactly once, every line accounted for."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.testing import assertSchemaEqual

from lakehouse.platform.catalog import GOLD_INFERENCE_LOG, SILVER_QUARANTINE, TableCatalog
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import delta_version
from lakehouse.scoring.inference_log import (
    INFERENCE_LOG_SCHEMA,
    SpoolIngest,
    ingest_inference_log,
)

#: 2026-03-02 10:00:00 UTC.
T0 = 1772445600000


def log_record(request_id: str, entity: str = "champion", **fields: Any) -> dict[str, Any]:
    """One line of the serving spool, in the server's format."""
    record: dict[str, Any] = {
        "databricks_request_id": request_id,
        "client_request_id": None,
        "date": "2026-03-02",
        "timestamp_ms": T0,
        "status_code": 200,
        "execution_duration_ms": 1.5,
        "request": json.dumps({"dataframe_records": [{"customer_id": "C1"}]}),
        "response": json.dumps({"predictions": [0.12]}),
        "endpoint_name": "credit",
        "served_entity_name": entity,
        "model_name": "credit_risk_model",
        "model_version": 1,
        "route": "primary",
        "sampling_fraction": 1.0,
        "logging_error_codes": [],
    }
    record.update(fields)
    return record


def line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


def write_sealed(
    settings: Settings, name: str, lines: list[str], last_newline: bool = True
) -> Path:
    """A sealed spool file ``landing/inference_log/<name>``."""
    folder = settings.landing_dir / "inference_log"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(lines) + ("\n" if last_newline else ""))
    return path


def quarantined(spark: SparkSession, catalog: TableCatalog) -> list[tuple[str, str, str]]:
    rows = catalog.read(spark, SILVER_QUARANTINE).where("entity = 'inference_log'").collect()
    return sorted((r["rule"], r["reason"], r["raw_record"]) for r in rows)


def test_ingest_types_the_records_and_accounts_for_every_line(
    spark: SparkSession, settings: Settings, catalog: TableCatalog
) -> None:
    primary = log_record(
        "r1",
        client_request_id="client-7",
        timestamp_ms=T0 + 1234,
        execution_duration_ms=2.25,
        logging_error_codes=["MAX_REQUEST_SIZE_EXCEEDED"],
    )
    shadow = log_record("r1", "shadow-v2", model_version=2, route="shadow")
    error = log_record("r2", status_code=503, response=json.dumps({"error_code": "X"}))
    no_entity = log_record("r3", served_entity_name=None)
    bad_route = log_record("r4", route="sideways")
    bad_date = log_record("r5", date="02/03/2026")
    wrong_type = log_record("r6", status_code="OK")
    truncated = line(log_record("r7"))[:57]
    write_sealed(
        settings,
        "credit-1-1-1.jsonl",
        [line(r) for r in (primary, shadow, error, no_entity, bad_route, bad_date, wrong_type)]
        + ["", truncated],
        last_newline=False,
    )

    report = ingest_inference_log(spark, settings, catalog)

    assert report == SpoolIngest(
        GOLD_INFERENCE_LOG, files=1, lines_read=8, inserted=3, duplicates=0, quarantined=5
    )
    table = catalog.read(spark, GOLD_INFERENCE_LOG)
    assertSchemaEqual(table.schema, INFERENCE_LOG_SCHEMA)
    rows = {(r["databricks_request_id"], r["served_entity_name"]): r for r in table.collect()}
    assert sorted(rows) == [("r1", "champion"), ("r1", "shadow-v2"), ("r2", "champion")]
    first = rows[("r1", "champion")]
    assert first["date"] == date(2026, 3, 2)
    # PySpark gives a naive local time: its epoch is the record's time.
    assert round(first["timestamp"].timestamp() * 1000) == T0 + 1234
    assert first["timestamp_ms"] == T0 + 1234
    assert first["client_request_id"] == "client-7"
    assert first["execution_duration_ms"] == 2.25
    assert first["logging_error_codes"] == ["MAX_REQUEST_SIZE_EXCEEDED"]
    assert json.loads(first["response"]) == {"predictions": [0.12]}
    assert first["_source_file"].endswith("credit-1-1-1.jsonl")
    assert rows[("r1", "shadow-v2")]["route"] == "shadow"
    assert rows[("r1", "shadow-v2")]["model_version"] == 2
    assert rows[("r2", "champion")]["status_code"] == 503

    assert quarantined(spark, catalog) == sorted(
        [
            ("invalid_value", "date is not YYYY-MM-DD: 02/03/2026", line(bad_date)),
            ("invalid_value", "route must be one of primary, shadow: sideways", line(bad_route)),
            (
                "malformed",
                "not a JSON object of the inference_log record's fields and types",
                line(wrong_type),
            ),
            (
                "malformed",
                "not a JSON object of the inference_log record's fields and types",
                truncated,
            ),
            ("required_fields", "missing served_entity_name", line(no_entity)),
        ]
    )


def test_each_record_is_ingested_once_across_runs_replays_and_reread_files(
    spark: SparkSession, settings: Settings, catalog: TableCatalog
) -> None:
    checkpoint = settings.checkpoints_dir / "gold" / "inference_log"
    first = write_sealed(settings, "a.jsonl", [line(log_record(f"a{i}")) for i in range(3)])
    assert ingest_inference_log(spark, settings, catalog).inserted == 3
    version = delta_version(spark, catalog, GOLD_INFERENCE_LOG)

    # Nothing new: nothing read, nothing written.
    assert ingest_inference_log(spark, settings, catalog) == SpoolIngest(GOLD_INFERENCE_LOG)
    assert delta_version(spark, catalog, GOLD_INFERENCE_LOG) == version

    # A new file with one record seen before and one line that does not parse.
    write_sealed(
        settings,
        "b.jsonl",
        [line(log_record("b0")), line(log_record("a1")), "{not json", line(log_record("b1"))],
    )
    assert ingest_inference_log(spark, settings, catalog) == SpoolIngest(
        GOLD_INFERENCE_LOG, files=1, lines_read=4, inserted=2, duplicates=1, quarantined=1
    )

    # The process died after the batch's commits, before the checkpoint recorded it: the
    # replay reads the same file again and adds nothing, to the log or to the quarantine.
    newest = max(int(p.name) for p in (checkpoint / "commits").iterdir() if p.name.isdigit())
    (checkpoint / "commits" / str(newest)).unlink()
    assert ingest_inference_log(spark, settings, catalog) == SpoolIngest(
        GOLD_INFERENCE_LOG, files=1, lines_read=4, inserted=0, duplicates=3, quarantined=1
    )
    assert len(quarantined(spark, catalog)) == 1

    # The same records land again under another name: read, and all duplicates.
    shutil.copy(first, first.with_name("a-again.jsonl"))
    assert ingest_inference_log(spark, settings, catalog) == SpoolIngest(
        GOLD_INFERENCE_LOG, files=1, lines_read=3, inserted=0, duplicates=3, quarantined=0
    )
    keys = catalog.read(spark, GOLD_INFERENCE_LOG).select("databricks_request_id").collect()
    assert sorted(r[0] for r in keys) == ["a0", "a1", "a2", "b0", "b1"]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_open_files_of_a_stopped_server_are_sealed_and_ingested(
    spark: SparkSession, settings: Settings, catalog: TableCatalog
) -> None:
    open_dir = settings.landing_dir / "inference_log" / "_open"
    open_dir.mkdir(parents=True)
    # Killed mid-write: two whole lines and the start of a third.
    orphan = open_dir / f"{dead_pid()}-1.jsonl"
    orphan.write_text(
        line(log_record("k1")) + "\n" + line(log_record("k2")) + "\n" + line(log_record("k3"))[:40]
    )
    # A writer that is still running keeps its file.
    live = open_dir / "1-1.jsonl"
    live.write_text(line(log_record("live")) + "\n")

    report = ingest_inference_log(spark, settings, catalog)

    assert report == SpoolIngest(
        GOLD_INFERENCE_LOG, files=1, lines_read=3, inserted=2, duplicates=0, quarantined=1, sealed=1
    )
    assert not orphan.exists() and live.exists()
    keys = catalog.read(spark, GOLD_INFERENCE_LOG).select("databricks_request_id").collect()
    assert sorted(r[0] for r in keys) == ["k1", "k2"]
    assert [rule for rule, _, _ in quarantined(spark, catalog)] == ["malformed"]
