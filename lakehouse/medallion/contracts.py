"""Schemas of every layer, as module constants.

The raw contract (what lands in ``landing/<entity>/``) is a list of field names per entity:
bronze keeps every raw value as a string, so nothing is lost to a type mismatch; silver types
them. Each raw field also has a :class:`FieldContract` (:data:`FIELD_CONTRACTS`): its type and
domain (required or not, numeric range, plausible time span, identifier length and pattern),
which silver turns into one expectation per field, so that no value a later stage cannot
process gets past silver. Silver and gold schemas are :class:`StructType` constants that the
transforms produce and the tests assert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pyspark.sql.types import (
    BooleanType,
    DateType,
    DecimalType,
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

# --- Field contracts: type and domain of every raw field -------------------------------------
# Silver checks each raw field against its contract (one expectation per field, named
# ``valid_<field>``); a row that breaks one goes to silver.quarantine with the rule's name and
# the raw record. The bounds are those of the stages after silver, so that no row silver
# accepts can make a later stage fail.

#: Amounts are summed as decimals in gold: exact, so a recomputation gives bit-identical
#: features whatever the order Spark adds them in.
AMOUNT_DECIMAL = DecimalType(24, 6)
#: Money values must stay below this: the integer part AMOUNT_DECIMAL holds (10**18), so that
#: gold's cast never overflows. Sums of such values keep 10 more digits (Spark widens a sum's
#: precision by 10), far more than any window adds up.
AMOUNT_LIMIT = float(10 ** (AMOUNT_DECIMAL.precision - AMOUNT_DECIMAL.scale))
#: Event times before this are a unit or default-value error (a zero epoch, year 1).
EVENT_TIME_FLOOR = datetime(2000, 1, 1, tzinfo=UTC)
#: How far ahead of the clock an event time may be (clock skew between source systems).
FUTURE_TOLERANCE = timedelta(days=1)
#: Birth dates before this are implausible; after today, impossible.
BIRTH_DATE_FLOOR = date(1900, 1, 1)
#: Longest identifier, free text and category value accepted.
ID_MAX_LENGTH = 64
TEXT_MAX_LENGTH = 200
CATEGORY_MAX_LENGTH = 64

#: Identifiers: a letter or digit, then letters, digits and ``_ . : -`` (Java and Python regex).
ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{ID_MAX_LENGTH - 1}}}$"
#: Text that is not plain text: a control character, or U+FFFD (what a byte sequence that is
#: not UTF-8 decodes to).
NOT_TEXT_PATTERN = r"[\p{Cntrl}\x{FFFD}]"
#: A JSON object or array where a scalar is expected: bronze keeps a nested value as its JSON.
NESTED_PATTERN = r"^[\[{]"
#: The raw text a value of each kind must match to be typed at all (anything else is a wrong
#: type, even where Spark's cast would read it: ``NaN``, ``Infinity``, ``1d``, ``0x1p3``, a
#: timestamp cut short such as ``2026-01-05T1``).
RAW_PATTERNS: dict[str, str] = {
    "number": r"^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]{1,3})?$",
    "integer": r"^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]{1,3})?$",
    "date": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    "timestamp": (
        r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
        r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,9})?)?)?"
        r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$"
    ),
}

#: The kinds of raw fields; the first three are strings in silver.
KINDS: tuple[str, ...] = (
    "id",
    "text",
    "category",
    "number",
    "integer",
    "boolean",
    "date",
    "timestamp",
)


@dataclass(frozen=True)
class FieldContract:
    """The type and domain of one raw field.

    Attributes:
        name: the raw field.
        kind: one of :data:`KINDS`: ``id`` (:data:`ID_PATTERN`), ``text`` and ``category``
            (plain text, not nested, at most ``max_length``), ``number`` (finite, within the
            bounds), ``integer`` (whole, within the bounds or one of ``values``), ``boolean``,
            ``date`` (from ``minimum`` to today) and ``timestamp`` (from
            :data:`EVENT_TIME_FLOOR` to :data:`FUTURE_TOLERANCE` after now).
        required: a missing (absent, null or blank) value breaks the contract.
        minimum: lowest number, integer or date accepted.
        maximum: highest number or integer accepted.
        exclusive_minimum: ``minimum`` itself is not accepted.
        exclusive_maximum: ``maximum`` itself is not accepted.
        values: for an ``integer`` field, the only values accepted.
        max_length: longest ``text`` or ``category`` value (ids: :data:`ID_MAX_LENGTH`).
    """

    name: str
    kind: str
    required: bool = True
    minimum: float | date | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    values: tuple[int, ...] = ()
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: kind must be one of {list(KINDS)}")
        if self.kind in ("text", "category") and self.max_length is None:
            raise ValueError(f"field {self.name!r}: a {self.kind} field needs a max_length")

    @property
    def domain(self) -> str:
        """What the field accepts, for people (the reason of a quarantined row)."""
        if self.kind == "id":
            text = f"an identifier of at most {ID_MAX_LENGTH} letters, digits or _ . : -"
        elif self.kind in ("text", "category"):
            text = f"plain text (not nested, valid UTF-8) of at most {self.max_length} characters"
        elif self.kind in ("number", "integer"):
            noun = "a finite number" if self.kind == "number" else "a whole number"
            if self.values:
                text = f"{noun}, one of {', '.join(map(str, self.values))}"
            else:
                low = "<" if self.exclusive_minimum else "<="
                high = "<" if self.exclusive_maximum else "<="
                text = f"{noun}, {self.minimum:g} {low} {self.name} {high} {self.maximum:g}"
        elif self.kind == "boolean":
            text = "true or false"
        elif self.kind == "date":
            text = f"a date YYYY-MM-DD from {self.minimum} to today"
        else:
            hours = int(FUTURE_TOLERANCE.total_seconds() // 3600)
            text = (
                f"an ISO-8601 timestamp from {EVENT_TIME_FLOOR:%Y-%m-%d} to {hours} hours after now"
            )
        return f"{self.name} must be {text}" + ("" if self.required else " (or absent)")


def _id(name: str) -> FieldContract:
    return FieldContract(name, "id")


def _category(name: str) -> FieldContract:
    return FieldContract(name, "category", max_length=CATEGORY_MAX_LENGTH)


def _money(name: str, *, positive: bool) -> FieldContract:
    return FieldContract(
        name,
        "number",
        minimum=0.0,
        maximum=AMOUNT_LIMIT,
        exclusive_minimum=positive,
        exclusive_maximum=True,
    )


def _event_time(name: str) -> FieldContract:
    return FieldContract(name, "timestamp")


#: The contract of every raw field, in :data:`RAW_FIELDS` order.
FIELD_CONTRACTS: dict[str, tuple[FieldContract, ...]] = {
    "customers": (
        _id("customer_id"),
        # Not used by any later stage: a profile without a name is still a profile.
        FieldContract("name", "text", required=False, max_length=TEXT_MAX_LENGTH),
        FieldContract("birth_date", "date", minimum=BIRTH_DATE_FLOOR),
        _money("annual_income", positive=False),
        FieldContract("employment_years", "number", minimum=0.0, maximum=80.0),
        _category("home_ownership"),
        _category("region"),
        FieldContract("credit_score", "integer", minimum=300, maximum=850),
        _event_time("updated_at"),
    ),
    "transactions": (
        _id("transaction_id"),
        _id("customer_id"),
        _money("amount", positive=True),
        _category("merchant_category"),
        _category("channel"),
        _event_time("transaction_ts"),
    ),
    "loan_applications": (
        _id("application_id"),
        _id("customer_id"),
        _event_time("applied_at"),
        _money("loan_amount", positive=True),
        FieldContract("term_months", "integer", values=TERMS),
        _category("purpose"),
    ),
    "repayments": (
        _id("application_id"),
        _id("customer_id"),
        _event_time("observed_at"),
        FieldContract("defaulted", "boolean"),
        # Overdue by more than ten years is not a loan of this book (terms end after five).
        FieldContract("days_past_due", "integer", minimum=0, maximum=3650),
    ),
}


def field_contract(entity: str, name: str) -> FieldContract:
    """The contract of raw field ``name`` of ``entity``."""
    for contract in FIELD_CONTRACTS[entity]:
        if contract.name == name:
            return contract
    raise KeyError(f"{entity} has no raw field {name!r}")


#: References between entities: (entity, column) -> (referenced entity, its column). A row
#: whose reference is unknown (an orphan) stays in silver and is held out of gold until the
#: referenced record arrives (see :mod:`lakehouse.medallion.gold`).
REFERENCES: dict[tuple[str, str], tuple[str, str]] = {
    ("transactions", "customer_id"): ("customers", "customer_id"),
    ("loan_applications", "customer_id"): ("customers", "customer_id"),
    ("repayments", "application_id"): ("loan_applications", "application_id"),
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
