"""Feast definitions of Lakehouse: the customer entity, the gold sources, views and services.

Declarative only: the features are computed by the gold layer into Delta tables; this module
says where they are and how they are typed. Source locations follow the platform settings
(``LAKEHOUSE_HOME``, ``LAKEHOUSE_TABLES_URI``, ``LAKEHOUSE_PROFILE``), never a fixed path; each
source carries its table name in the :data:`~lakehouse.features.store.TABLE_TAG` tag so that
:func:`lakehouse.features.store.apply` can re-root it for other settings.

TTLs (how old a feature row may be at the event time and still count):

* profile: 365 days. A profile row holds until the customer's next profile change, which can
  be months away; a year bounds the use of stale income and employment data.
* transactions: 180 days. The gold layer writes a row whenever one of a customer's windows
  changes (a day with transactions, or the day one leaves a 7, 30 or 90-day window), so a row
  is exact until the customer's next row, and the last one (all windows empty) holds after
  that. 180 days bounds how long a customer with no activity keeps those zero counts.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, ValueType
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.table_format import DeltaFormat
from feast.types import Float64, Int32, Int64, String

from lakehouse.features.store import ENTITY_KEY, FEATURE_SERVICE, TABLE_TAG
from lakehouse.medallion.contracts import TRANSACTION_WINDOWS
from lakehouse.platform.catalog import (
    GOLD_CUSTOMER_PROFILE,
    GOLD_CUSTOMER_TRANSACTIONS,
    TableCatalog,
)
from lakehouse.platform.settings import load_settings

PROFILE_TTL = timedelta(days=365)
TRANSACTIONS_TTL = timedelta(days=180)

_catalog = TableCatalog(load_settings().tables_root)

customer = Entity(
    name="customer",
    join_keys=[ENTITY_KEY],
    value_type=ValueType.STRING,
    description="A bank customer, keyed by customer_id (for example C000001).",
)

customer_profile_source = SparkSource(
    name="customer_profile_source",
    path=_catalog.path(GOLD_CUSTOMER_PROFILE),
    table_format=DeltaFormat(),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_at",
    description="Customer profile versions (gold.customer_profile_features).",
    tags={TABLE_TAG: GOLD_CUSTOMER_PROFILE},
)

customer_transactions_source = SparkSource(
    name="customer_transactions_source",
    path=_catalog.path(GOLD_CUSTOMER_TRANSACTIONS),
    table_format=DeltaFormat(),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_at",
    description="Daily rolling transaction aggregates (gold.customer_transaction_features).",
    tags={TABLE_TAG: GOLD_CUSTOMER_TRANSACTIONS},
)

CUSTOMER_PROFILE_FIELDS: list[Field] = [
    Field(name="age", dtype=Int32, description="Age in years at the profile version"),
    Field(name="annual_income", dtype=Float64),
    Field(name="employment_years", dtype=Float64),
    Field(name="credit_score", dtype=Int32, description="Bureau score 300..850"),
    Field(name="home_ownership", dtype=String, description="RENT | OWN | MORTGAGE"),
    Field(name="region", dtype=String),
]

CUSTOMER_TRANSACTIONS_FIELDS: list[Field] = [
    *[
        field
        for days in TRANSACTION_WINDOWS
        for field in (
            Field(name=f"txn_count_{days}d", dtype=Int64),
            Field(name=f"txn_amount_sum_{days}d", dtype=Float64),
            Field(name=f"txn_amount_avg_{days}d", dtype=Float64),
        )
    ],
    Field(name="txn_amount_max_30d", dtype=Float64),
    Field(name="gambling_share_30d", dtype=Float64),
    Field(name="online_share_30d", dtype=Float64),
]

customer_profile_fv = FeatureView(
    name="customer_profile_fv",
    entities=[customer],
    ttl=PROFILE_TTL,
    schema=CUSTOMER_PROFILE_FIELDS,
    source=customer_profile_source,
    online=True,
    description="Customer profile as of each profile change.",
    tags={TABLE_TAG: GOLD_CUSTOMER_PROFILE},
)

customer_transactions_fv = FeatureView(
    name="customer_transactions_fv",
    entities=[customer],
    ttl=TRANSACTIONS_TTL,
    schema=CUSTOMER_TRANSACTIONS_FIELDS,
    source=customer_transactions_source,
    online=True,
    description="Rolling 7/30/90-day transaction aggregates, stamped daily.",
    tags={TABLE_TAG: GOLD_CUSTOMER_TRANSACTIONS},
)

credit_risk_v1 = FeatureService(
    name=FEATURE_SERVICE,
    features=[customer_profile_fv, customer_transactions_fv],
    description="Every feature the credit risk model uses.",
)
