"""Profile, model-quality and drift statistics of a monitored table, computed in Spark.

Every statistic starts from one compact, exact form of the data: the *value counts* of each
unit (a window of one granularity, for one model id and one slice) and column, that is the
rows ``(unit, column_name, value, count)``. From them Spark computes

* the profile: counts, nulls, zeros, NaNs, distinct values, min, max, mean, standard deviation
  (sample, ``ddof=1``), exact quantiles (Spark's ``percentile``, linear interpolation as
  numpy's default) and the most frequent items of categorical columns;
* drift between two units: the Kolmogorov-Smirnov statistic and the Wasserstein distance from
  the two empirical CDFs (exact, as ``scipy.stats.ks_2samp`` and
  ``scipy.stats.wasserstein_distance``); the population stability index and Jensen-Shannon
  distance (base 2, as ``scipy.spatial.distance.jensenshannon``) of numeric columns over ten bins
  cut at the reference's deciles; chi-squared (the 2 x k contingency test without continuity
  correction, as ``scipy.stats.chi2_contingency(..., correction=False)``), total variation,
  L-infinity and Jensen-Shannon distances of categorical columns over their categories.

Model quality comes from the rows themselves: ROC AUC (ties count a half, as scikit-learn's),
average precision (scikit-learn's ``average_precision_score``), log loss (probabilities clipped
to machine epsilon), Brier score, and at the 0.5 threshold accuracy, precision, recall and F1;
the expected calibration error over ten equal-width bins (``sklearn.calibration.
calibration_curve``'s bins, weighted by their counts).

Only two figures leave Spark to be finished on the driver, from the few rows of results: the
p-values, through scipy's distributions (the KS test's asymptotic one, ``method="asymp"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DecimalType,
    DoubleType,
    LongType,
    NumericType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)
from pyspark.sql.window import Window

from lakehouse.monitoring.definition import MONDAY_EPOCH, Granularity, MonitorError, MonitorInfo

#: The ``column_name`` of the rows about the table as a whole (as Databricks').
TABLE_COLUMN = ":table"
INPUT, BASELINE = "INPUT", "BASELINE"
CONSECUTIVE = "CONSECUTIVE"
#: Quantile levels of the ``quantiles`` array; deciles (0.1 .. 0.9) cut the drift bins.
QUANTILES: tuple[float, ...] = (
    0.0, 0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 0.99, 1.0,
)  # fmt: skip
DECILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FREQUENT_ITEMS = 10
#: Share given to an empty bin in the population stability index (as Evidently's).
PSI_EPSILON = 1e-4
#: Probability at or above which a classification counts as positive.
DECISION_THRESHOLD = 0.5
CALIBRATION_BINS = 10

UNIT_COLUMNS: tuple[str, ...] = (
    "granularity",
    "window_start",
    "window_end",
    "model_id",
    "slice_key",
    "slice_value",
)

_WINDOW = StructType(
    [StructField("start", TimestampType(), True), StructField("end", TimestampType(), True)]
)
_TEST = StructType(
    [StructField("statistic", DoubleType(), True), StructField("pvalue", DoubleType(), True)]
)

#: Columns of ``<table>_profile_metrics``; names after Databricks' where it has one.
PROFILE_SCHEMA = StructType(
    [
        StructField("window", _WINDOW, True),
        StructField("granularity", StringType(), True),
        StructField("model_id", StringType(), True),
        StructField("slice_key", StringType(), True),
        StructField("slice_value", StringType(), True),
        StructField("column_name", StringType(), False),
        StructField("data_type", StringType(), True),
        StructField("log_type", StringType(), False),  # INPUT | BASELINE
        StructField("logging_table_commit_version", LongType(), True),
        StructField("monitor_version", LongType(), False),
        # What the window's rows were when computed (count and content digest): a refresh
        # recomputes a window only when this changes.
        StructField("input_fingerprint", StringType(), True),
        StructField("count", LongType(), True),
        StructField("num_nulls", LongType(), True),
        StructField("num_zeros", LongType(), True),
        StructField("num_nan", LongType(), True),
        StructField("distinct_count", LongType(), True),
        StructField("percent_null", DoubleType(), True),
        StructField("percent_zeros", DoubleType(), True),
        StructField("percent_distinct", DoubleType(), True),
        StructField("min", DoubleType(), True),
        StructField("max", DoubleType(), True),
        StructField("avg", DoubleType(), True),
        StructField("stddev", DoubleType(), True),
        StructField("median", DoubleType(), True),
        StructField("quantiles", ArrayType(DoubleType()), True),
        StructField(
            "frequent_items",
            ArrayType(
                StructType(
                    [
                        StructField("item", StringType(), True),
                        StructField("count", LongType(), True),
                    ]
                )
            ),
            True,
        ),
        # Model quality (inference monitors, on the :table rows, once labels exist).
        StructField("percent_labeled", DoubleType(), True),
        StructField("num_labeled", LongType(), True),
        StructField("roc_auc_score", DoubleType(), True),
        StructField("pr_auc_score", DoubleType(), True),
        StructField("log_loss", DoubleType(), True),
        StructField("brier_score", DoubleType(), True),
        StructField("accuracy_score", DoubleType(), True),
        StructField("precision", DoubleType(), True),
        StructField("recall", DoubleType(), True),
        StructField("f1_score", DoubleType(), True),
        StructField("calibration_error", DoubleType(), True),
        StructField(
            "confusion_matrix",
            StructType([StructField(name, LongType(), True) for name in ("tp", "fp", "tn", "fn")]),
            True,
        ),
        StructField("mean_squared_error", DoubleType(), True),
        StructField("root_mean_squared_error", DoubleType(), True),
        StructField("mean_absolute_error", DoubleType(), True),
        StructField("r2_score", DoubleType(), True),
    ]
)

#: Columns of ``<table>_drift_metrics``.
DRIFT_SCHEMA = StructType(
    [
        StructField("window", _WINDOW, True),
        StructField("window_cmp", _WINDOW, True),
        StructField("granularity", StringType(), True),
        StructField("model_id", StringType(), True),
        StructField("slice_key", StringType(), True),
        StructField("slice_value", StringType(), True),
        StructField("column_name", StringType(), False),
        StructField("data_type", StringType(), True),
        StructField("drift_type", StringType(), False),  # CONSECUTIVE | BASELINE
        StructField("logging_table_commit_version", LongType(), True),
        StructField("monitor_version", LongType(), False),
        StructField("count_delta", DoubleType(), True),
        StructField("avg_delta", DoubleType(), True),
        StructField("percent_null_delta", DoubleType(), True),
        StructField("ks_test", _TEST, True),
        StructField("wasserstein_distance", DoubleType(), True),
        StructField("population_stability_index", DoubleType(), True),
        StructField("js_distance", DoubleType(), True),
        StructField("chi_squared_test", _TEST, True),
        StructField("tv_distance", DoubleType(), True),
        StructField("l_infinity_distance", DoubleType(), True),
    ]
)

PROFILE_KEYS: tuple[str, ...] = (
    "granularity",
    "model_id",
    "slice_key",
    "slice_value",
    "column_name",
    "log_type",
)
DRIFT_KEYS: tuple[str, ...] = (
    "granularity",
    "model_id",
    "slice_key",
    "slice_value",
    "column_name",
    "drift_type",
)


@dataclass(frozen=True)
class ColumnSpec:
    """A profiled column: ``numeric`` (statistics on its values as doubles) or
    ``categorical`` (on its values as strings)."""

    name: str
    kind: str
    data_type: str


def profiled_columns(info: MonitorInfo, schema: StructType) -> list[ColumnSpec]:
    """The columns of ``schema`` the monitor profiles.

    Named columns when the monitor lists them; otherwise every numeric, boolean and string
    column but the monitor's own (timestamp, model id) and string identifiers (``*_id``: every
    value distinct, nothing to learn from its distribution). The label of a classification
    monitor is categorical whatever its type.
    """
    types = {f.name: f.dataType for f in schema.fields}
    missing = [name for name in info.columns if name not in types]
    if missing:
        raise MonitorError(f"{info.table_name} has no column(s) {', '.join(missing)}")
    specs: list[ColumnSpec] = []
    own = info.own_columns()
    # A classifier's label is a class, not a quantity: its drift is a test of proportions.
    label = (
        info.inference_log.label_col
        if info.inference_log is not None
        and info.inference_log.problem_type == "PROBLEM_TYPE_CLASSIFICATION"
        else None
    )
    for name, data_type in types.items():
        if info.columns and name not in info.columns:
            continue
        if not info.columns and (
            name in own or (isinstance(data_type, StringType) and name.endswith("_id"))
        ):
            continue
        if name == label:
            specs.append(ColumnSpec(name, "categorical", data_type.simpleString()))
        elif isinstance(data_type, NumericType):
            specs.append(ColumnSpec(name, "numeric", data_type.simpleString()))
        elif isinstance(data_type, StringType | BooleanType):
            specs.append(ColumnSpec(name, "categorical", data_type.simpleString()))
        elif info.columns:
            raise MonitorError(f"column {name} is {data_type.simpleString()}: not profiled")
    return specs


# --- Windows and units -------------------------------------------------------------------------
def window_start(granularity: Granularity, seconds: Column) -> Column:
    """The start (epoch seconds) of the window of ``granularity`` holding ``seconds``."""
    length = granularity.seconds
    if granularity.unit == "week":
        assert length is not None
        return F.lit(MONDAY_EPOCH) + F.floor((seconds - F.lit(MONDAY_EPOCH)) / length) * length
    if length is not None:
        return F.floor(seconds / length) * length
    return F.unix_seconds(F.date_trunc(granularity.unit, F.timestamp_seconds(seconds)))


def window_end(granularity: Granularity, start: Column) -> Column:
    """The end (epoch seconds, exclusive) of the window starting at ``start``."""
    if granularity.seconds is not None:
        return start + granularity.seconds
    months = 12 if granularity.unit == "year" else 1
    return F.unix_seconds(
        F.add_months(F.timestamp_seconds(start).cast("date"), months).cast("timestamp")
    )


def timestamp_seconds(df: DataFrame, column: str) -> Column:
    """``column`` as whole epoch seconds (a timestamp, a date or epoch seconds already)."""
    data_type = df.schema[column].dataType
    if isinstance(data_type, NumericType):
        return F.col(column).cast("long")
    return F.unix_seconds(F.col(column).cast("timestamp"))


def row_digest(df: DataFrame) -> Column:
    """A 64-bit digest of every column of a row, as a decimal that sums without overflow."""
    return F.xxhash64(*[F.col(f"`{c}`") for c in df.columns]).cast(DecimalType(38, 0))


def fingerprint(count: int, digest: object, config: str) -> str:
    """The fingerprint of a window: the monitor's configuration, row count and content sum."""
    return f"{config}:{count}:{digest}"


def unit_frame(
    df: DataFrame,
    info: MonitorInfo,
    *,
    windows: DataFrame | None,
    baseline: bool = False,
    snapshot_start: int | None = None,
) -> DataFrame:
    """Each row of ``df`` once per unit it belongs to, with the unit's columns and key.

    Args:
        windows: ``(granularity, window_start)`` rows to keep (None: every window).
        baseline: ``df`` is the baseline: one unit per slice, no window nor model id.
        snapshot_start: the window start of a snapshot monitor's single window.
    """
    long_null = F.lit(None).cast("long")
    string_null = F.lit(None).cast("string")
    if baseline:
        unit_windows = [
            F.struct(string_null.alias("g"), long_null.alias("s"), long_null.alias("e"))
        ]
    elif info.snapshot is not None:
        stamp = F.lit(snapshot_start).cast("long")
        unit_windows = [F.struct(string_null.alias("g"), stamp.alias("s"), stamp.alias("e"))]
    else:
        assert info.timestamp_col is not None
        seconds = timestamp_seconds(df, info.timestamp_col)
        unit_windows = []
        for text in info.granularities:
            granularity = Granularity.parse(text)
            start = window_start(granularity, seconds)
            unit_windows.append(
                F.struct(
                    F.lit(granularity.text).alias("g"),
                    start.cast("long").alias("s"),
                    window_end(granularity, start).cast("long").alias("e"),
                )
            )
    models = [string_null]
    if info.inference_log is not None and not baseline:
        models.append(F.col(info.inference_log.model_id_col).cast("string"))
    slices = [F.struct(string_null.alias("k"), string_null.alias("v"))]
    for expr in info.slicing_exprs:
        slices.append(F.struct(F.lit(expr).alias("k"), F.expr(expr).cast("string").alias("v")))
    exploded = (
        df.withColumn("__w", F.explode(F.array(*unit_windows)))
        .withColumn("__m", F.explode(F.array(*models)))
        .withColumn("__s", F.explode(F.array(*slices)))
        .withColumn("granularity", F.col("__w.g"))
        .withColumn("window_start", F.col("__w.s"))
        .withColumn("window_end", F.col("__w.e"))
        .withColumn("model_id", F.col("__m"))
        .withColumn("slice_key", F.col("__s.k"))
        .withColumn("slice_value", F.col("__s.v"))
        .drop("__w", "__m", "__s")
    )
    if windows is not None:
        exploded = exploded.join(F.broadcast(windows), ["granularity", "window_start"], "left_semi")
    return exploded.withColumn("unit_key", unit_key())


def unit_key() -> Column:
    """One string naming a unit (its granularity, window, model id and slice)."""
    return F.to_json(
        F.struct(
            F.col("granularity"),
            F.col("window_start"),
            F.col("model_id"),
            F.col("slice_key"),
            F.col("slice_value"),
        )
    )


def value_counts(units: DataFrame, columns: Sequence[ColumnSpec]) -> DataFrame:
    """``(unit, column_name, num, str, cnt)``: how often each value occurs per unit and column.

    Numeric columns carry their value in ``num`` (a double), categorical ones in ``str``; a null
    has both null.
    """
    cells = [
        F.struct(
            F.lit(spec.name).alias("column_name"),
            (F.col(f"`{spec.name}`").cast("double") if spec.kind == "numeric" else F.lit(None))
            .cast("double")
            .alias("num"),
            (F.col(f"`{spec.name}`").cast("string") if spec.kind == "categorical" else F.lit(None))
            .cast("string")
            .alias("str"),
        )
        for spec in columns
    ]
    if not cells:
        raise MonitorError("the monitor profiles no column")
    melted = units.select(
        "unit_key", *UNIT_COLUMNS, F.explode(F.array(*cells)).alias("cell")
    ).select("unit_key", *UNIT_COLUMNS, "cell.column_name", "cell.num", "cell.str")
    return melted.groupBy("unit_key", *UNIT_COLUMNS, "column_name", "num", "str").agg(
        F.count(F.lit(1)).alias("cnt")
    )


# --- Profile -----------------------------------------------------------------------------------
def profile_stats(counts: DataFrame) -> DataFrame:
    """One row per unit and column: the profile statistics, from :func:`value_counts`."""
    valid = F.col("num").isNotNull() & ~F.isnan(F.col("num"))
    value = F.when(valid, F.col("num"))
    weight = F.when(valid, F.col("cnt"))
    is_null = F.col("num").isNull() & F.col("str").isNull()
    n_valid = F.sum(weight)
    mean = F.sum(value * F.col("cnt")) / n_valid
    squares = F.sum(value * value * F.col("cnt"))
    variance = F.when(
        n_valid > 1, (squares - n_valid * mean * mean) / (n_valid - F.lit(1))
    ).otherwise(F.lit(None))
    return counts.groupBy("unit_key", *UNIT_COLUMNS, "column_name").agg(
        F.sum("cnt").alias("rows"),
        F.sum(F.when(is_null, F.col("cnt")).otherwise(0)).alias("num_nulls"),
        F.sum(F.when(F.col("num") == 0, F.col("cnt")).otherwise(0)).alias("num_zeros"),
        F.sum(F.when(F.isnan(F.col("num")), F.col("cnt")).otherwise(0)).alias("num_nan"),
        F.count(F.when(~is_null, F.lit(1))).alias("distinct_count"),
        F.min(value).alias("min"),
        F.max(value).alias("max"),
        mean.alias("avg"),
        F.sqrt(F.greatest(variance, F.lit(0.0))).alias("stddev"),
        F.percentile(value, F.array(*[F.lit(q) for q in QUANTILES]), F.col("cnt")).alias(
            "quantiles"
        ),
    )


def frequent_items(counts: DataFrame, limit: int = FREQUENT_ITEMS) -> DataFrame:
    """``(unit_key, column_name, frequent_items)``: the ``limit`` most frequent categories,
    most frequent first (ties by value)."""
    ranked = counts.where(F.col("str").isNotNull()).withColumn(
        "rank",
        F.row_number().over(
            Window.partitionBy("unit_key", "column_name").orderBy(F.desc("cnt"), F.asc("str"))
        ),
    )
    return (
        ranked.where(F.col("rank") <= limit)
        .groupBy("unit_key", "column_name")
        .agg(F.sort_array(F.collect_list(F.struct("rank", "str", "cnt"))).alias("items"))
        .select(
            "unit_key",
            "column_name",
            F.transform(
                "items", lambda i: F.struct(i["str"].alias("item"), i["cnt"].alias("count"))
            ).alias("frequent_items"),
        )
    )


def table_counts(units: DataFrame, label_col: str | None) -> DataFrame:
    """``(unit, rows, labeled)`` per unit."""
    labeled = F.count(F.col(f"`{label_col}`")) if label_col else F.lit(None).cast("long")
    return units.groupBy("unit_key", *UNIT_COLUMNS).agg(
        F.count(F.lit(1)).alias("rows"), labeled.alias("labeled")
    )


# --- Model quality -----------------------------------------------------------------------------
def _inference_columns(info: MonitorInfo) -> tuple[Column, Column, Column]:
    """Probability (or regression prediction), label and predicted class columns."""
    spec = info.inference_log
    assert spec is not None and spec.label_col is not None
    label = F.col(f"`{spec.label_col}`").cast("double")
    if spec.prediction_proba_col:
        proba = F.col(f"`{spec.prediction_proba_col}`").cast("double")
        predicted = F.col(f"`{spec.prediction_col}`").cast("double")
    else:
        proba = F.col(f"`{spec.prediction_col}`").cast("double")
        predicted = F.when(proba >= DECISION_THRESHOLD, 1.0).otherwise(0.0)
    return proba, label, predicted


def classification_quality(units: DataFrame, info: MonitorInfo) -> DataFrame:
    """One row per unit with labelled predictions: the sums the quality metrics are made of.

    Returns ``unit_key, n, positives, negatives, auc_sum, ap_sum, log_loss, brier, tp, fp, tn,
    fn`` (see :func:`finish_classification`).
    """
    proba, label, predicted = _inference_columns(info)
    rows = units.select(
        "unit_key", proba.alias("p"), label.alias("y"), predicted.alias("yhat")
    ).where(F.col("p").isNotNull() & F.col("y").isNotNull() & ~F.isnan("p"))
    eps = float.fromhex("0x1.0p-52")  # float64 machine epsilon, scikit-learn's clip of log loss
    clipped = F.least(F.greatest(F.col("p"), F.lit(eps)), F.lit(1 - eps))
    loss = -(F.col("y") * F.log(clipped) + (1 - F.col("y")) * F.log(1 - clipped))
    sums = rows.groupBy("unit_key").agg(
        F.count(F.lit(1)).alias("n"),
        F.avg(loss).alias("log_loss"),
        F.avg((F.col("p") - F.col("y")) ** 2).alias("brier"),
        *[
            F.sum(F.when(condition, 1).otherwise(0)).alias(name)
            for name, condition in (
                ("tp", (F.col("yhat") == 1) & (F.col("y") == 1)),
                ("fp", (F.col("yhat") == 1) & (F.col("y") == 0)),
                ("tn", (F.col("yhat") == 0) & (F.col("y") == 0)),
                ("fn", (F.col("yhat") == 0) & (F.col("y") == 1)),
            )
        ],
    )
    by_score = rows.groupBy("unit_key", "p").agg(
        F.sum("y").alias("pos"), F.sum(1 - F.col("y")).alias("neg")
    )
    running = Window.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    ascending = running.partitionBy("unit_key").orderBy("p")
    descending = running.partitionBy("unit_key").orderBy(F.desc("p"))
    neg_below = F.sum("neg").over(ascending) - F.col("neg")
    true_pos = F.sum("pos").over(descending)
    false_pos = F.sum("neg").over(descending)
    ranked = by_score.select(
        "unit_key",
        "pos",
        "neg",
        (F.col("pos") * (neg_below + 0.5 * F.col("neg"))).alias("auc_term"),
        (F.col("pos") * true_pos / (true_pos + false_pos)).alias("ap_term"),
    )
    ranking = ranked.groupBy("unit_key").agg(
        F.sum("pos").alias("positives"),
        F.sum("neg").alias("negatives"),
        F.sum("auc_term").alias("auc_sum"),
        F.sum("ap_term").alias("ap_sum"),
    )
    return sums.join(ranking, "unit_key")


def calibration_bins(units: DataFrame, info: MonitorInfo) -> DataFrame:
    """``(unit_key, bin, n, sum_p, sum_y)`` over :data:`CALIBRATION_BINS` equal-width bins.

    A probability ``p`` goes to the bin ``i`` with ``edge_i < p <= edge_{i+1}`` (the first bin
    also holds 0), as ``calibration_curve``'s ``searchsorted`` on the inner edges.
    """
    proba, label, _ = _inference_columns(info)
    inner = [F.lit(i / CALIBRATION_BINS) for i in range(1, CALIBRATION_BINS)]
    rows = units.select("unit_key", proba.alias("p"), label.alias("y")).where(
        F.col("p").isNotNull() & F.col("y").isNotNull() & ~F.isnan("p")
    )
    binned = rows.withColumn("bin", F.size(F.filter(F.array(*inner), lambda e: e < F.col("p"))))
    return binned.groupBy("unit_key", "bin").agg(
        F.count(F.lit(1)).alias("n"), F.sum("p").alias("sum_p"), F.sum("y").alias("sum_y")
    )


def regression_quality(units: DataFrame, info: MonitorInfo) -> DataFrame:
    """``(unit_key, n, sse, sae, sum_y, sum_y2)`` per unit with labelled predictions."""
    proba, label, _ = _inference_columns(info)
    rows = units.select("unit_key", proba.alias("p"), label.alias("y")).where(
        F.col("p").isNotNull() & F.col("y").isNotNull()
    )
    return rows.groupBy("unit_key").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum((F.col("p") - F.col("y")) ** 2).alias("sse"),
        F.sum(F.abs(F.col("p") - F.col("y"))).alias("sae"),
        F.sum("y").alias("sum_y"),
        F.sum(F.col("y") * F.col("y")).alias("sum_y2"),
    )


def finish_classification(row: dict[str, float], calibration: Iterable[dict[str, float]]) -> dict:
    """The quality metrics of one unit from :func:`classification_quality`'s sums."""
    n = int(row["n"])
    positives, negatives = float(row["positives"]), float(row["negatives"])
    tp, fp, tn, fn = (int(row[k]) for k in ("tp", "fp", "tn", "fn"))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    ece = sum(abs(b["sum_y"] - b["sum_p"]) for b in calibration) / n if n else None
    return {
        "num_labeled": n,
        "roc_auc_score": (
            row["auc_sum"] / (positives * negatives) if positives and negatives else None
        ),
        "pr_auc_score": row["ap_sum"] / positives if positives else None,
        "log_loss": row["log_loss"],
        "brier_score": row["brier"],
        "accuracy_score": (tp + tn) / n if n else None,
        "precision": precision,
        "recall": recall,
        "f1_score": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "calibration_error": ece,
        "confusion_matrix": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def finish_regression(row: dict[str, float]) -> dict:
    """The quality metrics of one unit from :func:`regression_quality`'s sums."""
    n = int(row["n"])
    mse = row["sse"] / n
    total = row["sum_y2"] - row["sum_y"] ** 2 / n
    return {
        "num_labeled": n,
        "mean_squared_error": mse,
        "root_mean_squared_error": math.sqrt(mse),
        "mean_absolute_error": row["sae"] / n,
        "r2_score": 1 - row["sse"] / total if total > 0 else None,
    }


# --- Drift -------------------------------------------------------------------------------------
def _pair_sides(counts: DataFrame, pairs: DataFrame) -> DataFrame:
    """The value counts of both units of each pair: ``(pair_id, column_name, num, str, c1, c0)``
    with ``c1`` the target's count and ``c0`` the reference's."""
    target = counts.join(
        pairs.select("pair_id", F.col("target_key").alias("unit_key")), "unit_key"
    ).select("pair_id", "column_name", "num", "str", F.col("cnt").alias("c1"), F.lit(0).alias("c0"))
    reference = counts.join(
        pairs.select("pair_id", F.col("reference_key").alias("unit_key")), "unit_key"
    ).select("pair_id", "column_name", "num", "str", F.lit(0).alias("c1"), F.col("cnt").alias("c0"))
    return target.unionByName(reference)


def ecdf_distances(counts: DataFrame, pairs: DataFrame) -> DataFrame:
    """``(pair_id, column_name, ks, wasserstein, n1, n0)`` of numeric columns, exact.

    Both empirical CDFs are evaluated at every distinct value of either side: the KS statistic
    is their largest gap, the Wasserstein distance the area between them.
    """
    sides = _pair_sides(counts, pairs).where(F.col("num").isNotNull() & ~F.isnan("num"))
    values = sides.groupBy("pair_id", "column_name", F.col("num").alias("v")).agg(
        F.sum("c1").alias("c1"), F.sum("c0").alias("c0")
    )
    group = Window.partitionBy("pair_id", "column_name")
    ordered = group.orderBy("v")
    running = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    n1, n0 = F.sum("c1").over(group), F.sum("c0").over(group)
    gaps = values.select(
        "pair_id",
        "column_name",
        n1.alias("n1"),
        n0.alias("n0"),
        F.abs(F.sum("c1").over(running) / n1 - F.sum("c0").over(running) / n0).alias("d"),
        (F.lead("v").over(ordered) - F.col("v")).alias("gap"),
    ).where((F.col("n1") > 0) & (F.col("n0") > 0))
    return gaps.groupBy("pair_id", "column_name").agg(
        F.max("d").alias("ks"),
        F.sum(F.col("d") * F.col("gap")).alias("wasserstein"),
        F.first("n1").alias("n1"),
        F.first("n0").alias("n0"),
    )


def binned_distances(counts: DataFrame, pairs: DataFrame, edges: DataFrame) -> DataFrame:
    """``(pair_id, column_name, psi, js, tv, linf, chi2, bins)`` over the pair's bins.

    Numeric values are binned on ``edges`` (``pair_id, column_name, edges``: the reference's
    deciles): the bin of ``v`` is the number of edges below it. Categorical values are their
    own bins. Nulls and NaNs take no bin.
    """
    sides = _pair_sides(counts, pairs).join(edges, ["pair_id", "column_name"], "left")
    numeric_bin = F.size(F.filter(F.col("edges"), lambda e: e < F.col("num"))).cast("string")
    binned = sides.select(
        "pair_id",
        "column_name",
        F.when(F.col("str").isNotNull(), F.col("str"))
        .when(F.col("num").isNotNull() & ~F.isnan("num") & F.col("edges").isNotNull(), numeric_bin)
        .alias("bin"),
        "c1",
        "c0",
    ).where(F.col("bin").isNotNull())
    bins = binned.groupBy("pair_id", "column_name", "bin").agg(
        F.sum("c1").cast("double").alias("c1"), F.sum("c0").cast("double").alias("c0")
    )
    group = Window.partitionBy("pair_id", "column_name")
    n1, n0 = F.sum("c1").over(group), F.sum("c0").over(group)
    shares = bins.select("pair_id", "column_name", "c1", "c0", n1.alias("n1"), n0.alias("n0"))
    shares = shares.where((F.col("n1") > 0) & (F.col("n0") > 0))
    p, q = F.col("c1") / F.col("n1"), F.col("c0") / F.col("n0")
    p_eps = F.when(p == 0, PSI_EPSILON).otherwise(p)
    q_eps = F.when(q == 0, PSI_EPSILON).otherwise(q)
    m = (p + q) / 2
    total = F.col("n1") + F.col("n0")
    expected1 = F.col("n1") * (F.col("c1") + F.col("c0")) / total
    expected0 = F.col("n0") * (F.col("c1") + F.col("c0")) / total
    terms = shares.select(
        "pair_id",
        "column_name",
        ((p_eps - q_eps) * F.log(p_eps / q_eps)).alias("psi"),
        (
            F.when(p > 0, p * F.log(p / m)).otherwise(0.0)
            + F.when(q > 0, q * F.log(q / m)).otherwise(0.0)
        ).alias("js"),
        F.abs(p - q).alias("diff"),
        (
            (F.col("c1") - expected1) ** 2 / expected1 + (F.col("c0") - expected0) ** 2 / expected0
        ).alias("chi2"),
    )
    return terms.groupBy("pair_id", "column_name").agg(
        F.sum("psi").alias("psi"),
        F.sqrt(F.greatest(F.sum("js") / 2 / F.lit(math.log(2)), F.lit(0.0))).alias("js"),
        (F.sum("diff") / 2).alias("tv"),
        F.max("diff").alias("linf"),
        F.sum("chi2").alias("chi2"),
        F.count(F.lit(1)).alias("bins"),
    )


def ks_pvalue(statistic: float, n1: int, n0: int) -> float:
    """The asymptotic two-sided p-value of the two-sample KS statistic (scipy's ``asymp``)."""
    from scipy.stats import kstwo

    return float(kstwo.sf(statistic, round(n1 * n0 / (n1 + n0))))


def chi2_pvalue(statistic: float, bins: int) -> float:
    """The p-value of a 2 x ``bins`` contingency chi-squared statistic."""
    from scipy.stats import chi2

    return 1.0 if bins < 2 else float(chi2.sf(statistic, bins - 1))
