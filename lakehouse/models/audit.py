"""The gate's audit table ``gold.model_gate_audit``: one Delta row per gate decision.

Kept apart from the registry and the gate because it needs Spark, which they do not.
"""

from __future__ import annotations

import json

from pyspark.sql import SparkSession
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lakehouse.models.gate import GateDecision
from lakehouse.platform.catalog import GOLD_MODEL_GATE_AUDIT, TableCatalog
from lakehouse.platform.errors import on_target
from lakehouse.platform.retry import retry_on_conflict
from lakehouse.platform.tables import create_if_missing

#: One row per gate decision.
GATE_AUDIT_SCHEMA = StructType(
    [
        StructField("decided_at", TimestampType(), False),
        StructField("model_name", StringType(), False),
        StructField("candidate_version", LongType(), False),
        StructField("candidate_run_id", StringType(), False),
        StructField("champion_version", LongType(), True),  # null when there was no champion
        StructField("metric", StringType(), False),
        StructField("candidate_value", DoubleType(), False),
        StructField("champion_value", DoubleType(), True),
        StructField("floor", DoubleType(), False),
        StructField("tolerance", DoubleType(), False),
        StructField("passed", BooleanType(), False),
        StructField("verdict", StringType(), False),  # promoted | challenger | rejected
        StructField("reason", StringType(), False),
        StructField("holdout_rows", LongType(), False),
        StructField("candidate_metrics", StringType(), False),  # JSON object
        StructField("champion_metrics", StringType(), True),  # JSON object
        StructField("table_versions", StringType(), False),  # JSON: Delta table -> version
    ]
)


def write_gate_audit(spark: SparkSession, catalog: TableCatalog, decision: GateDecision) -> None:
    """Append one row for ``decision`` to ``gold.model_gate_audit`` (created when missing)."""
    row = (
        decision.decided_at,
        decision.model_name,
        decision.candidate_version,
        decision.candidate_run_id,
        decision.champion_version,
        decision.metric,
        float(decision.candidate_value),
        None if decision.champion_value is None else float(decision.champion_value),
        float(decision.floor),
        float(decision.tolerance),
        decision.passed,
        decision.verdict,
        decision.reason,
        decision.holdout_rows,
        json.dumps(decision.candidate_metrics, sort_keys=True),
        None
        if decision.champion_metrics is None
        else json.dumps(decision.champion_metrics, sort_keys=True),
        json.dumps(decision.table_versions, sort_keys=True),
    )
    df = spark.createDataFrame([row], GATE_AUDIT_SCHEMA)
    create_if_missing(
        spark,
        catalog,
        GOLD_MODEL_GATE_AUDIT,
        df,
        comment="One row per evaluation-gate decision of the model registry",
    )

    def append() -> None:
        df.write.format("delta").mode("append").save(catalog.path(GOLD_MODEL_GATE_AUDIT))

    # A blind append conflicts only with a change of the table's metadata or protocol, and a
    # conflicting commit writes nothing: the retry appends the decision's row exactly once.
    with on_target(GOLD_MODEL_GATE_AUDIT):
        retry_on_conflict(GOLD_MODEL_GATE_AUDIT, append)
