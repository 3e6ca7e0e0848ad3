"""Expectations: warn keeps, drop rejects with the rule, fail raises; counted in order."""

from __future__ import annotations

import pytest
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from lakehouse.medallion.contracts import RAW_FIELDS
from lakehouse.medallion.expectations import (
    EXPECTATIONS,
    Expectation,
    ExpectationCount,
    ExpectationFailed,
    apply_expectations,
    check_counts,
    flag_expectations,
)

RULES = [
    Expectation("positive_amount", "amount > 0", "drop", "amount is not positive"),
    Expectation("known_channel", "channel IN ('POS', 'ATM')", "warn"),
    Expectation("small_amount", "amount < 100", "drop"),
]


def test_warn_keeps_drop_rejects_and_counts_in_order(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("T1", 10.0, "POS"), ("T2", -1.0, "POS"), ("T3", 5.0, "WEB"), ("T4", 500.0, "ATM")],
        "id string, amount double, channel string",
    )

    passed, rejected, counts = apply_expectations(df, RULES, "transactions")

    assertDataFrameEqual(passed, [Row("T1", 10.0, "POS"), Row("T3", 5.0, "WEB")])
    assertDataFrameEqual(
        rejected,
        [
            Row("T2", -1.0, "POS", "positive_amount", "amount is not positive"),
            Row("T4", 500.0, "ATM", "small_amount", "expected amount < 100"),
        ],
    )
    assert rejected.columns == ["id", "amount", "channel", "rule", "reason"]
    # T2 is dropped by the first rule, so the later rules see three rows.
    assert counts == [
        ExpectationCount("positive_amount", "drop", 3, 1),
        ExpectationCount("known_channel", "warn", 2, 1),
        ExpectationCount("small_amount", "drop", 2, 1),
    ]


def test_flagged_rows_count_in_the_callers_aggregation(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("T1", 10.0, "POS"), ("T2", -1.0, "POS"), ("T3", 5.0, "WEB"), ("T3", 5.0, "WEB")],
        "id string, amount double, channel string",
    )
    flagged = flag_expectations(df, RULES)

    row = flagged.df.agg(
        *flagged.aggregates, F.count_distinct(F.when(flagged.passed, F.col("id"))).alias("ids")
    ).first()

    assert row is not None and row["ids"] == 2
    assert flagged.counts(row) == [
        ExpectationCount("positive_amount", "drop", 3, 1),
        ExpectationCount("known_channel", "warn", 1, 2),
        ExpectationCount("small_amount", "drop", 3, 0),
    ]
    rejected = flagged.rejected_rows().select("id", "rule")
    assertDataFrameEqual(rejected, [Row("T2", "positive_amount")])
    assert flagged.passed_rows().columns == ["id", "amount", "channel"]
    fail = [Expectation("has_id", "id <> 'T2'", "fail")]
    with pytest.raises(ExpectationFailed, match=r"'has_id'.*1 row"):
        check_counts([ExpectationCount("has_id", "fail", 3, 1)], fail, "transactions")


def test_null_result_counts_as_failed(spark: SparkSession) -> None:
    df = spark.createDataFrame([("T1", None), ("T2", 3.0)], "id string, amount double")

    passed, rejected, counts = apply_expectations(df, RULES[:1])

    assertDataFrameEqual(passed, [Row("T2", 3.0)])
    assertDataFrameEqual(rejected, [Row("T1", None, "positive_amount", "amount is not positive")])
    assert counts == [ExpectationCount("positive_amount", "drop", 1, 1)]


def test_fail_raises_naming_rule_entity_and_count(spark: SparkSession) -> None:
    df = spark.createDataFrame([("A1",), (None,), (None,)], "application_id string")
    rules = [Expectation("valid_application_id", "application_id IS NOT NULL", "fail")]

    with pytest.raises(
        ExpectationFailed, match=r"'valid_application_id'.*2 row.*'loan_apps'"
    ) as err:
        apply_expectations(df, rules, "loan_apps")

    assert (err.value.expectation, err.value.entity, err.value.failed) == (
        "valid_application_id",
        "loan_apps",
        2,
    )


def test_fail_ignores_rows_dropped_before_it(spark: SparkSession) -> None:
    df = spark.createDataFrame([("A1", True), (None, False)], "id string, ok boolean")
    rules = [
        Expectation("ok", "ok", "drop"),
        Expectation("has_id", "id IS NOT NULL", "fail"),
    ]

    passed, _, counts = apply_expectations(df, rules)

    assertDataFrameEqual(passed, [Row("A1", True)])
    assert counts[1] == ExpectationCount("has_id", "fail", 1, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "x", "sql_condition": "a > 0", "action": "explode"}, "action must be one of"),
        ({"name": "", "sql_condition": "a > 0", "action": "warn"}, "needs a name"),
        ({"name": "x", "sql_condition": " ", "action": "drop"}, "needs a name"),
    ],
)
def test_bad_expectation_is_rejected(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Expectation(**kwargs)


def test_unresolved_condition_and_duplicate_names_are_rejected(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1,)], "a int")

    with pytest.raises(ValueError, match=r"'typo' \(b > 0\) does not resolve"):
        apply_expectations(df, [Expectation("typo", "b > 0", "drop")])
    with pytest.raises(ValueError, match=r"repeated: \['x'\]"):
        apply_expectations(df, [Expectation("x", "a > 0", "drop")] * 2)


@pytest.mark.parametrize("entity", list(EXPECTATIONS))
def test_default_rules_check_every_raw_field_and_never_fail_the_run(entity: str) -> None:
    rules = EXPECTATIONS[entity]
    assert len({r.name for r in rules}) == len(rules)
    assert [r.action for r in rules if r.action == "fail"] == []
    drop = [r.name for r in rules if r.action == "drop"]
    assert drop == [f"valid_{field}" for field in RAW_FIELDS[entity]]
