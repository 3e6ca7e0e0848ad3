"""The champion's baseline: its own training rows, rebuilt from the Delta versions its run read.

A monitor created with ``--baseline champion`` compares every window with what the champion
learned from. Its training run logged the Delta version of every table it read
(``table_versions``); the feature store rebuilds the point-in-time training frame at exactly
those versions, the run's time split keeps the rows it was fitted on, and the champion scores
them, so the baseline carries the same columns as the monitored predictions (the model's
inputs, ``score``, ``defaulted``, ``applied_at``, ``model_version``). The table also names the
run: it is rebuilt only when the champion moves to another run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse.monitoring.definition import MonitorError
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import overwrite

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: ``--baseline champion``: the baseline is the champion's training set.
CHAMPION_BASELINE = "champion"
#: Suffix of the baseline table of a monitored table (``<table>_baseline``).
BASELINE_SUFFIX = "_baseline"


@dataclass(frozen=True)
class BaselineReport:
    """What :func:`build_champion_baseline` did."""

    table_name: str
    model_version: int
    run_id: str
    rows: int
    rebuilt: bool

    def summary(self) -> str:
        """One line for the console."""
        what = "rebuilt" if self.rebuilt else "already current"
        return (
            f"{self.table_name}: training rows of champion version {self.model_version} "
            f"(run {self.run_id}), {self.rows} rows, {what}"
        )


def baseline_table_name(table_name: str) -> str:
    """The champion baseline's table of the monitored ``table_name``."""
    return f"{table_name}{BASELINE_SUFFIX}"


def champion_run(settings: Settings) -> tuple[int, str]:
    """The champion's (version, run id); :class:`MonitorError` without a champion."""
    from lakehouse.models.registry import ModelRegistry, champion_version

    version = champion_version(settings)
    if version is None:
        raise MonitorError(
            f"model {settings.model_name!r} has no champion: train one before using "
            "--baseline champion"
        )
    run_id = ModelRegistry.of(settings).require_version(version).run_id
    if not run_id:
        raise MonitorError(f"champion version {version} has no MLflow run")
    return version, run_id


def _current_run(spark: SparkSession, catalog: TableCatalog, table_name: str) -> str | None:
    if not catalog.exists(spark, table_name):
        return None
    row = catalog.read(spark, table_name).select("run_id").limit(1).first()
    return row["run_id"] if row else None


def champion_training_frame(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, version: int, run_id: str
) -> pd.DataFrame:
    """The rows the champion was fitted on, with its score of each and the monitored names."""
    from lakehouse.features.store import build_training_set
    from lakehouse.models.evaluation import predict_default_probability
    from lakehouse.models.registry import ModelRegistry
    from lakehouse.models.training import (
        model_columns,
        prepare_inputs,
        run_inputs,
        split_columns,
        time_split,
    )

    inputs = run_inputs(run_id, settings)
    training_set = build_training_set(
        spark, settings, catalog, table_versions=inputs["table_versions"]
    )
    frame = training_set.frame
    numeric, categorical = split_columns(frame, model_columns(training_set))
    holdout = float(inputs["params"].get("holdout_fraction", 0.2))
    fitted, _ = time_split(frame, holdout)
    model = ModelRegistry.of(settings).load(version)
    scores = predict_default_probability(model, prepare_inputs(fitted, numeric, categorical))
    out = fitted.rename(columns={"application_timestamp": "applied_at"}).copy()
    out["score"] = scores
    out["model_version"] = version
    out["run_id"] = run_id
    return out


def build_champion_baseline(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, table_name: str
) -> BaselineReport:
    """Write the champion's training rows to ``table_name`` unless it holds them already."""
    version, run_id = champion_run(settings)
    if _current_run(spark, catalog, table_name) == run_id:
        rows = catalog.read(spark, table_name).count()
        return BaselineReport(table_name, version, run_id, rows, rebuilt=False)
    frame = champion_training_frame(spark, settings, catalog, version, run_id)
    df = spark.createDataFrame(frame)
    casts = {"model_version": "int", "defaulted": "int", "applied_at": "timestamp"}
    df = df.select(
        *[
            F.col(f"`{c}`").cast(casts[c]).alias(c) if c in casts else F.col(f"`{c}`")
            for c in df.columns
        ]
    )
    overwrite(
        spark,
        catalog,
        table_name,
        df,
        comment=f"Training rows of {settings.model_name} version {version} (run {run_id}), "
        "scored by it: the baseline of its monitor",
    )
    report = BaselineReport(table_name, version, run_id, len(frame), rebuilt=True)
    log.info(report.summary())
    return report
