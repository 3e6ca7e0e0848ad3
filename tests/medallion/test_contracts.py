"""Field contracts: declared for every raw field, bounded by gold's types, enforced by silver.

The first tests need no JVM (the declarations and the patterns, read with Python's ``re``, whose
syntax the patterns share with Java's); the last ones type and check bronze rows on the shared
session and walk the extreme values each contract accepts through gold's transforms.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.medallion import gold
from lakehouse.medallion.contracts import (
    AMOUNT_DECIMAL,
    AMOUNT_LIMIT,
    EVENT_TIME_FLOOR,
    FIELD_CONTRACTS,
    FUTURE_TOLERANCE,
    ID_MAX_LENGTH,
    ID_PATTERN,
    RAW_FIELDS,
    RAW_PATTERNS,
    SILVER_SCHEMAS,
    FieldContract,
    bronze_schema,
    field_contract,
)
from lakehouse.medallion.expectations import EXPECTATIONS, builtin_expectations, flag_expectations
from lakehouse.medallion.silver import prepare_batch

INGESTED = datetime(2026, 1, 7, 6, 0, tzinfo=UTC)


# --- Declarations (no JVM) ----------------------------------------------------------------------


@pytest.mark.parametrize("entity", list(RAW_FIELDS))
def test_every_raw_field_has_one_contract_in_order(entity: str) -> None:
    assert [c.name for c in FIELD_CONTRACTS[entity]] == list(RAW_FIELDS[entity])


def test_the_amount_limit_is_what_golds_decimal_holds() -> None:
    assert gold._AMOUNT_DECIMAL is AMOUNT_DECIMAL
    assert AMOUNT_LIMIT == 1e18  # decimal(24, 6): 18 integer digits
    largest = Decimal(math.nextafter(AMOUNT_LIMIT, 0.0)).quantize(Decimal("0.000001"))
    assert len(largest.as_tuple().digits) <= AMOUNT_DECIMAL.precision
    for name in ("amount", "loan_amount"):
        contract = field_contract("transactions" if name == "amount" else "loan_applications", name)
        assert (contract.maximum, contract.exclusive_maximum) == (AMOUNT_LIMIT, True)
        assert (contract.minimum, contract.exclusive_minimum) == (0.0, True)


def test_keys_and_references_are_required_identifiers() -> None:
    for entity, fields in FIELD_CONTRACTS.items():
        for contract in fields:
            if contract.name.endswith("_id"):
                assert (contract.kind, contract.required) == ("id", True), (entity, contract)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("C000001", True),
        ("T0000000001", True),
        ("CX0001000001", True),
        ("A" * ID_MAX_LENGTH, True),
        ("A" * (ID_MAX_LENGTH + 1), False),
        ("C 1", False),
        ('{"id":1}', False),
        ("-C1", False),
        ("C\ufffd1", False),
    ],
)
def test_identifier_pattern(value: str, ok: bool) -> None:
    assert bool(re.match(ID_PATTERN, value)) is ok


@pytest.mark.parametrize(
    ("kind", "value", "ok"),
    [
        ("number", "10.25", True),
        ("number", "1e308", True),
        ("number", "5e-324", True),
        ("number", "-0", True),
        ("number", "NaN", False),
        ("number", "Infinity", False),
        ("number", "1d", False),
        ("number", "0x1p3", False),
        ("number", "1,000", False),
        ("number", "12.5.1", False),
        ("integer", "36.0", True),
        ("date", "1990-02-03", True),
        ("date", "17/05/1980", False),
        ("timestamp", "2026-01-05T13:45:10Z", True),
        ("timestamp", "2026-01-05", True),
        ("timestamp", "2026-01-05T10:00:00.123+02:00", True),
        ("timestamp", "2026-01-05T1", False),
        ("timestamp", "+10000-01-01T00:00:00Z", False),
        ("timestamp", "1767225600", False),
    ],
)
def test_raw_patterns(kind: str, value: str, ok: bool) -> None:
    assert bool(re.match(RAW_PATTERNS[kind], value)) is ok


def test_a_contract_explains_itself_and_rejects_a_bad_declaration() -> None:
    assert field_contract("customers", "credit_score").domain == (
        "credit_score must be a whole number, 300 <= credit_score <= 850"
    )
    assert field_contract("customers", "name").domain.endswith("(or absent)")
    with pytest.raises(ValueError, match="kind must be one of"):
        FieldContract("x", "float")
    with pytest.raises(ValueError, match="needs a max_length"):
        FieldContract("x", "text")
    with pytest.raises(KeyError, match="no raw field 'nope'"):
        field_contract("customers", "nope")


# --- Enforcement and the walk through gold (JVM) ------------------------------------------------


def _extremes(contract: FieldContract, now: datetime) -> list[str]:
    """The raw texts at the edges of what ``contract`` accepts."""
    kind = contract.kind
    if kind == "id":
        return ["C1", "C" + "9" * (ID_MAX_LENGTH - 1)]
    if kind in ("text", "category"):
        assert contract.max_length is not None
        return ["A", "Z" * contract.max_length]
    if kind == "number":
        assert isinstance(contract.minimum, float) and contract.maximum is not None
        low, high = contract.minimum, contract.maximum
        low = math.nextafter(low, math.inf) if contract.exclusive_minimum else low
        high = math.nextafter(high, -math.inf) if contract.exclusive_maximum else high
        return [repr(low), repr(high)]
    if kind == "integer":
        if contract.values:
            return [str(min(contract.values)), str(max(contract.values))]
        return [str(int(contract.minimum)), str(int(contract.maximum))]  # type: ignore[arg-type]
    if kind == "boolean":
        return ["false", "true"]
    if kind == "date":
        return [str(contract.minimum), str(now.date())]
    # Close to the latest accepted time, leaving the test a minute to get there.
    latest = now + FUTURE_TOLERANCE - timedelta(minutes=1)
    return [f"{EVENT_TIME_FLOOR:%Y-%m-%dT%H:%M:%SZ}", f"{latest:%Y-%m-%dT%H:%M:%SZ}"]


def _bronze(spark: SparkSession, entity: str, rows: list[dict[str, Any]]) -> DataFrame:
    data = [(*[row.get(f) for f in RAW_FIELDS[entity]], None, "file:/x", INGESTED) for row in rows]
    return spark.createDataFrame(data, bronze_schema(entity))


def _checked(spark: SparkSession, entity: str, rows: list[dict[str, Any]]) -> DataFrame:
    """Bronze rows through silver's typing and rules: the frame flagged, with ``_rule``."""
    first, last = builtin_expectations(entity)
    flagged = flag_expectations(
        prepare_batch(_bronze(spark, entity, rows), entity),
        [*first, *EXPECTATIONS[entity], *last],
    )
    return flagged.df.withColumnRenamed("_expectation_rule", "_rule")


def _edge_rows(entity: str, now: datetime) -> list[dict[str, Any]]:
    """Two rows per entity: every field at its low edge, then at its high edge."""
    edges = {c.name: _extremes(c, now) for c in FIELD_CONTRACTS[entity]}
    return [{name: values[i] for name, values in edges.items()} for i in (0, 1)]


def test_the_edges_of_every_contract_pass_silver_and_every_gold_cast(
    spark: SparkSession,
) -> None:
    """Gold never meets a value silver has not checked: the extreme values every contract
    accepts go through silver's rules and then through gold's transforms and casts."""
    now = datetime.now(UTC)
    silver: dict[str, DataFrame] = {}
    for entity in RAW_FIELDS:
        rows = _edge_rows(entity, now)
        if entity in ("transactions", "loan_applications", "repayments"):
            for row in rows:
                row["customer_id"] = "C1"
        if entity == "repayments":
            rows = rows[1:]  # one outcome, of the application at the high edge
        if entity == "transactions":
            # Many of the largest amounts on one customer's day: the sums must hold too.
            rows += [{**rows[1], "transaction_id": f"T{i}"} for i in range(50)]
        flagged = _checked(spark, entity, rows).persist()
        rejected = flagged.where(F.col("_rule").isNotNull()).select("_rule").collect()
        assert rejected == [], (entity, rejected)
        silver[entity] = flagged.select(*[f.name for f in SILVER_SCHEMAS[entity].fields])
    # Every silver column a gold table reads is among these frames' columns, at its edges.
    created = datetime(2026, 7, 1, tzinfo=UTC)
    profile = gold.customer_profile_features(silver["customers"], created).collect()
    features = gold.customer_transaction_features(silver["transactions"], created).collect()
    labels = gold.labels(silver["loan_applications"], silver["repayments"]).collect()
    assert len(profile) == 2 and len(labels) == 1 and features
    largest = max(r["txn_amount_max_30d"] or 0.0 for r in features)
    assert largest == math.nextafter(AMOUNT_LIMIT, 0.0)


@pytest.mark.parametrize(
    ("entity", "field", "value", "rule"),
    [
        ("transactions", "amount", "1e308", "valid_amount"),
        ("transactions", "amount", "1e18", "valid_amount"),
        ("transactions", "amount", "NaN", "valid_amount"),
        ("transactions", "amount", "0", "valid_amount"),
        ("transactions", "transaction_ts", "9999-12-31T23:59:59Z", "valid_transaction_ts"),
        ("transactions", "transaction_ts", "1999-12-31T23:59:59Z", "valid_transaction_ts"),
        ("transactions", "customer_id", "C" * 200_000, "valid_customer_id"),
        ("transactions", "merchant_category", '{"k": 1}', "valid_merchant_category"),
        ("transactions", "channel", None, "valid_channel"),
        ("customers", "name", "caf\ufffd", "valid_name"),
        ("customers", "annual_income", None, "valid_annual_income"),
        ("customers", "credit_score", "851", "valid_credit_score"),
        ("customers", "credit_score", "1e12", "valid_credit_score"),
        ("customers", "birth_date", "2999-01-01", "valid_birth_date"),
        ("loan_applications", "term_months", "7", "valid_term_months"),
        ("repayments", "defaulted", "2", "valid_defaulted"),
        ("repayments", "days_past_due", "3651", "valid_days_past_due"),
    ],
)
def test_a_value_just_outside_its_contract_is_rejected_by_its_rule(
    spark: SparkSession, entity: str, field: str, value: str | None, rule: str
) -> None:
    row = _edge_rows(entity, datetime.now(UTC))[0]
    row[field] = value
    got = _checked(spark, entity, [row]).select("_rule").first()
    assert got is not None and got["_rule"] == rule


def test_an_absent_optional_field_passes_but_an_unreadable_one_does_not(
    spark: SparkSession,
) -> None:
    row = _edge_rows("customers", datetime.now(UTC))[0]
    rows = [{**row, "name": None}, {**row, "name": "  "}, {**row, "birth_date": "0001-01-01"}]
    rules = [r["_rule"] for r in _checked(spark, "customers", rows).select("_rule").collect()]
    assert rules == [None, None, "valid_birth_date"]
