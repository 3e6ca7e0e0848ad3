"""Bronze: incremental ingest of landing files, each exactly once, nothing dropped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import Row, SparkSession
from pyspark.sql.types import StringType, StructField, StructType
from pyspark.testing import assertDataFrameEqual, assertSchemaEqual

from lakehouse.medallion.bronze import (
    BronzeBatchIngester,
    IngestResult,
    file_stats,
    ingest_all,
    ingest_entity,
    parse_files,
    pending_batch,
)
from lakehouse.medallion.contracts import bronze_schema
from lakehouse.platform.catalog import BRONZE_CUSTOMERS, BRONZE_TRANSACTIONS, TableCatalog

TXN_HEADER = "transaction_id,customer_id,amount,merchant_category,channel,transaction_ts"


def land(landing: Path, entity: str, day: str, lines: list[str], ext: str = "json") -> Path:
    """Write one landing file; return its path."""
    folder = landing / entity
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{entity}_{day}.{ext}"
    path.write_text("\n".join(lines) + "\n")
    return path


def customer(cid: str, updated_at: str = "2026-01-05T13:45:10Z", **extra: object) -> str:
    """One customers JSON line."""
    record: dict[str, object] = {
        "customer_id": cid,
        "name": f"Name {cid}",
        "birth_date": "1990-02-03",
        "annual_income": 52000.5,
        "employment_years": 4,
        "home_ownership": "RENT",
        "region": "NORTH",
        "credit_score": 701,
        "updated_at": updated_at,
    }
    record.update(extra)
    return json.dumps(record)


def source(path: Path) -> str:
    """How the file source names a local file."""
    return f"file:{path}"


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    """An empty landing folder."""
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def test_ingest_is_incremental_and_exactly_once(
    spark: SparkSession, catalog: TableCatalog, landing: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "chk" / "customers"
    first = land(landing, "customers", "2026-01-05", [customer("C1"), customer("C2")])

    result = ingest_entity(spark, catalog, "customers", landing, checkpoint)

    assert result == IngestResult("customers", files=1, rows=2, rescued_rows=0)
    table = catalog.read(spark, BRONZE_CUSTOMERS)
    assertSchemaEqual(table.schema, bronze_schema("customers"), ignoreNullable=False)
    version = catalog.version(spark, BRONZE_CUSTOMERS)
    assert spark.sql("SELECT count(*) AS n FROM bronze.customers_raw").first()["n"] == 2  # type: ignore[index]

    again = ingest_entity(spark, catalog, "customers", landing, checkpoint)

    assert again == IngestResult("customers", files=0, rows=0, rescued_rows=0)
    assert catalog.version(spark, BRONZE_CUSTOMERS) == version
    assert catalog.read(spark, BRONZE_CUSTOMERS).count() == 2

    second = land(landing, "customers", "2026-01-06", [customer("C3", "2026-01-06T08:00:00Z")])
    third = ingest_entity(spark, catalog, "customers", landing, checkpoint)

    assert third == IngestResult("customers", files=1, rows=1, rescued_rows=0)
    assert catalog.version(spark, BRONZE_CUSTOMERS) == version + 1
    got = catalog.read(spark, BRONZE_CUSTOMERS).select(
        "customer_id", "annual_income", "employment_years", "credit_score", "_source_file"
    )
    assertDataFrameEqual(
        got,
        [
            Row("C1", "52000.5", "4", "701", source(first)),
            Row("C2", "52000.5", "4", "701", source(first)),
            Row("C3", "52000.5", "4", "701", source(second)),
        ],
    )


def test_batch_appended_before_a_crash_is_not_appended_again(
    spark: SparkSession, catalog: TableCatalog, landing: Path, tmp_path: Path
) -> None:
    """The process dies after the Delta commit of a batch, before the stream's checkpoint
    records the batch: the next run replays it and appends nothing."""
    checkpoint = tmp_path / "chk" / "customers"
    land(landing, "customers", "2026-01-05", [customer("C1"), customer("C2")])
    ingest_entity(spark, catalog, "customers", landing, checkpoint)
    version = catalog.version(spark, BRONZE_CUSTOMERS)
    assert pending_batch(spark, checkpoint) is None
    (checkpoint / "commits" / "0").unlink()  # the crash: batch 0 started, never finished
    assert pending_batch(spark, checkpoint) == 0

    replay = ingest_entity(spark, catalog, "customers", landing, checkpoint)

    assert replay == IngestResult("customers", files=1, rows=2, rescued_rows=0)
    assert catalog.version(spark, BRONZE_CUSTOMERS) == version
    assert catalog.read(spark, BRONZE_CUSTOMERS).count() == 2
    assert pending_batch(spark, checkpoint) is None

    # The next batch, a first attempt, is appended as usual.
    land(landing, "customers", "2026-01-06", [customer("C3", "2026-01-06T08:00:00Z")])
    assert ingest_entity(spark, catalog, "customers", landing, checkpoint).rows == 1
    assert catalog.read(spark, BRONZE_CUSTOMERS).count() == 3


def test_batch_ingester_holds_its_counts_for_the_caller(
    spark: SparkSession, catalog: TableCatalog, tmp_path: Path
) -> None:
    """The micro-batch function keeps its counts on itself, not in the caller's variables (a
    ``foreachBatch`` function may run in another process, under Spark Connect)."""
    checkpoint = tmp_path / "chk" / "customers"
    spark.createDataFrame([], bronze_schema("customers")).write.format("delta").save(
        catalog.path(BRONZE_CUSTOMERS)
    )
    ingester = BronzeBatchIngester(catalog, "customers", checkpoint, replayed=None)
    files = spark.createDataFrame(
        [
            ("\n".join([customer("C1"), customer("C2")]) + "\n", "file:/landing/a.json"),
            (customer("C3") + "\n{broken\n", "file:/landing/b.json"),
        ],
        "value STRING, _source_file STRING",
    )

    ingester(files, 0)
    ingester(files.limit(0), 1)  # an empty batch changes nothing

    assert ingester.result() == IngestResult("customers", files=2, rows=4, rescued_rows=1)
    assert catalog.read(spark, BRONZE_CUSTOMERS).count() == 4

    # Through a real stream: what ingest_entity returns is the ingester's count.
    landing = tmp_path / "landing"
    land(landing, "customers", "2026-01-05", [customer("C4")])
    streamed = ingest_entity(spark, catalog, "customers", landing, tmp_path / "chk2")
    assert streamed == IngestResult("customers", files=1, rows=1, rescued_rows=0)
    assert catalog.read(spark, BRONZE_CUSTOMERS).count() == 5


def test_malformed_json_line_is_kept_with_rescued_data(
    spark: SparkSession, catalog: TableCatalog, landing: Path, tmp_path: Path
) -> None:
    bad = '{"customer_id": "C9", "name": '
    path = land(landing, "customers", "2026-01-05", [customer("C1"), bad, "[1, 2]", "{}"])

    result = ingest_entity(spark, catalog, "customers", landing, tmp_path / "chk")

    assert result == IngestResult("customers", files=1, rows=4, rescued_rows=3)
    got = catalog.read(spark, BRONZE_CUSTOMERS).select(
        "customer_id", "updated_at", "_rescued_data", "_source_file"
    )
    assertDataFrameEqual(
        got,
        [
            Row("C1", "2026-01-05T13:45:10Z", None, source(path)),
            Row(None, None, bad, source(path)),
            Row(None, None, "[1, 2]", source(path)),
            Row(None, None, "{}", source(path)),
        ],
    )


def test_json_drift_field_is_captured_in_rescued_data(
    spark: SparkSession, catalog: TableCatalog, landing: Path, tmp_path: Path
) -> None:
    land(landing, "customers", "2026-01-05", [customer("C1", segment="GOLD", score_v2=3)])

    result = ingest_entity(spark, catalog, "customers", landing, tmp_path / "chk")

    assert result.rescued_rows == 1
    row = catalog.read(spark, BRONZE_CUSTOMERS).first()
    assert row is not None
    assert (row["customer_id"], row["credit_score"]) == ("C1", "701")
    assert json.loads(row["_rescued_data"]) == {"segment": "GOLD", "score_v2": "3"}


def test_csv_bad_line_and_drift_column(
    spark: SparkSession, catalog: TableCatalog, landing: Path, tmp_path: Path
) -> None:
    plain = land(
        landing,
        "transactions",
        "2026-01-05",
        [
            TXN_HEADER,
            "T1,C1,10.5,GROCERY,POS,2026-01-05T10:00:00Z",
            "T2,C1,oops",
            'T3,C2,"1,000.00",TRAVEL,ONLINE,2026-01-05T11:00:00Z',
            "T4,C2,5,TRAVEL,ONLINE,2026-01-05T11:00:00Z,extra",
        ],
        ext="csv",
    )
    drift_header = (
        "transaction_id,customer_id,amount,device_type,merchant_category,channel,transaction_ts"
    )
    drifted = land(
        landing,
        "transactions",
        "2026-01-06",
        [drift_header, "T5,C3,7.25,mobile,GAMBLING,ONLINE,2026-01-06T09:30:00Z"],
        ext="csv",
    )

    result = ingest_entity(spark, catalog, "transactions", landing, tmp_path / "chk")

    assert result == IngestResult("transactions", files=2, rows=5, rescued_rows=3)
    got = catalog.read(spark, BRONZE_TRANSACTIONS).drop("_ingested_at")
    assertDataFrameEqual(
        got,
        [
            Row("T1", "C1", "10.5", "GROCERY", "POS", "2026-01-05T10:00:00Z", None, source(plain)),
            Row(None, None, None, None, None, None, "T2,C1,oops", source(plain)),
            Row(
                "T3",
                "C2",
                "1,000.00",
                "TRAVEL",
                "ONLINE",
                "2026-01-05T11:00:00Z",
                None,
                source(plain),
            ),
            Row(
                None,
                None,
                None,
                None,
                None,
                None,
                "T4,C2,5,TRAVEL,ONLINE,2026-01-05T11:00:00Z,extra",
                source(plain),
            ),
            Row(
                "T5",
                "C3",
                "7.25",
                "GAMBLING",
                "ONLINE",
                "2026-01-06T09:30:00Z",
                '{"device_type":"mobile"}',
                source(drifted),
            ),
        ],
    )


def test_header_only_file_counts_as_ingested_without_rows(
    spark: SparkSession, catalog: TableCatalog, landing: Path, tmp_path: Path
) -> None:
    land(landing, "transactions", "2026-01-05", [TXN_HEADER], ext="csv")

    result = ingest_entity(spark, catalog, "transactions", landing, tmp_path / "chk")

    assert result == IngestResult("transactions", files=1, rows=0, rescued_rows=0)
    assert catalog.version(spark, BRONZE_TRANSACTIONS) == 0


def test_ingest_all_creates_every_table_even_without_files(
    spark: SparkSession, catalog: TableCatalog, landing: Path, tmp_path: Path
) -> None:
    land(landing, "customers", "2026-01-05", [customer("C1")])

    results = ingest_all(spark, catalog, landing, tmp_path / "chk")

    assert results == [
        IngestResult("customers", 1, 1, 0),
        IngestResult("transactions", 0, 0, 0),
        IngestResult("loan_applications", 0, 0, 0),
        IngestResult("repayments", 0, 0, 0),
    ]
    assert catalog.list_tables(spark) == [
        "bronze.customers_raw",
        "bronze.loan_applications_raw",
        "bronze.repayments_raw",
        "bronze.transactions_raw",
    ]


FILES = StructType([StructField("value", StringType()), StructField("_source_file", StringType())])


@pytest.mark.parametrize(
    ("entity", "contents", "expected"),
    [
        # A byte-order mark is not data: the line after it counts.
        ("customers", ["{}\n\n{}\r\n", "", "  \n{}", "\ufeff{}\n"], (4, 4, [])),
        (
            "transactions",
            [
                f"{TXN_HEADER}\nT1,C1\n\nT2,C1\n",
                TXN_HEADER,
                "",
                "\n  \na,b\nT3",
                "  \r\n\r\nh1,h2\r\nx,y\r\n",
                "   ",
                # A lone carriage return ends a line too: " ", " " and the header "z".
                " \r \nz\r",
                f"\ufeff{TXN_HEADER}\nT9,C1\n",
            ],
            (8, 5, sorted([TXN_HEADER, "a,b", "h1,h2", "z"])),
        ),
    ],
)
def test_file_stats_count_what_parsing_makes(
    spark: SparkSession, entity: str, contents: list[str], expected: tuple[int, int, list[str]]
) -> None:
    files = spark.createDataFrame([(c, f"f{i}") for i, c in enumerate(contents)], FILES)

    row = file_stats(files, entity).first()
    light = file_stats(files, entity, rows=False).first()
    parsed = parse_files(files, entity, datetime(2026, 1, 1, tzinfo=UTC))

    assert row is not None and light is not None
    assert (row["files"], row["rows"], sorted(row["headers"])) == expected
    # Headers read from the heads of the files are the first lines parsing finds.
    assert (light["files"], light["rows"], sorted(light["headers"])) == (
        expected[0],
        None,
        expected[2],
    )
    assert parsed.count() == expected[1]


def test_unknown_entity_and_missing_landing_are_rejected(
    spark: SparkSession, catalog: TableCatalog, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="unknown entity 'accounts'"):
        ingest_entity(spark, catalog, "accounts", tmp_path, tmp_path / "chk")
    with pytest.raises(FileNotFoundError, match=r"landing folder .*nowhere does not exist"):
        ingest_entity(spark, catalog, "customers", tmp_path / "nowhere", tmp_path / "chk")
