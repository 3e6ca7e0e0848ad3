"""Schemas of every layer, as module constants.

The raw contract (what lands in ``landing/<entity>/``) is a list of field names per entity:
bronze keeps every raw value as a string, so nothing is lost to a type mismatch; silver types
them. Silver and gold schemas are :class:`StructType` constants that the transforms produce and
the tests assert.
"""

from __future__ import annotations

from pyspark.sql.types import (
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# --- Landing: raw daily drops -------------------------------------------------------------
# landing/customers/customers_<YYYY-MM-DD>.json           JSON lines
# landing/transactions/transactions_<YYYY-MM-DD>.csv      CSV with a header line
# landing/loan_applications/loan_applications_<YYYY-MM-DD>.json   JSON lines
# landing/repayments/repayments_<YYYY-MM-DD>.json         JSON lines
# Timestamps are ISO-8601 strings in UTC ("2026-01-05T13:45:10Z"), dates "YYYY-MM-DD".

LANDING_FORMATS: dict[str, str] = {
    "customers": "json",
    "transactions": "csv",
    "loan_applications": "json",
    "repayments": "json",
}

#: Seconds in a day: the generator's event clock and gold's day numbers.
SECONDS_PER_DAY = 86_400

# --- Domain values -------------------------------------------------------------------------
# The vocabulary of the raw world: what the generator draws from, what silver's expectations
# accept and what gold's features single out.

HOME_OWNERSHIP: tuple[str, ...] = ("RENT", "OWN", "MORTGAGE")
REGIONS: tuple[str, ...] = ("NORTH", "SOUTH", "EAST", "WEST", "CENTRAL")
#: The merchant category whose share of spending is a feature (gold) and a default risk
#: (generator).
GAMBLING = "GAMBLING"
MERCHANT_CATEGORIES: tuple[str, ...] = (
    "GROCERY",
    "RESTAURANTS",
    "FUEL",
    "UTILITIES",
    "HEALTH",
    "ENTERTAINMENT",
    "ELECTRONICS",
    "TRAVEL",
    "CASH",
    GAMBLING,
)
#: The channel whose share of transactions is a feature.
ONLINE = "ONLINE"
CHANNELS: tuple[str, ...] = ("POS", ONLINE, "ATM")
#: Loan terms in months.
TERMS: tuple[int, ...] = (12, 24, 36, 48, 60)
PURPOSES: tuple[str, ...] = ("CAR", "HOME_IMPROVEMENT", "DEBT_CONSOLIDATION", "EDUCATION", "OTHER")

RAW_FIELDS: dict[str, tuple[str, ...]] = {
    # One line per profile version: a customer reappears when the profile changes.
    "customers": (
        "customer_id",  # "C000001"
        "name",
        "birth_date",  # YYYY-MM-DD
        "annual_income",  # number
        "employment_years",  # number
        "home_ownership",  # HOME_OWNERSHIP
        "region",  # REGIONS
        "credit_score",  # bureau score 300..850
        "updated_at",  # timestamp of this profile version
    ),
    "transactions": (
        "transaction_id",  # "T0000000001"
        "customer_id",
        "amount",  # positive number
        "merchant_category",  # MERCHANT_CATEGORIES
        "channel",  # CHANNELS
        "transaction_ts",
    ),
    "loan_applications": (
        "application_id",  # "A00000001"
        "customer_id",
        "applied_at",
        "loan_amount",
        "term_months",  # TERMS
        "purpose",  # PURPOSES
    ),
    "repayments": (
        "application_id",
        "customer_id",
        "observed_at",  # when the outcome was observed: weeks after applied_at
        "defaulted",  # true | false
        "days_past_due",  # integer
    ),
}

#: Business key of each entity in silver (the MERGE key).
BUSINESS_KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id", "updated_at"),
    "transactions": ("transaction_id",),
    "loan_applications": ("application_id",),
    "repayments": ("application_id",),
}

#: Event-time column of each entity.
EVENT_TIME: dict[str, str] = {
    "customers": "updated_at",
    "transactions": "transaction_ts",
    "loan_applications": "applied_at",
    "repayments": "observed_at",
}

# --- Bronze ----------------------------------------------------------------------------------
# bronze.<entity>_raw: every RAW_FIELDS column as a nullable string, then the metadata below.
BRONZE_METADATA = StructType(
    [
        # The whole raw line when it did not parse, or a JSON object of the fields that are
        # not in the contract (schema drift); null when the line parsed cleanly.
        StructField("_rescued_data", StringType(), True),
        StructField("_source_file", StringType(), False),
        StructField("_ingested_at", TimestampType(), False),
    ]
)


def bronze_schema(entity: str) -> StructType:
    """The bronze schema of ``entity``: raw string columns plus metadata."""
    fields = [StructField(name, StringType(), True) for name in RAW_FIELDS[entity]]
    return StructType(fields + list(BRONZE_METADATA.fields))


# --- Silver ----------------------------------------------------------------------------------
_SILVER_META = [
    StructField("_source_file", StringType(), False),
    StructField("_ingested_at", TimestampType(), False),
]

SILVER_SCHEMAS: dict[str, StructType] = {
    "customers": StructType(
        [
            StructField("customer_id", StringType(), False),
            StructField("name", StringType(), True),
            StructField("birth_date", DateType(), True),
            StructField("annual_income", DoubleType(), True),
            StructField("employment_years", DoubleType(), True),
            StructField("home_ownership", StringType(), True),
            StructField("region", StringType(), True),
            StructField("credit_score", IntegerType(), True),
            StructField("updated_at", TimestampType(), False),
            *_SILVER_META,
        ]
    ),
    "transactions": StructType(
        [
            StructField("transaction_id", StringType(), False),
            StructField("customer_id", StringType(), False),
            StructField("amount", DoubleType(), False),
            StructField("merchant_category", StringType(), True),
            StructField("channel", StringType(), True),
            StructField("transaction_ts", TimestampType(), False),
            *_SILVER_META,
        ]
    ),
    "loan_applications": StructType(
        [
            StructField("application_id", StringType(), False),
            StructField("customer_id", StringType(), False),
            StructField("applied_at", TimestampType(), False),
            StructField("loan_amount", DoubleType(), False),
            StructField("term_months", IntegerType(), False),
            StructField("purpose", StringType(), True),
            *_SILVER_META,
        ]
    ),
    "repayments": StructType(
        [
            StructField("application_id", StringType(), False),
            StructField("customer_id", StringType(), False),
            StructField("observed_at", TimestampType(), False),
            StructField("defaulted", BooleanType(), False),
            StructField("days_past_due", IntegerType(), True),
            *_SILVER_META,
        ]
    ),
}

QUARANTINE_SCHEMA = StructType(
    [
        StructField("entity", StringType(), False),
        StructField("rule", StringType(), False),  # expectation name, or "malformed"
        StructField("reason", StringType(), False),  # human-readable
        StructField("raw_record", StringType(), False),  # JSON of the bronze row
        StructField("_source_file", StringType(), False),
        StructField("_ingested_at", TimestampType(), True),
        StructField("quarantined_at", TimestampType(), False),
        StructField("run_id", StringType(), False),
    ]
)

EXPECTATION_RESULTS_SCHEMA = StructType(
    [
        StructField("run_id", StringType(), False),
        StructField("entity", StringType(), False),
        StructField("expectation", StringType(), False),
        StructField("action", StringType(), False),  # warn | drop | fail
        StructField("passed", LongType(), False),
        StructField("failed", LongType(), False),
        StructField("evaluated_at", TimestampType(), False),
    ]
)

# --- Gold ------------------------------------------------------------------------------------
# Feature tables are keyed by (customer_id, event_timestamp): the values hold from
# event_timestamp on, so a point-in-time join picks the latest row at or before a given time.
GOLD_CUSTOMER_PROFILE_SCHEMA = StructType(
    [
        StructField("customer_id", StringType(), False),
        StructField("event_timestamp", TimestampType(), False),
        StructField("age", IntegerType(), True),
        StructField("annual_income", DoubleType(), True),
        StructField("employment_years", DoubleType(), True),
        StructField("credit_score", IntegerType(), True),
        StructField("home_ownership", StringType(), True),
        StructField("region", StringType(), True),
        StructField("created_at", TimestampType(), False),
    ]
)

#: Rolling windows of the transaction features, in days.
TRANSACTION_WINDOWS: tuple[int, ...] = (7, 30, 90)

GOLD_CUSTOMER_TRANSACTIONS_SCHEMA = StructType(
    [
        StructField("customer_id", StringType(), False),
        # Start of the day after the aggregated day: features cover transactions before it.
        StructField("event_timestamp", TimestampType(), False),
        *[
            field
            for days in TRANSACTION_WINDOWS
            for field in (
                StructField(f"txn_count_{days}d", LongType(), False),
                StructField(f"txn_amount_sum_{days}d", DoubleType(), False),
                StructField(f"txn_amount_avg_{days}d", DoubleType(), True),
            )
        ],
        StructField("txn_amount_max_30d", DoubleType(), True),
        StructField("gambling_share_30d", DoubleType(), True),
        StructField("online_share_30d", DoubleType(), True),
        StructField("created_at", TimestampType(), False),
    ]
)

GOLD_LABELS_SCHEMA = StructType(
    [
        StructField("application_id", StringType(), False),
        StructField("customer_id", StringType(), False),
        StructField("application_timestamp", TimestampType(), False),
        StructField("loan_amount", DoubleType(), False),
        StructField("term_months", IntegerType(), False),
        StructField("purpose", StringType(), True),
        StructField("defaulted", IntegerType(), False),  # 1 defaulted, 0 repaid
        StructField("observed_at", TimestampType(), False),
    ]
)
