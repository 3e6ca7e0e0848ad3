"""The champion's baseline: its own training rows, rebuilt from the Delta versions its run read.

A monitor created with ``--baseline champion`` compares every window with what the champion
learned from. Its training run logged the Delta version of every table it read
(``table_versions``); the feature store rebuilds the point-in-time training frame at exactly
those versions, the run's time split keeps the rows it was fitted on, and the champion scores
them, so the baseline carries the same columns as the monitored predictions (the model's
inputs, ``score``, ``defaulted``, ``applied_at``, ``model_version``). The table also names the
run: it is rebuilt only when the champion moves to another run.

Rows whose rolling features were still warming up are left out (:func:`drop_warm_up`). A
rolling feature (``txn_amount_sum_30d``: ``<name>_<N>d``) of an application made less than
``N`` days after the first day of transaction data covers a window cut short by the start of
the data, not a customer who spent little: a champion trained early learns partly from such
rows, and a baseline of them makes every later window with full windows look drifted. The
rows kept were applied at least the longest window after the data started; when too few
would remain, the longest windows are given up one by one and their features are set to
null (unknown, not small) in the rows within their warm-up; when too few would remain even
then, every row is kept with a warning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakehouse.monitoring.definition import MonitorError
from lakehouse.platform.catalog import SILVER_TRANSACTIONS, TableCatalog
from lakehouse.platform.settings import Settings
from lakehouse.platform.tables import overwrite

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: ``--baseline champion``: the baseline is the champion's training set.
CHAMPION_BASELINE = "champion"
#: Suffix of the baseline table of a monitored table (``<table>_baseline``).
BASELINE_SUFFIX = "_baseline"
#: Fewest rows a warm-up exclusion may leave before it gives up its longest window: below a
#: few hundred rows the tests of a window against the baseline lose most of their power.
MIN_WARM_ROWS = 300
#: A rolling feature's name ends in its window: ``txn_amount_sum_30d`` covers 30 days.
_WINDOW = re.compile(r"_(\d+)d$")


@dataclass(frozen=True)
class BaselineReport:
    """What :func:`build_champion_baseline` did."""

    table_name: str
    model_version: int
    run_id: str
    rows: int
    rebuilt: bool
    #: The warm-up rule applied (``None`` when the table was already current).
    warm_up: WarmUp | None = None

    def summary(self) -> str:
        """One line for the console."""
        what = "rebuilt" if self.rebuilt else "already current"
        warm = f", {self.warm_up.summary()}" if self.warm_up is not None else ""
        return (
            f"{self.table_name}: training rows of champion version {self.model_version} "
            f"(run {self.run_id}), {self.rows} rows{warm}, {what}"
        )


@dataclass(frozen=True)
class WarmUp:
    """Which training rows :func:`drop_warm_up` left out, and which feature values it nulled.

    Attributes:
        data_start: the first day of transaction data (``None``: no data, nothing done).
        horizon_days: rows kept were applied at least this many days after ``data_start``
            (``None`` when no row was left out).
        excluded: rows left out.
        nulled: feature -> values set to null, for windows longer than ``horizon_days``.
        kept_all: every row was kept because too few would have remained.
    """

    data_start: date | None
    horizon_days: int | None = None
    excluded: int = 0
    nulled: dict[str, int] = field(default_factory=dict)
    kept_all: bool = False

    def summary(self) -> str:
        """A few words for the baseline's line."""
        if self.data_start is None:
            return "no transaction data: no warm-up rows left out"
        if self.kept_all:
            return "too few rows applied a full window after the data started: all kept"
        words = f"{self.excluded} warm-up rows left out"
        if self.horizon_days is not None:
            words += f" (applied within {self.horizon_days} days of {self.data_start:%Y-%m-%d})"
        if self.nulled:
            words += f", {', '.join(sorted(self.nulled))} null within their warm-up"
        return words


def feature_windows(columns: Iterable[str]) -> dict[str, int]:
    """The rolling features among ``columns`` and their window in days (``<name>_<N>d``)."""
    out = {}
    for column in columns:
        match = _WINDOW.search(column)
        if match and int(match.group(1)) > 0:
            out[column] = int(match.group(1))
    return out


def drop_warm_up(
    frame: pd.DataFrame,
    windows: dict[str, int],
    data_start: date | None,
    time_column: str = "application_timestamp",
    min_rows: int = MIN_WARM_ROWS,
) -> tuple[pd.DataFrame, WarmUp]:
    """``frame`` without the rows whose rolling features were still warming up.

    A row applied on day ``d`` has a full ``N``-day window when ``d - N`` is not before
    ``data_start``'s day. Rows are kept from the longest window of ``windows`` on; if fewer
    than ``min_rows`` would remain, the next longest is tried and the features of the longer
    windows are set to null in the kept rows still within their warm-up. When even the
    shortest window leaves fewer, every row is kept (and a warning logged): a small world.
    """
    if data_start is None or not windows or frame.empty:
        return frame, WarmUp(data_start)
    import pandas as pd

    start = pd.Timestamp(data_start).normalize()
    age = (pd.to_datetime(frame[time_column]).dt.normalize() - start).dt.days
    horizons = sorted(set(windows.values()), reverse=True)
    chosen = next((h for h in horizons if int((age >= h).sum()) >= min_rows), None)
    if chosen is None:
        log.warning(
            "fewer than %d training rows were applied %d days after the first day of "
            "transaction data (%s): the baseline keeps every row, warm-up included",
            min_rows,
            horizons[-1],
            f"{start:%Y-%m-%d}",
        )
        return frame, WarmUp(data_start, kept_all=True)
    kept = frame[(age >= chosen).to_numpy()].copy()
    kept_age = age[age >= chosen].to_numpy()
    nulled = {}
    for column, days in sorted(windows.items()):
        cold = kept_age < days
        if days > chosen and cold.any():
            kept[column] = kept[column].astype("float64").where(~cold)
            nulled[column] = int(cold.sum())
    kept = kept.reset_index(drop=True)
    return kept, WarmUp(data_start, chosen, len(frame) - len(kept), nulled)


def first_transaction_day(spark: SparkSession, catalog: TableCatalog) -> date | None:
    """The first day of transaction data: the day (UTC) of ``silver.transactions``' earliest."""
    if not catalog.exists(spark, SILVER_TRANSACTIONS):
        return None
    row = catalog.read(spark, SILVER_TRANSACTIONS).agg(F.to_date(F.min("transaction_ts"))).first()
    return row[0] if row else None


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
) -> tuple[pd.DataFrame, WarmUp]:
    """The rows the champion was fitted on, with its score of each and the monitored names,
    less the warm-up rows (:func:`drop_warm_up`; scored before, on the features it saw)."""
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
    fitted = fitted.assign(score=scores)
    # The whole history's first day, not each customer's first transaction: a customer who
    # joined later has a short history that is real (and scored the same way in production);
    # only windows cut short by the start of the data are an artefact. One aggregate.
    kept, warm_up = drop_warm_up(
        fitted,
        feature_windows(training_set.feature_columns),
        first_transaction_day(spark, catalog),
    )
    out = kept.rename(columns={"application_timestamp": "applied_at"}).copy()
    out["model_version"] = version
    out["run_id"] = run_id
    return out, warm_up


def build_champion_baseline(
    spark: SparkSession, settings: Settings, catalog: TableCatalog, table_name: str
) -> BaselineReport:
    """Write the champion's training rows to ``table_name`` unless it holds them already."""
    version, run_id = champion_run(settings)
    if _current_run(spark, catalog, table_name) == run_id:
        rows = catalog.read(spark, table_name).count()
        return BaselineReport(table_name, version, run_id, rows, rebuilt=False)
    frame, warm_up = champion_training_frame(spark, settings, catalog, version, run_id)
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
        "scored by it, less the rows whose rolling features were warming up: the baseline of "
        "its monitor",
    )
    report = BaselineReport(table_name, version, run_id, len(frame), True, warm_up)
    log.info(report.summary())
    return report
