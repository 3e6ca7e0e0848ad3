"""Data quality expectations, as in Delta Live Tables: ``expect``, ``expect_or_drop``,
``expect_or_fail``.

An :class:`Expectation` is a named SQL condition over the typed silver columns with an action:

* ``warn``: the row is kept, the failure is counted;
* ``drop``: the row is rejected (it goes to ``silver.quarantine`` with the rule name);
* ``fail``: any failing row stops the batch with :class:`ExpectationFailed` before anything is
  written.

Expectations are evaluated in order, and a row dropped by one is not evaluated by the later ones,
so every rejected row is counted once, under the first rule it broke. A condition that evaluates
to NULL counts as failed. Two built-in expectations run first on every silver batch (see
:func:`builtin_expectations`): ``malformed`` drops the rows whose raw line did not parse, and
``schema_drift`` warns about rows that carried fields outside the contract. The built-in
``required_fields`` runs last and drops any row still lacking a column that silver declares NOT
NULL, so custom rule sets can never break the silver table's constraints.

The default rules of each entity (:data:`EXPECTATIONS`) are its field contracts
(:data:`lakehouse.medallion.contracts.FIELD_CONTRACTS`, one ``valid_<field>`` drop rule per raw
field: present, of its type, in its domain), plus warnings about values outside the known
vocabulary. None of them is a ``fail`` rule: a bad row is quarantined and the run goes on, since
a failing row would fail every later run as well until someone removed it from bronze by hand.
``fail`` stays available to rule sets a caller passes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from lakehouse.medallion.contracts import (
    CHANNELS,
    EVENT_TIME_FLOOR,
    FIELD_CONTRACTS,
    FUTURE_TOLERANCE,
    HOME_OWNERSHIP,
    ID_MAX_LENGTH,
    ID_PATTERN,
    NESTED_PATTERN,
    NOT_TEXT_PATTERN,
    PURPOSES,
    RAW_FIELDS,
    SILVER_SCHEMAS,
    FieldContract,
)

log = logging.getLogger(__name__)

ACTIONS: tuple[str, ...] = ("warn", "drop", "fail")

#: Rule name of rows whose raw line did not parse (``_rescued_data`` set, every field null).
MALFORMED = "malformed"
#: Warn-only rule counting rows that carried fields outside the contract.
SCHEMA_DRIFT = "schema_drift"
#: Drop rule guarding the NOT NULL columns of the silver schema.
REQUIRED_FIELDS = "required_fields"
#: Name of the duplicate counts in ``silver.expectation_results``.
DUPLICATES = "duplicates"

#: Column a silver batch carries to flag malformed rows (see :func:`malformed_condition`).
MALFORMED_FLAG = "_malformed"
#: Column a silver batch carries: the raw fields whose value did not convert to their type.
UNCONVERTED = "_unconverted"

#: Column of a flagged frame (:func:`flag_expectations`): the first drop rule the row broke.
RULE_COLUMN = "_expectation_rule"
#: Column of a flagged frame (:func:`flag_expectations`): why the row was rejected.
REASON_COLUMN = "_expectation_reason"


@dataclass(frozen=True)
class Expectation:
    """A named SQL condition rows are expected to satisfy, and what to do when one does not.

    Attributes:
        name: rule name, recorded in the quarantine and the expectation results.
        sql_condition: a SQL boolean expression over the typed columns; NULL counts as failed.
        action: ``warn`` (keep and count), ``drop`` (quarantine) or ``fail`` (stop the batch).
        description: human-readable reason stored with quarantined rows; defaults to the
            condition.
    """

    name: str
    sql_condition: str
    action: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(
                f"expectation {self.name!r}: action must be one of {list(ACTIONS)}, "
                f"got {self.action!r}"
            )
        if not self.name or not self.sql_condition.strip():
            raise ValueError(f"expectation needs a name and a condition, got {self!r}")

    @property
    def reason(self) -> str:
        """What a failing row violated, for people."""
        return self.description or f"expected {self.sql_condition}"


@dataclass(frozen=True)
class ExpectationCount:
    """How many rows one expectation saw pass and fail in one batch."""

    name: str
    action: str
    passed: int
    failed: int


class ExpectationFailed(RuntimeError):
    """A ``fail`` expectation was violated: the batch is stopped and nothing is written."""

    def __init__(self, expectation: str, entity: str, failed: int, condition: str = "") -> None:
        self.expectation = expectation
        self.entity = entity
        self.failed = failed
        detail = f" ({condition})" if condition else ""
        super().__init__(
            f"expectation {expectation!r}{detail} failed for {failed} row(s) of {entity!r}; "
            "nothing of the batch was written and it will be processed again on the next run"
        )


def malformed_condition(entity: str) -> str:
    """SQL over bronze columns: the raw line did not parse (rescued, every field null)."""
    fields = " AND ".join(f"`{f}` IS NULL" for f in RAW_FIELDS[entity])
    return f"(_rescued_data IS NOT NULL AND {fields})"


def _required_condition(entity: str) -> str:
    required = [f.name for f in SILVER_SCHEMAS[entity].fields if not f.nullable]
    return " AND ".join(f"`{c}` IS NOT NULL" for c in required if not c.startswith("_"))


def builtin_expectations(entity: str) -> tuple[list[Expectation], list[Expectation]]:
    """The rules every silver batch of ``entity`` runs: (first, last).

    First ``malformed`` (drop; needs the boolean column :data:`MALFORMED_FLAG`) and
    ``schema_drift`` (warn); last ``required_fields`` (drop).
    """
    first = [
        Expectation(
            MALFORMED,
            f"NOT {MALFORMED_FLAG}",
            "drop",
            "the raw line did not parse; it is kept whole in _rescued_data",
        ),
        Expectation(
            SCHEMA_DRIFT,
            "_rescued_data IS NULL",
            "warn",
            "the record carried fields outside the contract (kept in _rescued_data)",
        ),
    ]
    last = [
        Expectation(
            REQUIRED_FIELDS,
            _required_condition(entity),
            "drop",
            "a column that silver declares NOT NULL is missing",
        )
    ]
    return first, last


def _sql_in(column: str, values: Sequence[str | int]) -> str:
    """``column IN (...)`` over the contract's values (strings quoted)."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _one_of(values: Sequence[str]) -> str:
    """``"A, B or C"``, for the reasons people read."""
    return f"{', '.join(values[:-1])} or {values[-1]}"


def _double(value: float) -> str:
    """A SQL double literal (``1e+18D``)."""
    return f"{value!r}D"


def _bounds(column: str, contract: FieldContract) -> list[str]:
    def literal(value: float | date) -> str:
        assert not isinstance(value, date), "a number field cannot have a date bound"
        return str(int(value)) if contract.kind == "integer" else _double(float(value))

    clauses = []
    if contract.minimum is not None:
        op = ">" if contract.exclusive_minimum else ">="
        clauses.append(f"{column} {op} {literal(contract.minimum)}")
    if contract.maximum is not None:
        op = "<" if contract.exclusive_maximum else "<="
        clauses.append(f"{column} {op} {literal(contract.maximum)}")
    return clauses


def domain_condition(contract: FieldContract) -> str:
    """SQL over the typed column of ``contract``'s field: its value is in the field's domain.

    Only meaningful for a non-null value (see :func:`contract_condition`).
    """
    column = f"`{contract.name}`"
    kind = contract.kind
    if kind == "id":
        return f"length({column}) <= {ID_MAX_LENGTH} AND {column} RLIKE r'{ID_PATTERN}'"
    if kind in ("text", "category"):
        return (
            f"length({column}) <= {contract.max_length} "
            f"AND NOT {column} RLIKE r'{NOT_TEXT_PATTERN}' "
            f"AND NOT {column} RLIKE r'{NESTED_PATTERN}'"
        )
    if kind == "number":
        return " AND ".join([f"NOT isnan({column})", *_bounds(column, contract)])
    if kind == "integer":
        if contract.values:
            return _sql_in(column, contract.values)
        return " AND ".join(_bounds(column, contract)) or "true"
    if kind == "date":
        floor = contract.minimum or date(1, 1, 1)
        return f"{column} >= DATE'{floor}' AND {column} <= current_date()"
    if kind == "timestamp":
        seconds = int(FUTURE_TOLERANCE.total_seconds())
        return (
            f"{column} >= TIMESTAMP'{EVENT_TIME_FLOOR:%Y-%m-%dT%H:%M:%SZ}' "
            f"AND {column} <= current_timestamp() + make_interval(0, 0, 0, 0, 0, 0, {seconds})"
        )
    return "true"  # boolean: typed means valid


def contract_condition(contract: FieldContract) -> str:
    """SQL over a typed silver batch: the field keeps its contract.

    A required field must be present, typed and in its domain; an optional one may be absent,
    but a value it holds must convert (:data:`UNCONVERTED`) and be in its domain.
    """
    column = f"`{contract.name}`"
    domain = domain_condition(contract)
    if contract.required:
        return f"{column} IS NOT NULL AND ({domain})"
    return (
        f"CASE WHEN {column} IS NULL THEN NOT array_contains({UNCONVERTED}, '{contract.name}') "
        f"ELSE ({domain}) END"
    )


def contract_expectations(entity: str) -> tuple[Expectation, ...]:
    """One ``drop`` rule per raw field of ``entity``, ``valid_<field>``, from its contract
    (:data:`lakehouse.medallion.contracts.FIELD_CONTRACTS`)."""
    return tuple(
        Expectation(
            f"valid_{contract.name}",
            contract_condition(contract),
            "drop",
            contract.domain,
        )
        for contract in FIELD_CONTRACTS[entity]
    )


CUSTOMER_EXPECTATIONS: tuple[Expectation, ...] = (
    *contract_expectations("customers"),
    Expectation(
        "known_home_ownership",
        _sql_in("home_ownership", HOME_OWNERSHIP),
        "warn",
        f"home_ownership is not {_one_of(HOME_OWNERSHIP)}",
    ),
)

TRANSACTION_EXPECTATIONS: tuple[Expectation, ...] = (
    *contract_expectations("transactions"),
    Expectation(
        "known_channel",
        _sql_in("channel", CHANNELS),
        "warn",
        f"channel is not {_one_of(CHANNELS)}",
    ),
)

LOAN_APPLICATION_EXPECTATIONS: tuple[Expectation, ...] = (
    *contract_expectations("loan_applications"),
    Expectation(
        "known_purpose",
        _sql_in("purpose", PURPOSES),
        "warn",
        "purpose is not a known loan purpose",
    ),
)

REPAYMENT_EXPECTATIONS: tuple[Expectation, ...] = contract_expectations("repayments")

#: The default expectations of each entity: the field contracts (drop) and warnings about
#: values outside the known vocabulary. None is a ``fail`` rule: a row the contract rejects
#: goes to the quarantine and the run goes on, so no row can stop the pipeline.
EXPECTATIONS: Mapping[str, tuple[Expectation, ...]] = {
    "customers": CUSTOMER_EXPECTATIONS,
    "transactions": TRANSACTION_EXPECTATIONS,
    "loan_applications": LOAN_APPLICATION_EXPECTATIONS,
    "repayments": REPAYMENT_EXPECTATIONS,
}


def _failing(exp: Expectation) -> Column:
    """True when the row does not satisfy ``exp`` (a NULL result counts as failing)."""
    return ~F.coalesce(F.expr(exp.sql_condition).cast("boolean"), F.lit(False))


@dataclass(frozen=True)
class FlaggedRows:
    """Rows flagged by a list of expectations, ready to be counted and split in one pass each.

    Attributes:
        df: the input columns, then one boolean ``_exp_failed_<i>`` per expectation, then
            :data:`RULE_COLUMN` (the first drop rule the row broke, or NULL) and
            :data:`REASON_COLUMN`.
        columns: the input columns, in order.
        expectations: the expectations, in order.
        aggregates: aggregate columns counting, per expectation, the rows it passed and failed
            among those still present when it ran; feed them to one ``agg`` (with any other
            aggregate of the caller) and read the result with :meth:`counts`.
    """

    df: DataFrame
    columns: tuple[str, ...]
    expectations: tuple[Expectation, ...]
    aggregates: tuple[Column, ...]

    @property
    def passed(self) -> Column:
        """True for the rows that no drop rule rejected."""
        return F.col(RULE_COLUMN).isNull()

    def counts(self, row: Row) -> list[ExpectationCount]:
        """The per-expectation counts out of a row holding :attr:`aggregates`."""
        return [
            ExpectationCount(
                exp.name, exp.action, int(row[f"_exp_p{i}"] or 0), int(row[f"_exp_f{i}"] or 0)
            )
            for i, exp in enumerate(self.expectations)
        ]

    def passed_rows(self, df: DataFrame | None = None) -> DataFrame:
        """The rows no drop rule rejected, with the input columns (of ``df`` if given: the
        flagged frame itself or a persisted copy of it)."""
        source = self.df if df is None else df
        return source.where(self.passed).select(*[F.col(f"`{c}`") for c in self.columns])

    def rejected_rows(self, df: DataFrame | None = None) -> DataFrame:
        """The rejected rows: the input columns, ``rule`` and ``reason``."""
        source = self.df if df is None else df
        return source.where(~self.passed).select(
            *[F.col(f"`{c}`") for c in self.columns],
            F.col(RULE_COLUMN).alias("rule"),
            F.col(REASON_COLUMN).alias("reason"),
        )


def flag_expectations(df: DataFrame, expectations: Sequence[Expectation]) -> FlaggedRows:
    """Flag every row of ``df`` with the expectations it fails and the first drop rule it broke.

    Nothing is computed: the result describes one pass over ``df``.

    Raises:
        ValueError: two expectations share a name, or a condition does not resolve.
    """
    names = [e.name for e in expectations]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"expectation names must be unique, repeated: {duplicated}")
    flags = [f"_exp_failed_{i}" for i in range(len(expectations))]
    try:
        flagged = df.select(
            "*", *[_failing(e).alias(f) for e, f in zip(expectations, flags, strict=True)]
        )
    except Exception as exc:  # AnalysisException and friends: name the rule
        bad = _unresolved(df, expectations)
        raise ValueError(f"expectation {bad} does not resolve against {df.columns}") from exc

    # The first drop rule each row broke, or NULL: rows present for rule i are those whose
    # first broken drop rule comes at or after i.
    rule_expr: Column = F.lit(None).cast("string")
    reason_expr: Column = F.lit(None).cast("string")
    present: list[Column] = []
    dropped_before: Column = F.lit(False)
    for exp, flag in zip(expectations, flags, strict=True):
        present.append(~dropped_before)
        if exp.action == "drop":
            dropped_before = dropped_before | F.col(flag)
    for exp, flag in reversed(list(zip(expectations, flags, strict=True))):
        if exp.action == "drop":
            rule_expr = F.when(F.col(flag), F.lit(exp.name)).otherwise(rule_expr)
            reason_expr = F.when(F.col(flag), F.lit(exp.reason)).otherwise(reason_expr)
    flagged = flagged.select("*", rule_expr.alias(RULE_COLUMN), reason_expr.alias(REASON_COLUMN))

    aggregates: list[Column] = []
    for i, flag in enumerate(flags):
        aggregates.append(F.count_if(present[i] & ~F.col(flag)).alias(f"_exp_p{i}"))
        aggregates.append(F.count_if(present[i] & F.col(flag)).alias(f"_exp_f{i}"))
    return FlaggedRows(flagged, tuple(df.columns), tuple(expectations), tuple(aggregates))


def check_counts(
    counts: Sequence[ExpectationCount], expectations: Sequence[Expectation], entity: str = ""
) -> None:
    """Raise :class:`ExpectationFailed` for the first failed ``fail`` expectation; log the rest."""
    for exp, count in zip(expectations, counts, strict=True):
        if count.failed and exp.action == "fail":
            raise ExpectationFailed(exp.name, entity, count.failed, exp.sql_condition)
        if count.failed:
            log.log(
                logging.WARNING if exp.action == "warn" else logging.INFO,
                "%s: expectation %s (%s) failed for %d row(s)",
                entity or "rows",
                exp.name,
                exp.action,
                count.failed,
            )


def apply_expectations(
    df: DataFrame, expectations: Sequence[Expectation], entity: str = ""
) -> tuple[DataFrame, DataFrame, list[ExpectationCount]]:
    """Split ``df`` by ``expectations`` into (passed, rejected, counts).

    ``passed`` has the columns of ``df``; ``rejected`` adds ``rule`` (the first drop rule the row
    broke) and ``reason``. ``counts`` holds, per expectation in order, the rows it passed and
    failed among those still present when it ran. Nothing is written; the counts take one
    aggregation over ``df``.

    Raises:
        ExpectationFailed: a ``fail`` expectation failed for at least one row.
        ValueError: two expectations share a name, or a condition does not resolve.
    """
    flagged = flag_expectations(df, expectations)
    counts: list[ExpectationCount] = []
    if expectations:
        row = flagged.df.agg(*flagged.aggregates).first()
        assert row is not None
        counts = flagged.counts(row)
    check_counts(counts, expectations, entity)
    return flagged.passed_rows(), flagged.rejected_rows(), counts


def _unresolved(df: DataFrame, expectations: Sequence[Expectation]) -> str:
    for exp in expectations:
        try:
            df.select(F.expr(exp.sql_condition)).schema  # noqa: B018 - forces analysis
        except Exception:
            return f"{exp.name!r} ({exp.sql_condition})"
    return "(unknown)"
