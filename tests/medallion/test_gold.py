"""Gold: feature tables and labels from hand-built silver tables with known answers."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest
from delta.tables import DeltaTable
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType
from pyspark.testing import assertDataFrameEqual, assertSchemaEqual

from lakehouse.medallion.contracts import (
    GOLD_CUSTOMER_PROFILE_SCHEMA,
    GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
    GOLD_LABELS_SCHEMA,
    SILVER_SCHEMAS,
)
from lakehouse.medallion.gold import (
    build_gold,
    customer_profile_features,
    customer_transaction_features,
    labels,
)
from lakehouse.platform.catalog import (
    GOLD_CUSTOMER_PROFILE,
    GOLD_CUSTOMER_TRANSACTIONS,
    GOLD_LABELS,
    SILVER_CUSTOMERS,
    SILVER_LOAN_APPLICATIONS,
    SILVER_REPAYMENTS,
    SILVER_TRANSACTIONS,
    TableCatalog,
    register_table,
)
from lakehouse.platform.tables import last_operation_metrics

CREATED = dt.datetime(2026, 7, 1, 6, 0, tzinfo=dt.UTC)
INGESTED = dt.datetime(2026, 6, 30, 23, 0, tzinfo=dt.UTC)
GOLD_SCHEMAS = {
    GOLD_CUSTOMER_PROFILE: GOLD_CUSTOMER_PROFILE_SCHEMA,
    GOLD_CUSTOMER_TRANSACTIONS: GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
    GOLD_LABELS: GOLD_LABELS_SCHEMA,
}


def ts(text: str) -> dt.datetime:
    """An aware UTC timestamp from ``YYYY-MM-DD[ HH:MM[:SS]]``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


# --- silver rows ---------------------------------------------------------------------------
def customer(
    cid: str, updated_at: str, birth: str | None = "1990-03-15", income: float = 50_000.0
) -> tuple[Any, ...]:
    return (
        cid,
        f"name {cid}",
        day(birth) if birth else None,
        income,
        4.5,
        "RENT",
        "NORTH",
        700,
        ts(updated_at),
        "customers.json",
        INGESTED,
    )


def txn(
    tid: str,
    cid: str,
    amount: float,
    when: str | dt.datetime,
    cat: str = "GROCERY",
    ch: str = "POS",
) -> tuple[Any, ...]:
    moment = when if isinstance(when, dt.datetime) else ts(when)
    return (tid, cid, amount, cat, ch, moment, "transactions.csv", INGESTED)


def application(aid: str, cid: str, applied_at: str, amount: float = 1000.0) -> tuple[Any, ...]:
    return (aid, cid, ts(applied_at), amount, 12, "CAR", "loan_applications.json", INGESTED)


def repayment(aid: str, cid: str, observed_at: str, defaulted: bool) -> tuple[Any, ...]:
    return (aid, cid, ts(observed_at), defaulted, 3, "repayments.json", INGESTED)


def silver_df(spark: SparkSession, entity: str, rows: list[tuple[Any, ...]]) -> DataFrame:
    return spark.createDataFrame(rows, SILVER_SCHEMAS[entity])


def write_silver(
    spark: SparkSession, catalog: TableCatalog, entity: str, rows: list[tuple[Any, ...]]
) -> None:
    """Append rows to ``silver.<entity>`` (created on the first write)."""
    df = silver_df(spark, entity, rows)
    df.write.format("delta").mode("append").save(catalog.path(f"silver.{entity}"))


# --- expected gold rows --------------------------------------------------------------------
def features(
    cid: str,
    stamp: str,
    windows: tuple[tuple[int, float], tuple[int, float], tuple[int, float]],
    max_30: float | None,
    gambling_30: float | None,
    online_30: float | None,
    created_at: dt.datetime = CREATED,
) -> tuple[Any, ...]:
    """A transaction feature row from (count, sum) per window; average = sum / count."""
    values: list[Any] = []
    for count, total in windows:
        values += [count, total, total / count if count else None]
    return (cid, ts(stamp), *values, max_30, gambling_30, online_30, created_at)


def expected(spark: SparkSession, schema: StructType, rows: list[tuple[Any, ...]]) -> DataFrame:
    return spark.createDataFrame(rows, schema)


# --- profile features ----------------------------------------------------------------------
def test_profile_versions_keep_their_own_event_timestamps(spark: SparkSession) -> None:
    customers = silver_df(
        spark,
        "customers",
        [
            customer("C1", "2026-03-14 23:59:59", income=50_000.0),
            customer("C1", "2026-03-15 00:00:00", income=61_000.0),
            customer("C2", "2026-01-10 08:30:00", birth=None, income=40_000.0),
        ],
    )
    out = customer_profile_features(customers, CREATED)
    assertSchemaEqual(out.schema, GOLD_CUSTOMER_PROFILE_SCHEMA, ignoreNullable=False)
    assertDataFrameEqual(
        out,
        expected(
            spark,
            GOLD_CUSTOMER_PROFILE_SCHEMA,
            [
                ("C1", ts("2026-03-14 23:59:59"), 35, 50_000.0, 4.5, 700, "RENT", "NORTH", CREATED),
                ("C1", ts("2026-03-15 00:00:00"), 36, 61_000.0, 4.5, 700, "RENT", "NORTH", CREATED),
                (
                    "C2",
                    ts("2026-01-10 08:30:00"),
                    None,
                    40_000.0,
                    4.5,
                    700,
                    "RENT",
                    "NORTH",
                    CREATED,
                ),
            ],
        ),
    )


@pytest.mark.parametrize(
    ("birth", "updated_at", "age"),
    [
        ("1990-03-15", "2026-03-14 23:59:59", 35),  # the day before the birthday
        ("1990-03-15", "2026-03-15 00:00:00", 36),  # on the birthday
        ("1990-03-15", "2026-12-31 12:00:00", 36),
        ("1990-12-31", "2026-01-01 00:00:00", 35),
        ("2000-02-29", "2025-02-28 12:00:00", 24),  # leap-day birthday, common year
        ("2000-02-29", "2025-03-01 00:00:00", 25),
        ("2000-02-29", "2024-02-29 00:00:00", 24),
        ("2026-03-15", "2026-03-15 10:00:00", 0),
        ("2026-03-16", "2026-03-15 10:00:00", None),  # born after the event: unknown
        (None, "2026-03-15 10:00:00", None),
    ],
)
def test_age_in_whole_years_at_event_timestamp(
    spark: SparkSession, birth: str | None, updated_at: str, age: int | None
) -> None:
    customers = silver_df(spark, "customers", [customer("C1", updated_at, birth=birth)])
    assert customer_profile_features(customers, CREATED).first()["age"] == age  # type: ignore[index]


# --- transaction features ------------------------------------------------------------------
SMALL_TRANSACTIONS = [
    txn("T1", "C1", 100.0, "2026-01-01 10:00"),
    txn("T2", "C1", 50.0, "2026-01-01 18:00", cat="GAMBLING", ch="ONLINE"),
    txn("T3", "C1", 30.0, "2026-01-03 09:00", cat="TRAVEL", ch="ONLINE"),
    txn("T4", "C2", 20.0, "2026-01-02 12:00"),
]


def test_transaction_features_known_answers(spark: SparkSession) -> None:
    out = customer_transaction_features(
        silver_df(spark, "transactions", SMALL_TRANSACTIONS), CREATED
    )
    assertSchemaEqual(out.schema, GOLD_CUSTOMER_TRANSACTIONS_SCHEMA, ignoreNullable=False)
    assertDataFrameEqual(
        out,
        expected(
            spark,
            GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
            [
                features("C1", "2026-01-02", ((2, 150.0),) * 3, 100.0, 50.0 / 150.0, 0.5),
                features("C1", "2026-01-04", ((3, 180.0),) * 3, 100.0, 50.0 / 180.0, 2.0 / 3.0),
                # No gambling: a share of 0.0, not null.
                features("C2", "2026-01-03", ((1, 20.0),) * 3, 20.0, 0.0, 0.0),
            ],
        ),
    )


@pytest.mark.parametrize(
    ("window", "windows", "max_30"),
    [
        (7, ((2, 11.0), (3, 111.0), (3, 111.0)), 100.0),
        (30, ((1, 10.0), (2, 11.0), (3, 111.0)), 10.0),
        (90, ((1, 10.0), (1, 10.0), (2, 11.0)), 10.0),
    ],
)
def test_window_edges(
    spark: SparkSession,
    window: int,
    windows: tuple[tuple[int, float], tuple[int, float], tuple[int, float]],
    max_30: float,
) -> None:
    stamp = ts("2026-06-11")
    edge = stamp - dt.timedelta(days=window)
    rows = [
        txn("IN", "C1", 1.0, edge),  # exactly N days before the stamp: inside
        txn("OUT", "C1", 100.0, edge - dt.timedelta(seconds=1)),  # just over: outside
        txn("LAST", "C1", 10.0, "2026-06-10 23:59:59"),  # the aggregated day D
        txn("NEXT", "C1", 5000.0, "2026-06-11 00:00:00"),  # at the stamp: not yet seen
    ]
    out = customer_transaction_features(silver_df(spark, "transactions", rows), CREATED)
    at_stamp = out.where(F.col("event_timestamp") == F.lit(stamp))
    assertDataFrameEqual(
        at_stamp,
        expected(
            spark,
            GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
            [features("C1", "2026-06-11", windows, max_30, 0.0, 0.0)],
        ),
    )


def test_as_of_days_gives_rows_with_empty_windows(spark: SparkSession) -> None:
    out = customer_transaction_features(
        silver_df(spark, "transactions", SMALL_TRANSACTIONS),
        CREATED,
        as_of_days=[day("2025-12-31"), day("2026-01-01"), day("2026-03-01")],
    )
    assertSchemaEqual(out.schema, GOLD_CUSTOMER_TRANSACTIONS_SCHEMA, ignoreNullable=False)
    assertDataFrameEqual(
        out,
        expected(
            spark,
            GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
            [
                # 2025-12-31: nobody has a transaction before 2026-01-01 yet: no rows.
                # 2026-01-01: C1 only (C2 starts on 01-02).
                features("C1", "2026-01-02", ((2, 150.0),) * 3, 100.0, 50.0 / 150.0, 0.5),
                # 2026-03-01: nothing in 7 or 30 days: 0 counts and sums, null avg/max/shares.
                features("C1", "2026-03-02", ((0, 0.0), (0, 0.0), (3, 180.0)), None, None, None),
                features("C2", "2026-03-02", ((0, 0.0), (0, 0.0), (1, 20.0)), None, None, None),
            ],
        ),
    )


def test_zero_amount_window_has_null_gambling_share(spark: SparkSession) -> None:
    rows = [txn("T1", "C1", 0.0, "2026-01-01 10:00", cat="GAMBLING", ch="ONLINE")]
    row = customer_transaction_features(silver_df(spark, "transactions", rows), CREATED).first()
    assert row is not None
    assert (row["gambling_share_30d"], row["online_share_30d"]) == (None, 1.0)


def test_transaction_features_reject_missing_column(spark: SparkSession) -> None:
    df = silver_df(spark, "transactions", SMALL_TRANSACTIONS).drop("amount")
    with pytest.raises(ValueError, match=r"silver.transactions is missing column\(s\) amount"):
        customer_transaction_features(df, CREATED)


@pytest.mark.parametrize("as_of_days", ["2026-01-01", ["2026-01-01"]])
def test_as_of_days_must_be_dates(spark: SparkSession, as_of_days: Any) -> None:
    df = silver_df(spark, "transactions", SMALL_TRANSACTIONS)
    with pytest.raises(TypeError, match="as_of_days must"):
        customer_transaction_features(df, CREATED, as_of_days=as_of_days)


# --- labels --------------------------------------------------------------------------------
def test_labels_only_for_observed_outcomes(spark: SparkSession) -> None:
    applications = silver_df(
        spark,
        "loan_applications",
        [
            application("A1", "C1", "2026-01-05 10:00", 1000.0),
            application("A2", "C1", "2026-01-20 10:00", 2000.0),  # outcome not observed yet
            application("A3", "C2", "2026-01-06 11:00", 3000.0),
        ],
    )
    repayments = silver_df(
        spark,
        "repayments",
        [
            repayment("A1", "C1", "2026-02-20 00:00", True),
            repayment("A3", "C2", "2026-03-01 00:00", False),
            repayment("A9", "C9", "2026-03-01 00:00", True),  # no such application
        ],
    )
    out = labels(applications, repayments)
    assertSchemaEqual(out.schema, GOLD_LABELS_SCHEMA, ignoreNullable=False)
    assertDataFrameEqual(
        out,
        expected(
            spark,
            GOLD_LABELS_SCHEMA,
            [
                ("A1", "C1", ts("2026-01-05 10:00"), 1000.0, 12, "CAR", 1, ts("2026-02-20")),
                ("A3", "C2", ts("2026-01-06 11:00"), 3000.0, 12, "CAR", 0, ts("2026-03-01")),
            ],
        ),
    )


# --- schemas of transforms over Delta-read (all-nullable) silver ---------------------------
def test_transforms_keep_gold_nullability_over_delta_input(
    spark: SparkSession, catalog: TableCatalog
) -> None:
    seed_silver(spark, catalog)
    read = {name: catalog.read(spark, name) for name in SILVER_TABLES}
    assert all(f.nullable for f in read[SILVER_TRANSACTIONS].schema.fields)
    outputs = {
        GOLD_CUSTOMER_PROFILE: customer_profile_features(read[SILVER_CUSTOMERS], CREATED),
        GOLD_CUSTOMER_TRANSACTIONS: customer_transaction_features(
            read[SILVER_TRANSACTIONS], CREATED
        ),
        GOLD_LABELS: labels(read[SILVER_LOAN_APPLICATIONS], read[SILVER_REPAYMENTS]),
    }
    for name, df in outputs.items():
        assertSchemaEqual(df.schema, GOLD_SCHEMAS[name], ignoreNullable=False)


def test_null_in_a_non_nullable_column_fails_naming_it(spark: SparkSession) -> None:
    nullable = StructType(
        [StructField(f.name, f.dataType, True) for f in SILVER_SCHEMAS["repayments"].fields]
    )
    repayments = spark.createDataFrame(
        [("A1", "C1", ts("2026-02-20"), None, 3, "r.json", INGESTED)], nullable
    )
    applications = silver_df(spark, "loan_applications", [application("A1", "C1", "2026-01-05")])
    with pytest.raises(PySparkException, match=r"gold\.labels: column defaulted must not be null"):
        labels(applications, repayments).collect()


# --- build_gold ----------------------------------------------------------------------------
SILVER_TABLES = (SILVER_CUSTOMERS, SILVER_TRANSACTIONS, SILVER_LOAN_APPLICATIONS, SILVER_REPAYMENTS)
T1 = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
T2 = dt.datetime(2026, 7, 2, tzinfo=dt.UTC)


def seed_silver(spark: SparkSession, catalog: TableCatalog) -> None:
    write_silver(
        spark,
        catalog,
        "customers",
        [
            customer("C1", "2026-01-01 08:00"),
            customer("C1", "2026-02-01 08:00", income=70_000.0),
            customer("C2", "2026-01-02 09:00", birth="1980-07-01"),
        ],
    )
    write_silver(
        spark,
        catalog,
        "transactions",
        [
            txn("T1", "C1", 100.0, "2026-01-01 10:00"),
            txn("T2", "C1", 30.0, "2026-01-03 09:00", cat="TRAVEL", ch="ONLINE"),
            txn("T3", "C1", 50.0, "2026-01-20 12:00", cat="GAMBLING", ch="ONLINE"),
            txn("T4", "C2", 20.0, "2026-01-02 12:00"),
        ],
    )
    write_silver(
        spark,
        catalog,
        "loan_applications",
        [
            application("A1", "C1", "2026-01-05 10:00"),
            application("A2", "C2", "2026-01-06 10:00"),
            application("A3", "C1", "2026-01-25 10:00"),
        ],
    )
    write_silver(
        spark,
        catalog,
        "repayments",
        [
            repayment("A1", "C1", "2026-02-20 00:00", False),
            repayment("A2", "C2", "2026-03-01 00:00", True),
        ],
    )


def gold_versions(spark: SparkSession, catalog: TableCatalog) -> dict[str, int]:
    return {name: catalog.version(spark, name) for name in GOLD_SCHEMAS}


@pytest.fixture(scope="module")
def built_template(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded silver and the first gold build (at T1), built once for this module."""
    root = tmp_path_factory.mktemp("gold-template") / "tables"
    template = TableCatalog(str(root))
    seed_silver(spark, template)
    counts = build_gold(spark, template, created_at=T1)
    assert counts == {GOLD_CUSTOMER_PROFILE: 3, GOLD_CUSTOMER_TRANSACTIONS: 7, GOLD_LABELS: 2}
    return root


@pytest.fixture
def built(spark: SparkSession, catalog: TableCatalog, built_template: Path) -> TableCatalog:
    """This test's own copy of the seeded silver and first gold build (Delta logs are relative)."""
    shutil.copytree(built_template, catalog.root)
    for name in GOLD_SCHEMAS:
        register_table(spark, catalog, name)
    return catalog


def test_build_gold_writes_documented_tables_and_skips_unchanged_silver(
    spark: SparkSession, built: TableCatalog
) -> None:
    catalog = built

    for name, schema in GOLD_SCHEMAS.items():
        table_schema = catalog.read(spark, name).schema
        # The column comments live in the fields' metadata; compare names, types, nullability.
        bare = StructType([StructField(f.name, f.dataType, f.nullable) for f in table_schema])
        assertSchemaEqual(bare, schema, ignoreNullable=False)
        description = DeltaTable.forPath(spark, catalog.path(name)).detail().first()
        assert description is not None and description["description"]
        comments = {
            row["col_name"]: row["comment"] for row in spark.sql(f"DESCRIBE TABLE {name}").collect()
        }
        assert [c for c in schema.fieldNames() if not comments.get(c)] == []
    assert spark.sql("DESCRIBE TABLE gold.labels").where("col_name = 'defaulted'").first()[
        "comment"
    ] == ("Label: 1 the loan defaulted, 0 it was repaid.")

    assertDataFrameEqual(
        catalog.read(spark, GOLD_CUSTOMER_TRANSACTIONS),
        expected(
            spark,
            GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
            [
                features("C1", "2026-01-02", ((1, 100.0),) * 3, 100.0, 0.0, 0.0, T1),
                features("C1", "2026-01-04", ((2, 130.0),) * 3, 100.0, 0.0, 0.5, T1),
                # 01-01 leaves the 7-day window on 01-08, 01-03 on 01-10: a row each.
                features(
                    "C1", "2026-01-09", ((1, 30.0), (2, 130.0), (2, 130.0)), 100.0, 0.0, 0.5, T1
                ),
                features(
                    "C1", "2026-01-11", ((0, 0.0), (2, 130.0), (2, 130.0)), 100.0, 0.0, 0.5, T1
                ),
                features(
                    "C1",
                    "2026-01-21",
                    ((1, 50.0), (3, 180.0), (3, 180.0)),
                    100.0,
                    50.0 / 180.0,
                    2.0 / 3.0,
                    T1,
                ),
                features("C2", "2026-01-03", ((1, 20.0),) * 3, 20.0, 0.0, 0.0, T1),
                features("C2", "2026-01-10", ((0, 0.0), (1, 20.0), (1, 20.0)), 20.0, 0.0, 0.0, T1),
                # 01-01 + 30 days is after the last day with data: no row yet.
            ],
        ),
    )

    before = gold_versions(spark, catalog)
    counts = {GOLD_CUSTOMER_PROFILE: 3, GOLD_CUSTOMER_TRANSACTIONS: 7, GOLD_LABELS: 2}
    assert build_gold(spark, catalog, created_at=T2) == counts
    assert gold_versions(spark, catalog) == before
    assert catalog.read(spark, GOLD_LABELS).where(F.col("defaulted") == 1).count() == 1


def test_new_silver_row_changes_only_affected_rows(
    spark: SparkSession, built: TableCatalog
) -> None:
    catalog = built
    before = gold_versions(spark, catalog)

    # A late transaction on 01-02: new rows as of 01-03 (its day) and 01-10 (the day it leaves
    # the 7-day window), new values for the four later C1 rows whose windows reach back to it;
    # C1 as of 01-02 and C2 stay as they were.
    write_silver(spark, catalog, "transactions", [txn("T5", "C1", 10.0, "2026-01-02 15:00")])
    counts = build_gold(spark, catalog, created_at=T2)

    assert counts[GOLD_CUSTOMER_TRANSACTIONS] == 9
    after = gold_versions(spark, catalog)
    assert after == {**before, GOLD_CUSTOMER_TRANSACTIONS: before[GOLD_CUSTOMER_TRANSACTIONS] + 1}
    metrics = last_operation_metrics(spark, catalog, GOLD_CUSTOMER_TRANSACTIONS)
    assert (metrics["numTargetRowsInserted"], metrics["numTargetRowsUpdated"]) == (2, 4)
    columns = ["customer_id", "event_timestamp", "created_at", "txn_count_7d"]
    stamps = catalog.read(spark, GOLD_CUSTOMER_TRANSACTIONS).select(*columns)
    assertDataFrameEqual(
        stamps,
        spark.createDataFrame(
            [
                ("C1", ts("2026-01-02"), T1, 1),
                ("C1", ts("2026-01-03"), T2, 2),
                ("C1", ts("2026-01-04"), T2, 3),
                ("C1", ts("2026-01-09"), T2, 2),
                ("C1", ts("2026-01-10"), T2, 1),
                ("C1", ts("2026-01-11"), T2, 0),
                ("C1", ts("2026-01-21"), T2, 1),
                ("C2", ts("2026-01-03"), T1, 1),
                ("C2", ts("2026-01-10"), T1, 0),
            ],
            stamps.schema,
        ),
    )

    # A newly observed outcome: one label inserted, nothing else rewritten.
    write_silver(spark, catalog, "repayments", [repayment("A3", "C1", "2026-03-10", True)])
    assert build_gold(spark, catalog, created_at=T2)[GOLD_LABELS] == 3
    assert gold_versions(spark, catalog) == {**after, GOLD_LABELS: after[GOLD_LABELS] + 1}
    assert last_operation_metrics(spark, catalog, GOLD_LABELS)["numTargetRowsInserted"] == 1


def test_silver_commit_without_effect_writes_nothing(
    spark: SparkSession, built: TableCatalog
) -> None:
    catalog = built
    before = gold_versions(spark, catalog)
    write_silver(spark, catalog, "customers", [customer("C3", "2026-01-03 08:00")])
    DeltaTable.forPath(spark, catalog.path(SILVER_CUSTOMERS)).delete("customer_id = 'C3'")

    assert build_gold(spark, catalog, created_at=T2)[GOLD_CUSTOMER_PROFILE] == 3
    assert gold_versions(spark, catalog) == before
    assert catalog.read(spark, GOLD_CUSTOMER_PROFILE).where(F.col("created_at") == T2).count() == 0


def test_build_gold_requires_silver(spark: SparkSession, catalog: TableCatalog) -> None:
    write_silver(spark, catalog, "customers", [customer("C1", "2026-01-01 08:00")])
    with pytest.raises(ValueError, match=r"silver.loan_applications, silver.repayments, silver"):
        build_gold(spark, catalog)
