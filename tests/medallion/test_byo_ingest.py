"""Bring your own data: a folder into bronze, each file once; silver by a spec of expectations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakehouse.medallion.autoloader import (
    AutoLoaderResult,
    SchemaHintError,
    column_names,
    ingest_folder,
    split_schema_hints,
)
from lakehouse.medallion.byo import checkpoint_dir
from lakehouse.medallion.expectations import ExpectationFailed
from lakehouse.medallion.user_silver import (
    SpecError,
    build_user_silver,
    parse_spec,
    user_accounting,
)
from lakehouse.platform.catalog import SILVER_EXPECTATIONS, SILVER_QUARANTINE, TableCatalog
from lakehouse.platform.settings import Settings

HEADER = ["order_id", "customer", "amount", "status", "updated_at"]
#: Later files carry a new column, in the middle: files are read by their own header.
HEADER_WITH_COUPON = ["order_id", "customer", "coupon", "amount", "status", "updated_at"]
STATUSES = ("NEW", "PAID", "SHIPPED", "LOST")
START = datetime(2024, 1, 1)
ROWS_PER_FILE = 500

SPEC = {
    "target": "silver.orders",
    "keys": ["order_id"],
    "sequence_by": "updated_at",
    "columns": {
        "order_id": "string",
        "customer": "string",
        "coupon": "string",
        "amount": "double",
        "status": "string",
        "updated_at": "timestamp",
    },
    "expect": {"known_status": "status IN ('NEW', 'PAID', 'SHIPPED')"},
    "expect_or_drop": {"positive_amount": "amount > 0"},
}


@dataclass
class Landed:
    """Every line written, as the test wrote it: the expected values come from here."""

    records: list[dict[str, str]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)


def write_orders(
    folder: Path, files: range, landed: Landed, coupon: bool = False, blank_customer: bool = False
) -> None:
    """Write order files: updates of earlier keys, exact duplicate lines, negative and
    non-numeric amounts, unknown statuses, and two lines per file that do not parse."""
    folder.mkdir(parents=True, exist_ok=True)
    header = HEADER_WITH_COUPON if coupon else HEADER
    for number in files:
        name = f"orders_{number:02d}.csv"
        lines = [",".join(header)]
        for i in range(ROWS_PER_FILE):
            k = len(landed.records)
            reuse = i % 50 == 49 and k > 0
            amount = f"{k % 97 + 1}.25"
            if k % 37 == 0:
                amount = f"-{amount}"
            if i == 250:
                amount = "abc"
            record = {
                "order_id": landed.records[k // 2]["order_id"] if reuse else f"O{k:05d}",
                "customer": "" if blank_customer and i == 10 else f"C{k % 200:03d}",
                "coupon": f"X{k % 7}",
                "amount": amount,
                "status": STATUSES[k % 4],
                "updated_at": (START + timedelta(minutes=k)).strftime("%Y-%m-%d %H:%M:%S"),
                "file": name,
            }
            line = ",".join(record[c] for c in header)
            lines.append(line)
            landed.records.append(record if coupon else {**record, "coupon": ""})
            if i % 100 == 99:  # the same line twice
                lines.append(line)
                landed.records.append(dict(landed.records[-1]))
        bad = [f"O9{number}999,truncated", f"a,b,c,d,e,f,g,h{number}"]
        lines.insert(200, bad[0])
        lines.append(bad[1])
        landed.bad += bad
        (folder / name).write_text("\n".join(lines) + "\n")


def _amount(record: dict[str, str]) -> float | None:
    try:
        return float(record["amount"])
    except ValueError:
        return None


def passing(records: list[dict[str, str]]) -> list[dict[str, str]]:
    """The records the spec keeps: a number above zero as amount."""
    return [r for r in records if (_amount(r) or 0) > 0]


def latest_per_key(records: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    latest: dict[str, dict[str, str]] = {}
    for r in records:
        if r["order_id"] not in latest or r["updated_at"] > latest[r["order_id"]]["updated_at"]:
            latest[r["order_id"]] = r
    return latest


def quarantine_counts(spark: SparkSession, catalog: TableCatalog) -> dict[str, int]:
    rows = (
        catalog.read(spark, SILVER_QUARANTINE)
        .where(F.col("entity") == "silver.orders")
        .groupBy("rule")
        .count()
        .collect()
    )
    return {r["rule"]: r["count"] for r in rows}


def ingest(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, src: Path, **kw: str
) -> AutoLoaderResult:
    """Ingest ``src`` into ``bronze.orders`` (or ``table=``) with its own checkpoint."""
    table = kw.pop("table", "bronze.orders")
    return ingest_folder(spark, catalog, src, table, "csv", checkpoint_dir(settings, table), **kw)


def test_a_folder_is_ingested_once_with_new_columns_and_bad_lines_kept(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, tmp_path: Path
) -> None:
    src, landed = tmp_path / "drops", Landed()
    write_orders(src, range(3), landed)

    first = ingest(spark, settings, catalog, src)
    assert (first.files, first.rows, first.rescued_rows) == (3, len(landed.records) + 6, 6)
    assert first.new_columns == ()
    again = ingest(spark, settings, catalog, src)
    assert (again.files, again.rows) == (0, 0)

    write_orders(src, range(3, 6), landed, coupon=True)
    second = ingest(spark, settings, catalog, src)
    assert (second.files, second.rows, second.rescued_rows) == (3, 3 * 2 + 3 * 505, 6)
    assert second.new_columns == ("coupon",)
    assert second.schema_version == 1
    assert ingest(spark, settings, catalog, src).files == 0

    bronze = catalog.read(spark, "bronze.orders")
    assert bronze.columns == [*HEADER, "_rescued_data", "_source_file", "_ingested_at", "coupon"]
    assert bronze.count() == len(landed.records) + len(landed.bad)
    assert bronze.where("_ingested_at IS NULL OR _source_file IS NULL").count() == 0
    # Bad lines are kept whole, with every column null.
    rescued = bronze.where("_rescued_data IS NOT NULL")
    assert sorted(r[0] for r in rescued.select("_rescued_data").collect()) == sorted(landed.bad)
    assert rescued.where("order_id IS NOT NULL OR amount IS NOT NULL").count() == 0
    # Each value in its own column, read by the header of its file.
    good = bronze.where("_rescued_data IS NULL").select(
        F.regexp_extract("_source_file", r"[^/]+$", 0).alias("file"),
        *HEADER,
        F.coalesce("coupon", F.lit("")).alias("coupon"),
    )
    expected = [Row(**{c: r[c] for c in ["file", *HEADER, "coupon"]}) for r in landed.records]
    assertDataFrameEqual(good, expected)

    schemas = checkpoint_dir(settings, "bronze.orders") / "_schemas"
    versions = [json.loads((schemas / v).read_text()) for v in ("0", "1")]
    assert [[f["name"] for f in v["columns"]["fields"]] for v in versions] == [
        HEADER,
        [*HEADER, "coupon"],
    ]


def test_rescue_mode_keeps_new_columns_in_rescued_data_and_hints_type_columns(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, tmp_path: Path
) -> None:
    src, landed = tmp_path / "drops", Landed()
    write_orders(src, range(1), landed)
    kw = {"table": "bronze.orders_fixed", "evolution": "rescue"}
    first = ingest(spark, settings, catalog, src, schema_hints="amount double", **kw)
    write_orders(src, range(1, 2), landed, coupon=True)
    second = ingest(spark, settings, catalog, src, **kw)
    assert second.new_columns == ()
    bronze = catalog.read(spark, "bronze.orders_fixed")
    assert bronze.columns == [*HEADER, "_rescued_data", "_source_file", "_ingested_at"]
    assert dict(bronze.dtypes)["amount"] == "double"
    # A value that does not fit its hinted type: the whole line is rescued.
    not_numeric = [r for r in landed.records if _amount(r) is None]
    assert first.rescued_rows == 2 + len([r for r in not_numeric if r["file"] == "orders_00.csv"])
    coupons = (
        bronze.where("_source_file LIKE '%orders_01.csv' AND _rescued_data LIKE '{%'")
        .select(F.get_json_object("_rescued_data", "$.coupon").alias("coupon"))
        .collect()
    )
    wanted = [r["coupon"] for r in landed.records if r["file"] == "orders_01.csv" and _amount(r)]
    assert sorted(r["coupon"] for r in coupons) == sorted(wanted)


def test_silver_spec_quarantines_merges_on_the_key_and_balances(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, tmp_path: Path
) -> None:
    src, landed = tmp_path / "drops", Landed()
    spec = parse_spec(SPEC).with_source("bronze.orders")
    silver_checkpoint = checkpoint_dir(settings, spec.target)

    write_orders(src, range(3), landed)
    ingest(spark, settings, catalog, src)
    build_user_silver(spark, catalog, spec, silver_checkpoint)
    write_orders(src, range(3, 6), landed, coupon=True)
    ingest(spark, settings, catalog, src)
    result = build_user_silver(spark, catalog, spec, silver_checkpoint)
    assert result.rows_read == 3 * 507

    kept = passing(landed.records)
    latest = latest_per_key(kept)
    silver = catalog.read(spark, "silver.orders")
    assertDataFrameEqual(
        silver.select(
            "order_id", "amount", "status", F.coalesce("coupon", F.lit("")), "_source_file"
        ).withColumn("_source_file", F.regexp_extract("_source_file", r"[^/]+$", 0)),
        [
            Row(r["order_id"], float(r["amount"]), r["status"], r["coupon"], r["file"])
            for r in latest.values()
        ],
    )
    assert quarantine_counts(spark, catalog) == {
        "malformed": len(landed.bad),
        "valid_types": len([r for r in landed.records if _amount(r) is None]),
        "positive_amount": len([r for r in landed.records if (_amount(r) or 1) <= 0]),
    }
    quarantined = catalog.read(spark, SILVER_QUARANTINE).where("rule = 'positive_amount'")
    raw = json.loads(quarantined.first()["raw_record"])
    assert raw["amount"].startswith("-") and raw["_source_file"].endswith(".csv")
    results = catalog.read(spark, SILVER_EXPECTATIONS).where("entity = 'silver.orders'")
    failed = {r[0]: r[1] for r in results.groupBy("expectation").sum("failed").collect()}
    assert failed["known_status"] == len([r for r in kept if r["status"] == "LOST"])
    assert failed["duplicates"] == len(kept) - len(latest)
    accounting = user_accounting(spark, catalog, spec)
    assert accounting.balanced
    assert accounting.silver_rows == len(latest)

    # A re-run changes nothing.
    versions = {t: catalog.version(spark, t) for t in ("silver.orders", SILVER_QUARANTINE)}
    assert build_user_silver(spark, catalog, spec, silver_checkpoint).rows_read == 0
    assert {t: catalog.version(spark, t) for t in versions} == versions

    # A fail rule stops the build before anything of the batch is committed.
    write_orders(src, range(6, 7), landed, coupon=True, blank_customer=True)
    ingest(spark, settings, catalog, src)
    strict = parse_spec(
        {**SPEC, "expect_or_fail": {"has_customer": "customer IS NOT NULL"}}
    ).with_source("bronze.orders")
    tables = ("silver.orders", SILVER_QUARANTINE, SILVER_EXPECTATIONS)
    before = {t: catalog.version(spark, t) for t in tables}
    with pytest.raises(ExpectationFailed, match="has_customer"):
        build_user_silver(spark, catalog, strict, silver_checkpoint)
    assert {t: catalog.version(spark, t) for t in tables} == before
    # The batch was not checkpointed: the spec without the rule takes it.
    assert build_user_silver(spark, catalog, spec, silver_checkpoint).rows_read == 507
    assert user_accounting(spark, catalog, spec).balanced
    assert catalog.read(spark, "silver.orders").count() == len(
        latest_per_key(passing(landed.records))
    )


def test_specs_and_hints_are_checked_before_anything_runs() -> None:
    with pytest.raises(SpecError, match="unknown section"):
        parse_spec({**SPEC, "expect_or_warn": {}})
    with pytest.raises(SpecError, match="silver table"):
        parse_spec({**SPEC, "target": "gold.orders"})
    with pytest.raises(SpecError, match="keys"):
        parse_spec({k: v for k, v in SPEC.items() if k != "keys"})
    with pytest.raises(SpecError, match="condition"):
        parse_spec({**SPEC, "expect_or_drop": {"empty": ""}})
    with pytest.raises(SpecError, match=r"reads bronze\.a, not bronze\.b"):
        parse_spec({**SPEC, "source": "bronze.a"}).with_source("bronze.b")
    assert split_schema_hints("amount decimal(10,2), `my day` date") == [
        ("amount", "decimal(10,2)"),
        ("my day", "date"),
    ]
    with pytest.raises(SchemaHintError, match="not '<column> <type>'"):
        split_schema_hints("amount")
    assert column_names(["a", " ", "b c", "A"]) == ["a", "_c1", "b_c", "A_2"]


def _lakehouse(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lakehouse")), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_bad_flag_is_a_usage_error(tmp_path: Path) -> None:
    env = {**os.environ, "LAKEHOUSE_HOME": str(tmp_path / "home")}
    done = _lakehouse(
        ["ingest", str(tmp_path), "--table", "gold.x", "--format", "csv"], env, tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.startswith("usage: lakehouse ingest")
    assert "bronze table (bronze.<name>), got 'gold.x'" in done.stderr
    assert "Traceback" not in done.stderr
    done = _lakehouse(
        ["ingest", str(tmp_path), "--table", "bronze.x", "--format", "xml"], env, tmp_path
    )
    assert done.returncode == 2 and "invalid choice: 'xml'" in done.stderr


@pytest.mark.slow
def test_lakehouse_ingest_prints_the_summary(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    src, landed = tmp_path / "drops", Landed()
    write_orders(src, range(2), landed)
    spec = tmp_path / "orders.yaml"
    spec.write_text(json.dumps(SPEC))  # JSON is YAML
    args = ["ingest", str(src), "--table", "bronze.orders", "--format", "csv"]
    done = _lakehouse([*args, "--silver-spec", str(spec)], subprocess_env, tmp_path)
    assert done.returncode == 0, done.stderr
    kept = passing(landed.records)
    latest = latest_per_key(kept)
    quarantined = len(landed.records) + len(landed.bad) - len(kept)
    assert done.stdout.splitlines() == [
        f"bronze.orders: 2 new file(s), {len(landed.records) + 4} row(s), 4 rescued, "
        "new columns: none",
        f"silver.orders: {len(landed.records) + 4} read, {len(latest)} inserted, 0 updated, "
        f"{quarantined} quarantined, {len(kept) - len(latest)} duplicates "
        f"(warnings: known_status={len([r for r in kept if r['status'] == 'LOST'])})",
        f"silver.orders: {len(landed.records) + 4} bronze = {len(latest)} silver + "
        f"{quarantined} quarantined + {len(kept) - len(latest)} duplicates (balanced)",
    ]
