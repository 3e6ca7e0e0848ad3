"""Silver: typing, expectations, quarantine, dedup, idempotent MERGE, accounting."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType
from pyspark.testing import assertDataFrameEqual

from lakehouse.medallion.bronze import ingest_all, ingest_entity
from lakehouse.medallion.contracts import SILVER_SCHEMAS, bronze_schema
from lakehouse.medallion.expectations import (
    DUPLICATES,
    EXPECTATIONS,
    Expectation,
    ExpectationFailed,
    builtin_expectations,
)
from lakehouse.medallion.silver import (
    Accounting,
    SilverBatchProcessor,
    SilverResult,
    accounting,
    build_silver,
    build_silver_entity,
    deduplicate,
    ensure_shared_tables,
    typed_customers,
    typed_loan_applications,
    typed_repayments,
    typed_transactions,
)
from lakehouse.platform.catalog import (
    SILVER_CUSTOMERS,
    SILVER_EXPECTATIONS,
    SILVER_LOAN_APPLICATIONS,
    SILVER_QUARANTINE,
    TableCatalog,
)
from lakehouse.platform.tables import create_if_missing

T0 = datetime(2026, 1, 7, 6, 0, tzinfo=UTC)
SRC = "file:/landing/x"
TXN_HEADER = "transaction_id,customer_id,amount,merchant_category,channel,transaction_ts"


def ts(text: str) -> datetime:
    """``"2026-01-05T10:00:00"`` as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def land(landing: Path, entity: str, day: str, lines: list[str], ext: str = "json") -> None:
    """Write one landing file."""
    folder = landing / entity
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{entity}_{day}.{ext}").write_text("\n".join(lines) + "\n")


def customer(cid: str, updated_at: str, **changes: object) -> str:
    """One customers JSON line."""
    record: dict[str, object] = {
        "customer_id": cid,
        "name": f"Name {cid}",
        "birth_date": "1990-02-03",
        "annual_income": 50000,
        "employment_years": 4,
        "home_ownership": "RENT",
        "region": "NORTH",
        "credit_score": 700,
        "updated_at": updated_at,
    }
    record.update(changes)
    return json.dumps(record)


def application(aid: str | None, **changes: object) -> str:
    """One loan_applications JSON line."""
    record: dict[str, object] = {
        "application_id": aid,
        "customer_id": "C1",
        "applied_at": "2026-01-05T10:00:00Z",
        "loan_amount": 10000,
        "term_months": 36,
        "purpose": "CAR",
    }
    record.update(changes)
    return json.dumps(record)


def repayment(aid: str, **changes: object) -> str:
    """One repayments JSON line."""
    record: dict[str, object] = {
        "application_id": aid,
        "customer_id": "C1",
        "observed_at": "2026-03-01T00:00:00Z",
        "defaulted": False,
        "days_past_due": 0,
    }
    record.update(changes)
    return json.dumps(record)


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    """Landing folder and checkpoint roots of one test."""
    landing = tmp_path / "landing"
    landing.mkdir()
    return {"landing": landing, "bronze": tmp_path / "chk_bronze", "silver": tmp_path / "chk"}


def nullable(entity: str) -> StructType:
    """The silver schema of ``entity`` with every column nullable (typing does not filter)."""
    return StructType([StructField(f.name, f.dataType, True) for f in SILVER_SCHEMAS[entity]])


# --- Typing -------------------------------------------------------------------------------------


def bronze_rows(spark: SparkSession, entity: str, rows: list[tuple[object, ...]]) -> DataFrame:
    """Bronze rows of ``entity``: the raw fields given, then no rescued data, SRC, T0."""
    return spark.createDataFrame([(*r, None, SRC, T0) for r in rows], bronze_schema(entity))


def test_typed_customers(spark: SparkSession) -> None:
    df = bronze_rows(
        spark,
        "customers",
        [
            (
                "C1",
                " Ann ",
                "1990-02-03",
                "52000.5",
                "4",
                "RENT",
                "NORTH",
                "701",
                "2026-01-05T13:45:10Z",
            ),
            ("C2", "", "1990-13-40", "lots", None, "OWN", "SOUTH", "701.0", "yesterday"),
        ],
    )
    expected = spark.createDataFrame(
        [
            (
                "C1",
                "Ann",
                date(1990, 2, 3),
                52000.5,
                4.0,
                "RENT",
                "NORTH",
                701,
                ts("2026-01-05T13:45:10"),
                SRC,
                T0,
            ),
            ("C2", None, None, None, None, "OWN", "SOUTH", 701, None, SRC, T0),
        ],
        nullable("customers"),
    )

    assertDataFrameEqual(typed_customers(df), expected, checkRowOrder=True)


def test_typed_transactions(spark: SparkSession) -> None:
    df = bronze_rows(
        spark,
        "transactions",
        [
            ("T1", "C1", "10.25", "GROCERY", "POS", "2026-01-05T10:00:00Z"),
            ("T2", "C1", "1,000.00", "TRAVEL", "ONLINE", "2026-01-05"),
        ],
    )
    expected = spark.createDataFrame(
        [
            ("T1", "C1", 10.25, "GROCERY", "POS", ts("2026-01-05T10:00:00"), SRC, T0),
            ("T2", "C1", None, "TRAVEL", "ONLINE", ts("2026-01-05T00:00:00"), SRC, T0),
        ],
        nullable("transactions"),
    )

    assertDataFrameEqual(typed_transactions(df), expected, checkRowOrder=True)


def test_typed_loan_applications(spark: SparkSession) -> None:
    df = bronze_rows(
        spark,
        "loan_applications",
        [
            ("A1", "C1", "2026-01-05T10:00:00Z", "10000", "36", "CAR"),
            ("A2", "C2", "2026-01-06T11:30:00Z", "2500.5", "36.0", "OTHER"),
            ("A3", "C3", "2026-01-06T11:30:00Z", "-1", "36.5", None),
        ],
    )
    expected = spark.createDataFrame(
        [
            ("A1", "C1", ts("2026-01-05T10:00:00"), 10000.0, 36, "CAR", SRC, T0),
            ("A2", "C2", ts("2026-01-06T11:30:00"), 2500.5, 36, "OTHER", SRC, T0),
            ("A3", "C3", ts("2026-01-06T11:30:00"), -1.0, None, None, SRC, T0),
        ],
        nullable("loan_applications"),
    )

    assertDataFrameEqual(typed_loan_applications(df), expected, checkRowOrder=True)


def test_typed_repayments(spark: SparkSession) -> None:
    df = bronze_rows(
        spark,
        "repayments",
        [
            ("A1", "C1", "2026-03-01T00:00:00Z", "true", "12"),
            ("A2", "C2", "2026-03-02T00:00:00Z", "false", "0"),
            ("A3", "C3", "2026-03-02T00:00:00Z", "maybe", "x"),
        ],
    )
    expected = spark.createDataFrame(
        [
            ("A1", "C1", ts("2026-03-01T00:00:00"), True, 12, SRC, T0),
            ("A2", "C2", ts("2026-03-02T00:00:00"), False, 0, SRC, T0),
            ("A3", "C3", ts("2026-03-02T00:00:00"), None, None, SRC, T0),
        ],
        nullable("repayments"),
    )

    assertDataFrameEqual(typed_repayments(df), expected, checkRowOrder=True)


def test_deduplicate_keeps_the_latest_row_and_counts_distinct_records(spark: SparkSession) -> None:
    t1, t2 = T0.replace(hour=7), T0.replace(hour=8)
    at = ts("2026-03-01T00:00:00")
    rows = [
        # A1: one record landed twice (an exact duplicate), then a newer version.
        ("A1", "C1", at, True, 12, "file:/a", T0),
        ("A1", "C1", at, True, 12, "file:/b", t1),
        ("A1", "C1", at, True, 30, "file:/c", t2),
        # A2: two versions in one file at the same time: the larger values win the tie.
        ("A2", "C2", at, False, None, "file:/a", T0),
        ("A2", "C2", at, False, 5, "file:/a", T0),
        # A3: alone.
        ("A3", "C3", at, True, 1, "file:/a", T0),
    ]
    df = spark.createDataFrame(rows, nullable("repayments"))

    plain = deduplicate(df, "repayments")
    counted = deduplicate(df, "repayments", versions="_versions")

    kept = [
        ("A1", "C1", at, True, 30, "file:/c", t2),
        ("A2", "C2", at, False, 5, "file:/a", T0),
        ("A3", "C3", at, True, 1, "file:/a", T0),
    ]
    assertDataFrameEqual(plain, spark.createDataFrame(kept, nullable("repayments")))
    by_key = {r["application_id"]: r["_versions"] for r in counted.collect()}
    assert by_key == {"A1": 2, "A2": 2, "A3": 1}
    assertDataFrameEqual(counted.drop("_versions"), plain)


# --- Build --------------------------------------------------------------------------------------


def test_customers_drop_warn_dedup_rerun_and_update(
    spark: SparkSession, catalog: TableCatalog, paths: dict[str, Path]
) -> None:
    day1 = "2026-01-05T10:00:00Z"
    land(
        paths["landing"],
        "customers",
        "2026-01-05",
        [
            customer("C1", day1),
            customer("C1", day1),  # exact duplicate
            customer("C2", day1),
            customer("C3", day1, credit_score=900),  # dropped: valid_credit_score
            customer("C4", day1, home_ownership="CASTLE"),  # warned, kept
            '{"customer_id": "C9", "name": ',  # malformed
            customer("C5", day1, annual_income=-5),  # dropped: valid_annual_income
            customer("C6", day1, loyalty_tier="GOLD"),  # schema drift, kept
        ],
    )
    land(
        paths["landing"],
        "customers",
        "2026-01-06",
        [
            customer("C2", day1, credit_score=702),  # same key, later file: wins
            customer("C1", "2026-01-06T09:00:00Z", region="WEST"),  # a new profile version
        ],
    )
    ingest_entity(spark, catalog, "customers", paths["landing"], paths["bronze"])

    result = build_silver_entity(spark, catalog, "customers", paths["silver"], "run-1")

    assert result == SilverResult(
        "customers",
        rows_read=10,
        inserted=5,
        updated=0,
        quarantined=3,
        exact_duplicates=1,
        key_duplicates=1,
        warnings=(("known_home_ownership", 1), ("schema_drift", 1)),
    )
    silver = catalog.read(spark, SILVER_CUSTOMERS).select(
        "customer_id", "updated_at", "credit_score", "region", "home_ownership"
    )
    assertDataFrameEqual(
        silver,
        spark.createDataFrame(
            [
                ("C1", ts("2026-01-05T10:00:00"), 700, "NORTH", "RENT"),
                ("C1", ts("2026-01-06T09:00:00"), 700, "WEST", "RENT"),
                ("C2", ts("2026-01-05T10:00:00"), 702, "NORTH", "RENT"),
                ("C4", ts("2026-01-05T10:00:00"), 700, "NORTH", "CASTLE"),
                ("C6", ts("2026-01-05T10:00:00"), 700, "NORTH", "RENT"),
            ],
            "customer_id string, updated_at timestamp, credit_score int, region string, "
            "home_ownership string",
        ),
    )
    quarantine = catalog.read(spark, SILVER_QUARANTINE)
    assertDataFrameEqual(
        quarantine.select(
            "entity", "rule", json_field("raw_record", "customer_id"), "run_id", "_source_file"
        ),
        [
            Row("customers", "malformed", None, "run-1", source(paths, "customers", "2026-01-05")),
            Row(
                "customers",
                "valid_credit_score",
                "C3",
                "run-1",
                source(paths, "customers", "2026-01-05"),
            ),
            Row(
                "customers",
                "valid_annual_income",
                "C5",
                "run-1",
                source(paths, "customers", "2026-01-05"),
            ),
        ],
    )
    malformed = quarantine.where("rule = 'malformed'").first()
    assert malformed is not None
    assert json.loads(malformed["raw_record"])["_rescued_data"] == '{"customer_id": "C9", "name": '
    results = catalog.read(spark, SILVER_EXPECTATIONS).where("run_id = 'run-1'")
    assertDataFrameEqual(
        results.select("expectation", "action", "passed", "failed"),
        [
            Row("malformed", "drop", 9, 1),
            Row("schema_drift", "warn", 8, 1),
            Row("valid_customer_id", "drop", 9, 0),
            Row("valid_name", "drop", 9, 0),
            Row("valid_birth_date", "drop", 9, 0),
            Row("valid_annual_income", "drop", 8, 1),
            Row("valid_employment_years", "drop", 8, 0),
            Row("valid_home_ownership", "drop", 8, 0),
            Row("valid_region", "drop", 8, 0),
            Row("valid_credit_score", "drop", 7, 1),
            Row("valid_updated_at", "drop", 7, 0),
            Row("known_home_ownership", "warn", 6, 1),
            Row("required_fields", "drop", 7, 0),
            Row("duplicates", "drop", 5, 2),
        ],
    )

    versions = {
        n: catalog.version(spark, n)
        for n in (SILVER_CUSTOMERS, SILVER_QUARANTINE, SILVER_EXPECTATIONS)
    }
    again = build_silver_entity(spark, catalog, "customers", paths["silver"], "run-2")

    assert again == SilverResult("customers")
    assert {n: catalog.version(spark, n) for n in versions} == versions

    land(
        paths["landing"],
        "customers",
        "2026-01-07",
        [
            customer("C2", day1, credit_score=710),  # newer and different: updates
            customer("C4", day1, home_ownership="CASTLE"),  # newer but identical: no update
        ],
    )
    ingest_entity(spark, catalog, "customers", paths["landing"], paths["bronze"])
    third = build_silver_entity(spark, catalog, "customers", paths["silver"], "run-3")

    assert (third.inserted, third.updated, third.key_duplicates) == (0, 1, 2)
    c2 = catalog.read(spark, SILVER_CUSTOMERS).where("customer_id = 'C2'").collect()
    assert [(r["credit_score"], r["_source_file"]) for r in c2] == [
        (710, source(paths, "customers", "2026-01-07"))
    ]
    assert accounting(spark, catalog, "customers") == Accounting("customers", 12, 5, 3, 4)


def json_field(column: str, field: str) -> Column:
    """``get_json_object(column, '$.field')`` aliased to ``field``."""
    return F.get_json_object(column, f"$.{field}").alias(field)


def source(paths: dict[str, Path], entity: str, day: str) -> str:
    """How the file source names a landing file of this test."""
    ext = "csv" if entity == "transactions" else "json"
    return f"file:{paths['landing'] / entity / f'{entity}_{day}.{ext}'}"


def raw_customer(cid: str, income: str = "50000", home: str = "RENT") -> tuple[str, ...]:
    """The bronze fields of one customer record, all strings."""
    return (cid, f"Name {cid}", "1990-02-03", income, "4", home, "NORTH", "700", "2026-01-05")


def test_batch_processor_holds_its_counts_and_writes_them_to_delta(
    spark: SparkSession, catalog: TableCatalog, tmp_path: Path
) -> None:
    """The micro-batch function keeps the run's totals on itself, not in the caller's variables
    (a ``foreachBatch`` function may run in another process, under Spark Connect), and appends
    each batch's counts to ``silver.expectation_results``."""
    create_if_missing(
        spark, catalog, SILVER_CUSTOMERS, spark.createDataFrame([], SILVER_SCHEMAS["customers"])
    )
    ensure_shared_tables(spark, catalog)
    first, last = builtin_expectations("customers")
    processor = SilverBatchProcessor(
        spark,
        catalog,
        "customers",
        tmp_path / "chk",
        "run-direct",
        [*first, *EXPECTATIONS["customers"], *last],
        empty_target=True,
        replayed=None,
    )
    batch0 = bronze_rows(
        spark,
        "customers",
        [
            raw_customer("C1"),
            raw_customer("C2"),
            raw_customer("C2"),  # exact duplicate
            raw_customer("C3", income="-5"),  # dropped: valid_annual_income
            raw_customer("C4", home="CAVE"),  # warned, kept
        ],
    )
    later = datetime(2026, 1, 8, 6, 0, tzinfo=UTC)
    batch1 = spark.createDataFrame(
        [
            (*raw_customer("C1", income="61000"), None, SRC, later),  # newer: updates C1
            (*raw_customer("C5"), None, SRC, later),
        ],
        bronze_schema("customers"),
    )

    processor(batch0, 0)  # appended: the target is empty
    processor(batch1, 1)  # MERGEd
    processor(batch1.limit(0), 2)  # an empty batch changes nothing

    assert processor.result() == SilverResult(
        "customers",
        rows_read=7,
        inserted=4,
        updated=1,
        quarantined=1,
        exact_duplicates=1,
        key_duplicates=1,
        warnings=(("known_home_ownership", 1), ("schema_drift", 0)),
    )
    silver = {
        r["customer_id"]: r["annual_income"]
        for r in catalog.read(spark, SILVER_CUSTOMERS).collect()
    }
    assert silver == {"C1": 61000.0, "C2": 50000.0, "C4": 50000.0, "C5": 50000.0}
    assert catalog.read(spark, SILVER_QUARANTINE).count() == 1
    recorded = (
        catalog.read(spark, SILVER_EXPECTATIONS)
        .where(F.col("run_id") == "run-direct")
        .groupBy("expectation")
        .agg(F.sum("passed").alias("passed"), F.sum("failed").alias("failed"))
        .collect()
    )
    counts = {r["expectation"]: (r["passed"], r["failed"]) for r in recorded}
    assert counts[DUPLICATES] == (4, 2)
    assert counts["valid_annual_income"] == (6, 1)
    assert counts["known_home_ownership"] == (5, 1)


def test_fail_expectation_commits_nothing_and_the_batch_is_replayed(
    spark: SparkSession, catalog: TableCatalog, paths: dict[str, Path]
) -> None:
    land(
        paths["landing"],
        "loan_applications",
        "2026-01-05",
        [application("A1"), application(None), application("A2", term_months=7)],
    )
    ingest_entity(spark, catalog, "loan_applications", paths["landing"], paths["bronze"])
    tables = (SILVER_LOAN_APPLICATIONS, SILVER_QUARANTINE, SILVER_EXPECTATIONS)
    # A caller's rule set may stop the batch on a missing key (no default rule does).
    strict = [
        Expectation("valid_application_id", "application_id IS NOT NULL", "fail"),
        *[e for e in EXPECTATIONS["loan_applications"] if e.name != "valid_application_id"],
    ]

    with pytest.raises(
        ExpectationFailed, match=r"'valid_application_id'.*1 row.*loan_applications"
    ):
        build_silver_entity(
            spark, catalog, "loan_applications", paths["silver"], "run-1", expectations=strict
        )

    versions = {n: catalog.version(spark, n) for n in tables}
    assert versions == {n: 0 for n in tables}  # created, nothing committed
    assert all(catalog.read(spark, n).count() == 0 for n in tables)
    # The checkpoint did not advance: the same batch fails again.
    with pytest.raises(ExpectationFailed, match="valid_application_id"):
        build_silver_entity(
            spark, catalog, "loan_applications", paths["silver"], "run-2", expectations=strict
        )
    assert {n: catalog.version(spark, n) for n in tables} == versions

    # With the default rules the missing key is quarantined; the replayed batch goes through.
    result = build_silver_entity(spark, catalog, "loan_applications", paths["silver"], "run-3")

    assert (result.rows_read, result.inserted, result.quarantined) == (3, 1, 2)
    assertDataFrameEqual(
        catalog.read(spark, SILVER_LOAN_APPLICATIONS).select("application_id", "term_months"),
        [Row("A1", 36)],
    )
    assertDataFrameEqual(
        catalog.read(spark, SILVER_QUARANTINE).select("rule", "run_id"),
        [Row("valid_application_id", "run-3"), Row("valid_term_months", "run-3")],
    )


def test_batch_written_before_a_crash_is_replayed_without_writing_twice(
    spark: SparkSession, catalog: TableCatalog, paths: dict[str, Path]
) -> None:
    """The process dies after a batch's Delta commits, before the stream's checkpoint records
    the batch: the replay adds no quarantine row, no expectation count and no silver row."""
    land(
        paths["landing"],
        "loan_applications",
        "2026-01-05",
        [application("A1"), application("A1"), application("A2", term_months=7)],
    )
    ingest_entity(spark, catalog, "loan_applications", paths["landing"], paths["bronze"])
    build_silver_entity(spark, catalog, "loan_applications", paths["silver"], "run-1")
    tables = (SILVER_LOAN_APPLICATIONS, SILVER_QUARANTINE, SILVER_EXPECTATIONS)
    counts = {n: catalog.read(spark, n).count() for n in tables}
    assert counts[SILVER_LOAN_APPLICATIONS] == 1 and counts[SILVER_QUARANTINE] == 1
    (paths["silver"] / "commits" / "0").unlink()  # the crash: batch 0 started, never finished

    build_silver_entity(spark, catalog, "loan_applications", paths["silver"], "run-2")

    assert {n: catalog.read(spark, n).count() for n in tables} == counts
    assert catalog.read(spark, SILVER_QUARANTINE).first()["run_id"] == "run-1"  # type: ignore[index]
    assert accounting(spark, catalog, "loan_applications").balanced


def test_accounting_balances_for_every_entity(
    spark: SparkSession, catalog: TableCatalog, paths: dict[str, Path]
) -> None:
    landing = paths["landing"]
    t = "2026-01-05T10:00:00Z"
    land(
        landing,
        "customers",
        "2026-01-05",
        [customer("C1", t), customer("C1", t), customer("C2", t, credit_score=1), "not json"],
    )
    land(
        landing,
        "transactions",
        "2026-01-05",
        [
            TXN_HEADER,
            f"T1,C1,10.0,GROCERY,POS,{t}",
            f"T1,C1,10.0,GROCERY,POS,{t}",
            f"T2,C1,-3,GROCERY,POS,{t}",
            "T3,C1",
            f"T4,C2,12.5,TRAVEL,ONLINE,{t}",
        ],
        ext="csv",
    )
    land(
        landing,
        "loan_applications",
        "2026-01-05",
        [
            application("A1"),
            application("A1", loan_amount=20000),
            application("A2", loan_amount=0),
            "{",
        ],
    )
    land(
        landing,
        "repayments",
        "2026-01-05",
        [
            repayment("A1"),
            repayment("A1"),
            repayment("A2", days_past_due=-4),
            "[]",
            repayment("A3"),
        ],
    )
    ingest_all(spark, catalog, landing, paths["bronze"])
    build_silver(spark, catalog, paths["silver"], "run-1")
    # A second round: a key already in silver, and a new one.
    land(
        landing,
        "transactions",
        "2026-01-06",
        [TXN_HEADER, f"T4,C2,99.0,TRAVEL,ONLINE,{t}", f"T5,C2,1.0,ATM,ATM,{t}"],
        ext="csv",
    )
    land(landing, "repayments", "2026-01-06", [repayment("A3", defaulted=True)])
    ingest_all(spark, catalog, landing, paths["bronze"])
    build_silver(spark, catalog, paths["silver"], "run-2")

    got = [
        accounting(spark, catalog, e)
        for e in ("customers", "transactions", "loan_applications", "repayments")
    ]

    assert got == [
        Accounting("customers", 4, 1, 2, 1),
        Accounting("transactions", 7, 3, 2, 2),
        Accounting("loan_applications", 4, 1, 2, 1),
        Accounting("repayments", 6, 2, 2, 2),
    ]
    assert all(a.balanced for a in got)
    assert (
        catalog.read(spark, "silver.repayments").where("application_id = 'A3'").first()["defaulted"]
        is True
    )  # type: ignore[index]


def test_silver_requires_bronze_and_a_known_entity(
    spark: SparkSession, catalog: TableCatalog, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="unknown entity 'accounts'"):
        build_silver_entity(spark, catalog, "accounts", tmp_path, "run")
    with pytest.raises(ValueError, match=r"bronze.customers_raw does not exist"):
        build_silver_entity(spark, catalog, "customers", tmp_path, "run")
