"""Gold: point-in-time ready customer features and labels, built from silver.

Feature tables are keyed by ``(customer_id, event_timestamp)``: a row's values hold from its
``event_timestamp`` on, so a point-in-time join (Feast ``get_historical_features``) picks the
latest row at or before the time of a loan application and never sees the future.

* :func:`customer_profile_features`: one row per profile version, stamped ``updated_at``.
* :func:`customer_transaction_features`: rolling aggregates as of the start of each day after a
  day on which a window changed: a day with transactions, or a day on which one leaves a
  window (or as of chosen days).
* :func:`labels`: loan applications whose outcome has been observed, ``defaulted`` as 0/1.

:func:`build_gold` reads silver through the catalog, computes the three tables and MERGEs only
changed rows. The silver Delta versions a table was built from are recorded in the
``userMetadata`` of its MERGE commit; when they have not moved since, the table is skipped and
its Delta version stays the same.

Transactions and loan applications of a customer not (yet) in ``silver.customers`` are held
back (:func:`with_known_references`): ``silver.customers`` is an input of both tables, so they
join gold at the first build after their customer arrives.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal

from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DataType,
    DecimalType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructType,
    TimestampType,
)
from pyspark.sql.window import Window, WindowSpec

from lakehouse.medallion.contracts import (
    AMOUNT_DECIMAL,
    GAMBLING,
    GOLD_CUSTOMER_PROFILE_SCHEMA,
    GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
    GOLD_LABELS_SCHEMA,
    ONLINE,
    REFERENCES,
    SECONDS_PER_DAY,
    TRANSACTION_WINDOWS,
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
)
from lakehouse.platform.tables import (
    create_if_missing,
    delta_version,
    latest_user_metadata,
    merge_upsert,
)

log = logging.getLogger(__name__)

#: Amounts are summed as decimals: exact, so a recomputation gives bit-identical features
#: whatever the order Spark adds them in, and unchanged rows are recognised as unchanged. Silver
#: accepts only amounts this type holds (the contract's ``AMOUNT_LIMIT`` derives from it).
_AMOUNT_DECIMAL: DecimalType = AMOUNT_DECIMAL

#: Key of the JSON object in a gold commit's ``userMetadata`` that lists the silver inputs.
INPUTS_METADATA_KEY = "lakehouse_gold_inputs"
_USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
#: Held while a gold build sets the session's commit metadata (or commits without its own), so
#: that gold tables built side by side never record another table's inputs.
_SESSION_METADATA = threading.Lock()

_EPOCH = dt.date(1970, 1, 1)
_EPOCH_TS = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# --- helpers -------------------------------------------------------------------------------
def _require_columns(df: DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} is missing column(s) {', '.join(missing)}; has {df.columns}")


def _placeholder(data_type: DataType) -> Column:
    """A non-null literal of ``data_type`` (never a value: it follows a raise_error)."""
    if isinstance(data_type, StringType):
        return F.lit("")
    if isinstance(data_type, TimestampType):
        return F.lit(_EPOCH_TS)
    if isinstance(data_type, LongType | IntegerType | DoubleType):
        return F.lit(0).cast(data_type)
    raise TypeError(f"no placeholder for non-nullable {data_type.simpleString()} columns")


def _conform(df: DataFrame, schema: StructType, what: str) -> DataFrame:
    """Select ``schema``'s columns in order, cast to its types, with its nullability.

    A column the schema declares non-nullable but whose expression Spark deems nullable (any
    column read from a file) is wrapped so that a null fails the query with a message naming
    the column, which also lets Spark mark it non-nullable.
    """
    current = {f.name: f for f in df.schema.fields}
    columns: list[Column] = []
    for field in schema.fields:
        column = F.col(field.name)
        if current[field.name].dataType != field.dataType:
            column = column.cast(field.dataType)
        if not field.nullable and current[field.name].nullable:
            column = F.coalesce(
                column,
                F.raise_error(F.lit(f"{what}: column {field.name} must not be null")),
                _placeholder(field.dataType),
            )
        columns.append(column.alias(field.name))
    return df.select(*columns)


def _day_number(ts: Column) -> Column:
    """Days since 1970-01-01 of a timestamp, in UTC whatever the session time zone."""
    return F.floor(F.unix_seconds(ts) / F.lit(SECONDS_PER_DAY))


def _day_start(day_number: Column) -> Column:
    """The timestamp 00:00:00 UTC of a day number."""
    return F.timestamp_seconds(day_number * F.lit(SECONDS_PER_DAY))


def _as_day_number(day: dt.date) -> int:
    if not isinstance(day, dt.date):
        raise TypeError(f"as_of_days must hold dates, got {day!r}")
    return day.toordinal() - _EPOCH.toordinal()


def _age(birth_date: Column, on: Column) -> Column:
    """Whole years from ``birth_date`` to the date ``on``; null when unknown or negative."""
    before_birthday = (F.month(on) < F.month(birth_date)) | (
        (F.month(on) == F.month(birth_date)) & (F.dayofmonth(on) < F.dayofmonth(birth_date))
    )
    years = F.year(on) - F.year(birth_date) - F.when(before_birthday, 1).otherwise(0)
    return F.when(birth_date.isNotNull() & (birth_date <= on), years).cast(IntegerType())


# --- transforms ----------------------------------------------------------------------------
def customer_profile_features(customers: DataFrame, created_at: dt.datetime) -> DataFrame:
    """Profile features, one row per profile version of ``silver.customers``.

    ``event_timestamp`` is the version's ``updated_at``; ``age`` is the whole number of years
    from ``birth_date`` to the UTC date of ``event_timestamp`` (null when the birth date is
    unknown or after that date). Returns :data:`GOLD_CUSTOMER_PROFILE_SCHEMA`.
    """
    _require_columns(
        customers,
        (
            "customer_id",
            "birth_date",
            "annual_income",
            "employment_years",
            "home_ownership",
            "region",
            "credit_score",
            "updated_at",
        ),
        "silver.customers",
    )
    event_date = F.date_from_unix_date(_day_number(F.col("updated_at")).cast(IntegerType()))
    out = customers.select(
        "customer_id",
        F.col("updated_at").alias("event_timestamp"),
        _age(F.col("birth_date"), event_date).alias("age"),
        "annual_income",
        "employment_years",
        "credit_score",
        "home_ownership",
        "region",
        F.lit(created_at).alias("created_at"),
    )
    return _conform(out, GOLD_CUSTOMER_PROFILE_SCHEMA, GOLD_CUSTOMER_PROFILE)


def customer_transaction_features(
    transactions: DataFrame,
    created_at: dt.datetime,
    as_of_days: Sequence[dt.date] | None = None,
) -> DataFrame:
    """Rolling transaction features per customer, as of the start of a day.

    A row for customer ``c`` and day ``D`` is stamped ``event_timestamp = D + 1 00:00:00 UTC``
    and aggregates ``c``'s transactions with ``transaction_ts`` in ``[D + 1 - N days, D + 1)``
    for each ``N`` in :data:`TRANSACTION_WINDOWS`: count, sum and average of ``amount``; over
    30 days also the largest amount, the share of the amount spent in ``GAMBLING`` and the
    share of the transactions made ``ONLINE``. Empty windows give count and sum 0 and null
    average, maximum and shares.

    Args:
        transactions: ``silver.transactions``.
        created_at: when the rows are computed.
        as_of_days: ``None`` (default) gives a row for each day on which the customer had a
            transaction and for each day on which one of those days leaves a window (up to the
            last day with data), so a row holds until the customer's next one. Dates give a
            row for each of those days instead, for every customer with at least one
            transaction before the row's ``event_timestamp`` (windows may then be empty).

    Returns :data:`GOLD_CUSTOMER_TRANSACTIONS_SCHEMA`. Transactions are aggregated to
    (customer, day) first; the windows are range frames over day numbers.
    """
    _require_columns(
        transactions,
        ("customer_id", "amount", "merchant_category", "channel", "transaction_ts"),
        "silver.transactions",
    )
    if isinstance(as_of_days, str | bytes):
        raise TypeError("as_of_days must be a sequence of dates, not a string")
    amount = F.col("amount").cast(_AMOUNT_DECIMAL)
    daily = (
        transactions.withColumn("_day", _day_number(F.col("transaction_ts")))
        .groupBy("customer_id", "_day")
        .agg(
            F.count(F.lit(1)).alias("_n"),
            F.sum(amount).alias("_sum"),
            F.max("amount").alias("_max"),
            F.sum(F.when(F.col("merchant_category") == GAMBLING, amount)).alias("_gambling"),
            F.sum(F.when(F.col("channel") == ONLINE, F.lit(1)).otherwise(F.lit(0))).alias(
                "_online"
            ),
        )
        .withColumn("_emit", F.lit(as_of_days is None))
    )
    if as_of_days is None:
        # A window also changes on the day a transaction day leaves it: one row on each such
        # "exit" day (d + N for each window N), up to the last day with data. So each row holds
        # exactly until the customer's next row, and a customer who stops transacting ends with
        # a row whose windows are empty instead of stale counts.
        last_day = daily.agg(F.max("_day")).first()
        horizon = int(last_day[0]) if last_day and last_day[0] is not None else -1
        exits = (
            daily.select(
                "customer_id",
                F.explode(F.array(*[F.col("_day") + n for n in TRANSACTION_WINDOWS])).alias("_day"),
            )
            .where(F.col("_day") <= F.lit(horizon))
            .distinct()
            .join(daily.select("customer_id", "_day"), ["customer_id", "_day"], "left_anti")
            .withColumn("_emit", F.lit(True))
        )
        daily = daily.unionByName(exits, allowMissingColumns=True)
    else:
        # One spine row per (customer, requested day) from the customer's first day on; it
        # carries no measures, so it only adds an output row and leaves the sums alone.
        spark = transactions.sparkSession
        day_numbers = sorted({_as_day_number(day) for day in as_of_days})
        requested = spark.createDataFrame([(d,) for d in day_numbers], "_day long")
        spine = (
            daily.groupBy("customer_id")
            .agg(F.min("_day").alias("_first"))
            .crossJoin(requested)
            .where(F.col("_first") <= F.col("_day"))
            .select("customer_id", "_day", F.lit(True).alias("_emit"))
        )
        daily = daily.unionByName(spine, allowMissingColumns=True)

    def frame(days: int) -> WindowSpec:
        return Window.partitionBy("customer_id").orderBy("_day").rangeBetween(-(days - 1), 0)

    decimal_zero = F.lit(Decimal(0)).cast(_AMOUNT_DECIMAL)
    features: list[Column] = []
    for days in TRANSACTION_WINDOWS:
        count = F.coalesce(F.sum("_n").over(frame(days)), F.lit(0).cast(LongType()))
        total = F.coalesce(F.sum("_sum").over(frame(days)), decimal_zero).cast(DoubleType())
        features += [
            count.alias(f"txn_count_{days}d"),
            total.alias(f"txn_amount_sum_{days}d"),
            F.when(count > 0, total / count).alias(f"txn_amount_avg_{days}d"),
        ]
    count_30 = F.col("txn_count_30d")
    total_30 = F.col("txn_amount_sum_30d")
    gambling_30 = F.coalesce(F.sum("_gambling").over(frame(30)), decimal_zero).cast(DoubleType())
    online_30 = F.coalesce(F.sum("_online").over(frame(30)), F.lit(0).cast(LongType()))
    out = (
        daily.select(
            "customer_id",
            "_day",
            "_emit",
            *features,
            F.max("_max").over(frame(30)).alias("txn_amount_max_30d"),
            gambling_30.alias("_gambling_30d"),
            online_30.alias("_online_30d"),
        )
        .where(F.col("_emit"))
        .select(
            "*",
            _day_start(F.col("_day") + 1).alias("event_timestamp"),
            F.when(total_30 > 0, F.col("_gambling_30d") / total_30).alias("gambling_share_30d"),
            F.when(count_30 > 0, F.col("_online_30d") / count_30).alias("online_share_30d"),
            F.lit(created_at).alias("created_at"),
        )
    )
    return _conform(out, GOLD_CUSTOMER_TRANSACTIONS_SCHEMA, GOLD_CUSTOMER_TRANSACTIONS)


def labels(loan_applications: DataFrame, repayments: DataFrame) -> DataFrame:
    """Applications joined to their observed outcome (``gold.labels``).

    Only applications with a repayment outcome appear (inner join on ``application_id``);
    ``defaulted`` is 1 when the loan defaulted and 0 when it was repaid,
    ``application_timestamp`` is ``applied_at``. Returns :data:`GOLD_LABELS_SCHEMA`.
    """
    _require_columns(
        loan_applications,
        ("application_id", "customer_id", "applied_at", "loan_amount", "term_months", "purpose"),
        "silver.loan_applications",
    )
    _require_columns(
        repayments, ("application_id", "observed_at", "defaulted"), "silver.repayments"
    )
    outcomes = repayments.select(
        F.col("application_id").alias("_application_id"),
        "observed_at",
        # Null stays null here, and fails in _conform with a message naming the column.
        F.when(F.col("defaulted"), F.lit(1)).when(~F.col("defaulted"), F.lit(0)).alias("defaulted"),
    )
    out = loan_applications.join(
        outcomes, F.col("application_id") == F.col("_application_id"), "inner"
    ).select(
        "application_id",
        "customer_id",
        F.col("applied_at").alias("application_timestamp"),
        "loan_amount",
        "term_months",
        "purpose",
        "defaulted",
        "observed_at",
    )
    return _conform(out, GOLD_LABELS_SCHEMA, GOLD_LABELS)


# --- table definitions ---------------------------------------------------------------------
_COMMON_COMMENTS = {
    "customer_id": "Customer business key (entity of the feature table).",
    "created_at": "When this row was computed by the gold build (UTC).",
}
_TRANSACTION_COMMENTS: dict[str, str] = {
    "customer_id": _COMMON_COMMENTS["customer_id"],
    "event_timestamp": (
        "Start (00:00 UTC) of the day after the aggregated day; features cover transactions "
        "strictly before it."
    ),
}
for _days in TRANSACTION_WINDOWS:
    _TRANSACTION_COMMENTS.update(
        {
            f"txn_count_{_days}d": (
                f"Number of transactions in the {_days} days before event_timestamp."
            ),
            f"txn_amount_sum_{_days}d": f"Total amount in the {_days} days before event_timestamp.",
            f"txn_amount_avg_{_days}d": (
                f"Average amount in the {_days} days before event_timestamp; null when none."
            ),
        }
    )
_TRANSACTION_COMMENTS.update(
    {
        "txn_amount_max_30d": "Largest amount in the 30 days before event_timestamp.",
        "gambling_share_30d": "Share of the 30-day amount spent in GAMBLING merchants (0..1).",
        "online_share_30d": "Share of the 30-day transactions made ONLINE (0..1).",
        "created_at": _COMMON_COMMENTS["created_at"],
    }
)


@dataclass(frozen=True)
class GoldTable:
    """How one gold table is defined, keyed and documented."""

    name: str
    schema: StructType
    keys: tuple[str, ...]
    inputs: tuple[str, ...]
    comment: str
    column_comments: Mapping[str, str]

    @property
    def compared_columns(self) -> list[str]:
        """Columns whose change makes a row changed (all but ``created_at``)."""
        return [f.name for f in self.schema.fields if f.name != "created_at"]


GOLD_TABLES: tuple[GoldTable, ...] = (
    GoldTable(
        name=GOLD_CUSTOMER_PROFILE,
        schema=GOLD_CUSTOMER_PROFILE_SCHEMA,
        keys=("customer_id", "event_timestamp"),
        inputs=(SILVER_CUSTOMERS,),
        comment=(
            "Customer profile features, one row per profile version; values hold from "
            "event_timestamp on (point-in-time join key: customer_id, event_timestamp)."
        ),
        column_comments={
            "customer_id": _COMMON_COMMENTS["customer_id"],
            "event_timestamp": "updated_at of the profile version: the values hold from then on.",
            "age": "Age in whole years at event_timestamp, from birth_date; null when unknown.",
            "annual_income": "Declared annual income.",
            "employment_years": "Years in employment.",
            "credit_score": "Bureau credit score (300..850).",
            "home_ownership": "RENT, OWN or MORTGAGE.",
            "region": "Home region of the customer.",
            "created_at": _COMMON_COMMENTS["created_at"],
        },
    ),
    GoldTable(
        name=GOLD_CUSTOMER_TRANSACTIONS,
        schema=GOLD_CUSTOMER_TRANSACTIONS_SCHEMA,
        keys=("customer_id", "event_timestamp"),
        inputs=(SILVER_TRANSACTIONS, SILVER_CUSTOMERS),
        comment=(
            "Rolling 7/30/90-day transaction features per customer as of the start of each day "
            "after a day with transactions (point-in-time join key: customer_id, "
            "event_timestamp); transactions of customers not yet in silver.customers are held "
            "back until they are."
        ),
        column_comments=_TRANSACTION_COMMENTS,
    ),
    GoldTable(
        name=GOLD_LABELS,
        schema=GOLD_LABELS_SCHEMA,
        keys=("application_id",),
        inputs=(SILVER_LOAN_APPLICATIONS, SILVER_REPAYMENTS, SILVER_CUSTOMERS),
        comment=(
            "Loan applications whose repayment outcome has been observed, with the label; "
            "applications of customers not yet in silver.customers are held back until they are."
        ),
        column_comments={
            "application_id": "Loan application business key.",
            "customer_id": "Customer who applied.",
            "application_timestamp": "When the application was made (applied_at).",
            "loan_amount": "Requested loan amount.",
            "term_months": "Loan term in months.",
            "purpose": "Stated purpose of the loan.",
            "defaulted": "Label: 1 the loan defaulted, 0 it was repaid.",
            "observed_at": "When the outcome was observed.",
        },
    ),
)


def with_known_references(rows: DataFrame, entity: str, referenced: DataFrame) -> DataFrame:
    """The rows of ``entity`` whose reference (:data:`lakehouse.medallion.contracts.REFERENCES`)
    is among the ``referenced`` silver rows: orphans are held back.

    Why held, not quarantined: an orphan is a valid record whose customer has not arrived yet.
    The entities are built side by side, so a transaction's batch may be checked before the
    customer's batch of the same drop is written, and feeds deliver profiles late (as the
    generator delivers events late); a quarantine rule would then reject good rows depending on
    timing, and a quarantined row never comes back. Kept in silver (every row accounted for)
    and left out of gold, it joins the features and labels at the first gold build after its
    customer arrives, since ``silver.customers`` is an input of the tables that hold it back.
    Expectations in Delta Live Tables are row-local, and Unity Catalog's foreign keys are
    informational, so a Databricks user expects the same: the fact is kept, the join decides.
    Each run counts the orphans (:func:`lakehouse.medallion.silver.orphan_counts`).
    """
    for (source, column), (_, key) in REFERENCES.items():
        if source == entity:
            known = referenced.select(F.col(key).alias(column)).distinct()
            return rows.join(known, column, "left_semi")
    raise ValueError(f"{entity} references no other entity")


def _compute(
    table: GoldTable, inputs: Mapping[str, DataFrame], created_at: dt.datetime
) -> DataFrame:
    if table.name == GOLD_CUSTOMER_PROFILE:
        return customer_profile_features(inputs[SILVER_CUSTOMERS], created_at)
    customers = inputs.get(SILVER_CUSTOMERS)
    if table.name == GOLD_CUSTOMER_TRANSACTIONS:
        transactions = inputs[SILVER_TRANSACTIONS]
        if customers is not None:
            transactions = with_known_references(transactions, "transactions", customers)
        return customer_transaction_features(transactions, created_at)
    if table.name == GOLD_LABELS:
        applications = inputs[SILVER_LOAN_APPLICATIONS]
        if customers is not None:
            applications = with_known_references(applications, "loan_applications", customers)
        return labels(applications, inputs[SILVER_REPAYMENTS])
    raise ValueError(f"unknown gold table {table.name!r}")


# --- build ---------------------------------------------------------------------------------
def recorded_inputs(spark: SparkSession, catalog: TableCatalog, name: str) -> dict[str, int] | None:
    """The silver versions the gold table ``name`` was last built from, or None if unknown.

    Read from the ``userMetadata`` of the latest commit of ``name`` that carries them (from the
    log files, :func:`lakehouse.platform.tables.latest_user_metadata`).
    """
    metadata = latest_user_metadata(spark, catalog, name, INPUTS_METADATA_KEY)
    if metadata is None:
        return None
    try:
        inputs = json.loads(metadata)[INPUTS_METADATA_KEY]
        return {str(k): int(v) for k, v in inputs.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("unreadable input versions in the history of %s; rebuilding", name)
        return None


def _changed_rows(
    spark: SparkSession, catalog: TableCatalog, table: GoldTable, df: DataFrame
) -> DataFrame:
    """Rows of ``df`` that are new or differ from the table (``created_at`` aside)."""
    current = catalog.read(spark, table.name)
    same = [F.col(f"s.{c}").eqNullSafe(F.col(f"t.{c}")) for c in table.compared_columns]
    condition = same[0]
    for clause in same[1:]:
        condition = condition & clause
    return df.alias("s").join(current.alias("t"), condition, "left_anti")


def _write(
    spark: SparkSession,
    catalog: TableCatalog,
    table: GoldTable,
    df: DataFrame,
    versions: Mapping[str, int],
) -> int | None:
    """Write ``df`` into ``table``, recording ``versions`` in the commit.

    A new table is filled by one append; an existing one gets a MERGE of only the new or
    changed rows, and no commit at all when there are none. Returns the table's row count when
    the write tells it (a new table: the rows appended), else None.
    """
    metadata = json.dumps({INPUTS_METADATA_KEY: dict(sorted(versions.items()))})
    empty = spark.createDataFrame([], table.schema)
    with _SESSION_METADATA:  # not while another table's MERGE has the session's metadata set
        created = create_if_missing(
            spark, catalog, table.name, empty, table.comment, dict(table.column_comments)
        )
    if created:
        written = Observation(f"{table.name}:rows")
        (
            df.observe(written, F.count(F.lit(1)).alias("rows"))
            .write.format("delta")
            .mode("append")
            .option("userMetadata", metadata)
            .save(catalog.path(table.name))
        )
        rows = int(written.get["rows"])
        log.info("%s: created, %d rows", table.name, rows)
        return rows
    changes = _changed_rows(spark, catalog, table, df).persist()
    try:
        if changes.isEmpty():
            log.info("%s: no changed rows, nothing written", table.name)
            return None
        values = [c for c in table.compared_columns if c not in table.keys]
        update_condition = "NOT (" + " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in values) + ")"
        # A MERGE takes its commit's userMetadata from the session only.
        with _SESSION_METADATA:
            previous = spark.conf.get(_USER_METADATA_CONF, None)
            spark.conf.set(_USER_METADATA_CONF, metadata)
            try:
                metrics = merge_upsert(
                    spark,
                    catalog,
                    table.name,
                    changes,
                    list(table.keys),
                    update_condition,
                    read_history=False,
                )
            finally:
                if previous is None:
                    spark.conf.unset(_USER_METADATA_CONF)
                else:
                    spark.conf.set(_USER_METADATA_CONF, previous)
    finally:
        changes.unpersist()
    log.info(
        "%s: %d inserted, %d updated",
        table.name,
        metrics.get("numTargetRowsInserted", 0),
        metrics.get("numTargetRowsUpdated", 0),
    )
    return None


def build_gold(
    spark: SparkSession,
    catalog: TableCatalog,
    created_at: dt.datetime | None = None,
    parallel: bool = False,
) -> dict[str, int]:
    """Build the gold feature tables and labels from silver, idempotently.

    For each gold table: when the Delta versions of its silver inputs equal those recorded at
    its last build, nothing is read or written. Otherwise the table is recomputed from the
    inputs at their current versions: a new table is filled by one append; an existing one gets
    a MERGE on the table's key of only the new or changed rows (``created_at`` aside), in one
    commit that records the input versions, and nothing at all when no row changed.

    Args:
        spark: the session.
        catalog: where silver is read and gold is written.
        created_at: the ``created_at`` of new and changed rows; defaults to now (UTC).
        parallel: build the tables side by side, each on its own thread of the session.

    Returns:
        The row count of each gold table, by table name.

    Raises:
        ValueError: a silver input table does not exist.
    """
    created_at = created_at or dt.datetime.now(dt.UTC)
    needed = sorted({name for table in GOLD_TABLES for name in table.inputs})
    # From the log files: no Spark job per input (DESCRIBE HISTORY runs one); -1: no table.
    versions = {name: delta_version(spark, catalog, name) for name in needed}
    missing = [name for name, version in versions.items() if version < 0]
    if missing:
        raise ValueError(
            f"silver table(s) {', '.join(missing)} not found under {catalog.root}: "
            "build silver before gold"
        )

    def build(table: GoldTable) -> int:
        return build_gold_table(
            spark, catalog, table, created_at, {name: versions[name] for name in table.inputs}
        )

    if parallel:
        with ThreadPoolExecutor(len(GOLD_TABLES), thread_name_prefix="lakehouse-gold") as pool:
            rows = list(pool.map(build, GOLD_TABLES))
    else:
        rows = [build(table) for table in GOLD_TABLES]
    return {table.name: n for table, n in zip(GOLD_TABLES, rows, strict=True)}


def build_gold_table(
    spark: SparkSession,
    catalog: TableCatalog,
    table: GoldTable,
    created_at: dt.datetime,
    versions: Mapping[str, int],
) -> int:
    """Build one gold table from its silver inputs at ``versions``; return its row count.

    Skipped (nothing read or written) when ``versions`` are those recorded at its last build.
    """
    started = time.perf_counter()
    rows: int | None = None
    if recorded_inputs(spark, catalog, table.name) == versions:
        log.info("%s: silver inputs unchanged %s, skipped", table.name, dict(versions))
    else:
        inputs = {name: catalog.read(spark, name, version=v) for name, v in versions.items()}
        rows = _write(spark, catalog, table, _compute(table, inputs, created_at), versions)
    if rows is None:
        rows = catalog.read(spark, table.name).count()
    log.info("%s: %d rows (%.1fs)", table.name, rows, time.perf_counter() - started)
    return rows
