"""Incremental refresh of a monitor's ``_profile_metrics`` and ``_drift_metrics`` tables.

A refresh reads the monitored table at its current Delta version and computes, in one
aggregation pass, a *fingerprint* of every window: the monitor's configuration digest, the
window's row count and the sum of a 64-bit digest of each of its rows. The fingerprints of the
windows last computed are kept in the profile table (``input_fingerprint`` of the ``:table``
rows). Only windows whose fingerprint changed (new rows, late labels, corrections, a changed
monitor) or that vanished are recomputed:

* profile rows of every changed window;
* drift rows of every changed window and of the window after it (whose consecutive drift
  compares with it), and of every window when the baseline changed.

Both tables are written with one MERGE each, which also deletes the rows of recomputed windows
that no longer exist. The drift table is written first and the profile table, which carries
the fingerprints, last: a refresh stopped between the two leaves the old fingerprints, so the
next refresh recomputes the same windows and MERGEs the same rows, ending where an
uninterrupted refresh ends. A refresh with nothing changed writes nothing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StructField, StructType, TimestampType

from lakehouse.monitoring.definition import (
    Granularity,
    MonitorError,
    MonitorInfo,
    load_monitor,
)
from lakehouse.monitoring.metrics import (
    BASELINE,
    CONSECUTIVE,
    DECILES,
    DRIFT_KEYS,
    DRIFT_SCHEMA,
    INPUT,
    PROFILE_KEYS,
    PROFILE_SCHEMA,
    QUANTILES,
    TABLE_COLUMN,
    ColumnSpec,
    binned_distances,
    calibration_bins,
    chi2_pvalue,
    classification_quality,
    ecdf_distances,
    fingerprint,
    finish_classification,
    finish_regression,
    frequent_items,
    ks_pvalue,
    profile_stats,
    profiled_columns,
    regression_quality,
    row_digest,
    table_counts,
    timestamp_seconds,
    unit_frame,
    value_counts,
    window_end,
    window_start,
)
from lakehouse.platform.catalog import TableCatalog
from lakehouse.platform.tables import create_if_missing, delta_version

log = logging.getLogger(__name__)

#: Set to ``after-drift-metrics`` to stop a refresh between its two writes (fault injection for
#: recovery tests and drills).
FAULT_ENV = "LAKEHOUSE_MONITOR_FAULT"
FAULT_AFTER_DRIFT = "after-drift-metrics"

#: A window: (granularity, start in epoch seconds); a snapshot's granularity is None.
WindowId = tuple[str | None, int]


class RefreshInterrupted(RuntimeError):
    """Raised at the fault point named by :data:`FAULT_ENV`."""


@dataclass(frozen=True)
class RefreshReport:
    """What one refresh recomputed and wrote."""

    table_name: str
    source_version: int
    profile_windows: list[WindowId] = field(default_factory=list)
    drift_windows: list[WindowId] = field(default_factory=list)
    removed_windows: list[WindowId] = field(default_factory=list)
    baseline_recomputed: bool = False
    profile_rows: int = 0
    drift_rows: int = 0

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        return bool(self.profile_windows or self.removed_windows or self.baseline_recomputed)

    def summary(self) -> str:
        """One paragraph for the console."""
        if not self.changed:
            return (
                f"{self.table_name} (version {self.source_version}): no window changed since the "
                "last refresh; nothing written"
            )
        counts: dict[str, int] = {}
        for granularity, _ in self.profile_windows:
            key = granularity or "snapshot"
            counts[key] = counts.get(key, 0) + 1
        per = ", ".join(f"{n} x {g}" for g, n in sorted(counts.items())) or "none"
        text = (
            f"{self.table_name} (version {self.source_version}): recomputed windows {per}; "
            f"{self.profile_rows} profile rows, {self.drift_rows} drift rows"
        )
        if self.removed_windows:
            text += f"; {len(self.removed_windows)} vanished windows removed"
        if self.baseline_recomputed:
            text += "; baseline profiled"
        return text


def refresh(spark: SparkSession, catalog: TableCatalog, table_name: str) -> RefreshReport:
    """Refresh the monitor on ``table_name`` (see the module docstring)."""
    return refresh_monitor(spark, catalog, load_monitor(spark, catalog, table_name))


# --- Fingerprints ------------------------------------------------------------------------------
def _window_fingerprints(
    source: DataFrame, info: MonitorInfo, config: str, snapshot_start: int | None
) -> dict[WindowId, tuple[str, int]]:
    """Each window of ``source``: its fingerprint and end (epoch seconds)."""
    digest = row_digest(source)
    if info.snapshot is not None:
        row = source.agg(F.count(F.lit(1)).alias("n"), F.sum(digest).alias("d")).first()
        assert row is not None and snapshot_start is not None
        if not row["n"]:
            return {}
        return {(None, snapshot_start): (fingerprint(row["n"], row["d"], config), snapshot_start)}
    assert info.timestamp_col is not None
    seconds = timestamp_seconds(source, info.timestamp_col)
    windows = []
    for text in info.granularities:
        granularity = Granularity.parse(text)
        start = window_start(granularity, seconds)
        windows.append(
            F.struct(
                F.lit(granularity.text).alias("g"),
                start.cast("long").alias("s"),
                window_end(granularity, start).cast("long").alias("e"),
            )
        )
    rows = (
        source.select(digest.alias("d"), F.explode(F.array(*windows)).alias("w"))
        .where(F.col("w.s").isNotNull())
        .groupBy("w.g", "w.s", "w.e")
        .agg(F.count(F.lit(1)).alias("n"), F.sum("d").alias("d"))
        .collect()
    )
    return {(r["g"], int(r["s"])): (fingerprint(r["n"], r["d"], config), int(r["e"])) for r in rows}


def _baseline_fingerprint(baseline: DataFrame, config: str) -> str | None:
    row = baseline.agg(F.count(F.lit(1)).alias("n"), F.sum(row_digest(baseline)).alias("d")).first()
    return fingerprint(row["n"], row["d"], config) if row and row["n"] else None


def _stored_fingerprints(
    spark: SparkSession, catalog: TableCatalog, info: MonitorInfo
) -> tuple[dict[WindowId, str], str | None]:
    """The fingerprints the profile table holds: per input window, and of the baseline."""
    name = info.profile_metrics_table_name
    if not catalog.exists(spark, name):
        return {}, None
    rows = (
        catalog.read(spark, name)
        .where(
            (F.col("column_name") == TABLE_COLUMN)
            & F.col("model_id").isNull()
            & F.col("slice_key").isNull()
        )
        .select(
            "log_type",
            "granularity",
            F.unix_seconds(F.col("window.start")).alias("start"),
            "input_fingerprint",
        )
        .collect()
    )
    windows: dict[WindowId, str] = {}
    baseline = None
    for row in rows:
        if row["log_type"] == BASELINE:
            baseline = row["input_fingerprint"]
        else:
            windows[(row["granularity"], int(row["start"]))] = row["input_fingerprint"]
    return windows, baseline


# --- The refresh -------------------------------------------------------------------------------
def check_columns(info: MonitorInfo, columns: Iterable[str]) -> None:
    """Raise :class:`MonitorError` naming the profile's columns ``columns`` lacks."""
    present = set(columns)
    spec = info.inference_log or info.time_series
    needed = [info.timestamp_col] if info.timestamp_col else []
    if info.inference_log is not None:
        needed += [info.inference_log.model_id_col, info.inference_log.prediction_col]
        needed += [
            c for c in (info.inference_log.label_col, info.inference_log.prediction_proba_col) if c
        ]
    missing = [c for c in needed if c and c not in present]
    if spec is not None and missing:
        raise MonitorError(f"{info.table_name} has no column(s) {', '.join(missing)}")


def _snapshot_start(spark: SparkSession, catalog: TableCatalog, name: str) -> int:
    """The commit time (epoch seconds) of the current version of ``name``."""
    row = (
        DeltaTable.forPath(spark, catalog.path(name))
        .history(1)
        .select(F.unix_seconds("timestamp").alias("t"))
        .first()
    )
    assert row is not None
    return int(row["t"])


def refresh_monitor(spark: SparkSession, catalog: TableCatalog, info: MonitorInfo) -> RefreshReport:
    """Refresh ``info``'s metrics tables: recompute only what changed, MERGE, report."""
    if not catalog.exists(spark, info.table_name):
        raise MonitorError(f"no table {info.table_name} at {catalog.path(info.table_name)}")
    version = delta_version(spark, catalog, info.table_name)
    source = catalog.read(spark, info.table_name, version=version)
    check_columns(info, source.columns)
    columns = profiled_columns(info, source.schema)
    config = info.config_digest()
    snapshot_start = (
        _snapshot_start(spark, catalog, info.table_name) if info.snapshot is not None else None
    )

    current = _window_fingerprints(source, info, config, snapshot_start)
    stored, stored_baseline = _stored_fingerprints(spark, catalog, info)
    baseline_df = None
    baseline_fp = None
    if info.baseline_table_name:
        if not catalog.exists(spark, info.baseline_table_name):
            raise MonitorError(f"no baseline table {info.baseline_table_name}")
        baseline_df = catalog.read(spark, info.baseline_table_name)
        baseline_fp = _baseline_fingerprint(baseline_df, config)
    if info.snapshot is not None:
        # A snapshot's windows are the table's past states: they are kept, never recomputed.
        latest = max(stored, key=lambda w: w[1], default=None)
        dirty = {w for w, (fp, _) in current.items() if latest is None or stored[latest] != fp}
        removed: set[WindowId] = set()
    else:
        dirty = {w for w, (fp, _) in current.items() if stored.get(w) != fp}
        removed = set(stored) - set(current)
    baseline_dirty = baseline_fp != stored_baseline
    report = RefreshReport(info.table_name, version)
    if not dirty and not removed and not baseline_dirty:
        log.info("%s: nothing changed", info.table_name)
        return report

    changed = dirty | removed
    drift_targets = set(dirty)
    for granularity, start in changed:
        if granularity is not None:
            following = (granularity, Granularity.parse(granularity).shift(start, 1))
            if following in current:
                drift_targets.add(following)
    if baseline_dirty:
        drift_targets |= set(current) if info.snapshot is None else dirty
    needed = set(dirty) | drift_targets
    for granularity, start in list(drift_targets):
        if granularity is not None:
            previous = (granularity, Granularity.parse(granularity).shift(start, -1))
            if previous in current:
                needed.add(previous)

    if info.snapshot is None and len(needed) < len(current):
        # Only the rows of the needed windows are read past the scan: without this, every
        # aggregation of an incremental refresh exploded the whole table before dropping it.
        source = source.where(_time_ranges(source, info, [(w[1], current[w][1]) for w in needed]))
    computed = _compute(
        spark,
        info,
        source,
        baseline_df if (baseline_df is not None and (drift_targets or baseline_dirty)) else None,
        columns,
        needed,
        snapshot_start,
    )
    stamps = {"logging_table_commit_version": version, "monitor_version": info.monitor_version}
    fingerprints = {w: fp for w, (fp, _) in current.items()}
    profile_rows = computed.profile_rows(dirty, baseline_dirty, fingerprints, baseline_fp, stamps)
    drift_rows = computed.drift_rows(drift_targets, stamps)

    _merge(
        spark,
        catalog,
        info.drift_metrics_table_name,
        _frame(spark, drift_rows, DRIFT_SCHEMA, with_cmp=True),
        DRIFT_KEYS,
        _window_condition(drift_targets | removed, baseline=False),
    )
    if os.environ.get(FAULT_ENV) == FAULT_AFTER_DRIFT:
        raise RefreshInterrupted(f"{FAULT_ENV}={FAULT_AFTER_DRIFT}: stopped before the profile")
    _merge(
        spark,
        catalog,
        info.profile_metrics_table_name,
        _frame(spark, profile_rows, PROFILE_SCHEMA, with_cmp=False),
        PROFILE_KEYS,
        _window_condition(changed, baseline=baseline_dirty),
    )
    computed.release()
    return RefreshReport(
        info.table_name,
        version,
        profile_windows=sorted(dirty, key=_order),
        drift_windows=sorted(drift_targets, key=_order),
        removed_windows=sorted(removed, key=_order),
        baseline_recomputed=baseline_dirty,
        profile_rows=len(profile_rows),
        drift_rows=len(drift_rows),
    )


def _time_ranges(source: DataFrame, info: MonitorInfo, windows: Iterable[tuple[int, int]]) -> Any:
    """A filter keeping the rows whose time falls in one of ``windows`` ((start, end) epoch
    seconds, end excluded), with overlapping and adjacent ones merged. A timestamp column is
    compared with timestamp literals, which Delta's file statistics can skip by."""
    merged: list[list[int]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    assert info.timestamp_col is not None
    condition = F.lit(False)
    if isinstance(source.schema[info.timestamp_col].dataType, TimestampType):
        column = F.col(info.timestamp_col)
        for start, end in merged:
            condition = condition | ((column >= F.lit(_utc(start))) & (column < F.lit(_utc(end))))
    else:
        seconds = timestamp_seconds(source, info.timestamp_col)
        for start, end in merged:
            condition = condition | ((seconds >= start) & (seconds < end))
    return condition


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _order(window: WindowId) -> tuple[str, int]:
    return (window[0] or "", window[1])


# --- Computation -------------------------------------------------------------------------------
_UNIT_FIELDS = ("granularity", "window_start", "window_end", "model_id", "slice_key", "slice_value")


class _Computed:
    """The statistics of the needed units, collected to the driver, and the rows made of them."""

    def __init__(
        self,
        info: MonitorInfo,
        columns: list[ColumnSpec],
        units: dict[str, dict[str, Any]],
        baseline_keys: set[str],
        stats: dict[tuple[str, str], dict[str, Any]],
        quality: dict[str, dict[str, Any]],
        drift: dict[tuple[int, str], dict[str, Any]],
        pairs: list[tuple[int, str, str, str]],
        cached: list[DataFrame],
    ) -> None:
        self.info = info
        self.columns = columns
        self.units = units
        self.baseline_keys = baseline_keys
        self.stats = stats
        self.quality = quality
        self.drift = drift
        self.pairs = pairs
        self._cached = cached

    def release(self) -> None:
        """Drop the cached value counts."""
        for df in self._cached:
            df.unpersist()

    def profile_rows(
        self,
        dirty: set[WindowId],
        baseline_dirty: bool,
        fingerprints: dict[WindowId, str],
        baseline_fp: str | None,
        stamps: dict[str, Any],
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for key, unit in self.units.items():
            is_baseline = key in self.baseline_keys
            window = (unit["granularity"], unit["window_start"])
            if is_baseline and not baseline_dirty:
                continue
            if not is_baseline and window not in dirty:
                continue
            base = {
                **{name: unit[name] for name in _UNIT_FIELDS},
                "log_type": BASELINE if is_baseline else INPUT,
                **stamps,
                "input_fingerprint": baseline_fp if is_baseline else fingerprints.get(window),
            }
            table = {
                **base,
                "column_name": TABLE_COLUMN,
                "count": unit["rows"],
                **self.quality.get(key, {}),
            }
            if self.info.inference_log is not None and not is_baseline and unit["rows"]:
                labeled = unit.get("labeled")
                if labeled is not None:
                    table["percent_labeled"] = labeled / unit["rows"]
            rows.append(table)
            for spec in self.columns:
                stat = self.stats.get((key, spec.name))
                if stat is None:
                    continue
                rows.append({**base, "column_name": spec.name, "data_type": spec.data_type, **stat})
        return rows

    def drift_rows(self, targets: set[WindowId], stamps: dict[str, Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for pair_id, target_key, reference_key, drift_type in self.pairs:
            unit = self.units[target_key]
            if (unit["granularity"], unit["window_start"]) not in targets:
                continue
            reference = self.units[reference_key]
            base = {
                **{name: unit[name] for name in _UNIT_FIELDS},
                "cmp_start": None if drift_type == BASELINE else reference["window_start"],
                "cmp_end": None if drift_type == BASELINE else reference["window_end"],
                "drift_type": drift_type,
                **stamps,
            }
            rows.append(
                {
                    **base,
                    "column_name": TABLE_COLUMN,
                    "count_delta": unit["rows"] - reference["rows"],
                }
            )
            for spec in self.columns:
                mine = self.stats.get((target_key, spec.name))
                theirs = self.stats.get((reference_key, spec.name))
                if mine is None or theirs is None:
                    continue
                row = {
                    **base,
                    "column_name": spec.name,
                    "data_type": spec.data_type,
                    "count_delta": float(mine["count"] - theirs["count"]),
                    "avg_delta": _minus(mine.get("avg"), theirs.get("avg")),
                    "percent_null_delta": _minus(mine["percent_null"], theirs["percent_null"]),
                }
                distances = self.drift.get((pair_id, spec.name), {})
                if spec.kind == "numeric":
                    for name in ("ks_test", "wasserstein_distance", "population_stability_index"):
                        row[name] = distances.get(name)
                else:
                    for name in ("chi_squared_test", "tv_distance", "l_infinity_distance"):
                        row[name] = distances.get(name)
                row["js_distance"] = distances.get("js_distance")
                rows.append(row)
        return rows


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _compute(
    spark: SparkSession,
    info: MonitorInfo,
    source: DataFrame,
    baseline: DataFrame | None,
    columns: list[ColumnSpec],
    needed: set[WindowId],
    snapshot_start: int | None,
) -> _Computed:
    """Profile, quality and drift statistics of the ``needed`` windows (and the baseline)."""
    label_col = info.inference_log.label_col if info.inference_log else None
    windows = None
    if info.snapshot is None:
        windows = spark.createDataFrame(
            [(g, s) for g, s in needed],
            "granularity string, window_start long",
        )
    units = unit_frame(source, info, windows=windows, snapshot_start=snapshot_start)
    counts = value_counts(units, columns)
    tables = table_counts(units, label_col)
    baseline_keys: set[str] = set()
    if baseline is not None:
        present = {c.name for c in columns if c.name in baseline.columns}
        base_columns = [c for c in columns if c.name in present]
        base_units = unit_frame(baseline, info, windows=None, baseline=True)
        if base_columns:
            counts = counts.unionByName(value_counts(base_units, base_columns))
        tables = tables.unionByName(table_counts(base_units, None))
    counts = counts.persist()
    cached = [counts]

    units_by_key: dict[str, dict[str, Any]] = {}
    for row in tables.collect():
        unit = row.asDict()
        units_by_key[unit.pop("unit_key")] = unit
    if baseline is not None:
        baseline_keys = {k for k, u in units_by_key.items() if u["window_start"] is None}

    stats: dict[tuple[str, str], dict[str, Any]] = {}
    items = {
        (r["unit_key"], r["column_name"]): [i.asDict() for i in r["frequent_items"]]
        for r in frequent_items(counts).collect()
    }
    kinds = {c.name: c.kind for c in columns}
    for row in profile_stats(counts).collect():
        key = (row["unit_key"], row["column_name"])
        rows, nulls = int(row["rows"]), int(row["num_nulls"])
        count = rows - nulls
        quantiles = row["quantiles"]
        stats[key] = {
            "count": count,
            "num_nulls": nulls,
            "num_zeros": int(row["num_zeros"]),
            "num_nan": int(row["num_nan"]),
            "distinct_count": int(row["distinct_count"]),
            "percent_null": nulls / rows if rows else None,
            "percent_zeros": row["num_zeros"] / rows if rows else None,
            "percent_distinct": row["distinct_count"] / count if count else None,
            "min": row["min"],
            "max": row["max"],
            "avg": row["avg"],
            "stddev": row["stddev"],
            "median": quantiles[QUANTILES.index(0.5)] if quantiles else None,
            "quantiles": list(quantiles) if quantiles else None,
            "frequent_items": items.get(key)
            if kinds.get(row["column_name"]) != "numeric"
            else None,
        }

    quality: dict[str, dict[str, Any]] = {}
    if info.inference_log is not None and label_col is not None:
        if info.inference_log.problem_type == "PROBLEM_TYPE_CLASSIFICATION":
            bins: dict[str, list[dict[str, Any]]] = {}
            for row in calibration_bins(units, info).collect():
                bins.setdefault(row["unit_key"], []).append(row.asDict())
            for row in classification_quality(units, info).collect():
                quality[row["unit_key"]] = finish_classification(
                    row.asDict(), bins.get(row["unit_key"], [])
                )
        else:
            for row in regression_quality(units, info).collect():
                quality[row["unit_key"]] = finish_regression(row.asDict())

    pairs = _pairs(info, units_by_key, baseline_keys)
    drift = _drift(spark, counts, pairs, stats, columns) if pairs else {}
    return _Computed(
        info, columns, units_by_key, baseline_keys, stats, quality, drift, pairs, cached
    )


def _pairs(
    info: MonitorInfo, units: dict[str, dict[str, Any]], baseline_keys: set[str]
) -> list[tuple[int, str, str, str]]:
    """``(pair_id, target_key, reference_key, drift_type)`` of every input unit that has a
    previous window (CONSECUTIVE) or a baseline of its slice (BASELINE)."""
    by_window = {
        (u["granularity"], u["window_start"], u["model_id"], u["slice_key"], u["slice_value"]): k
        for k, u in units.items()
        if k not in baseline_keys
    }
    by_slice = {(units[k]["slice_key"], units[k]["slice_value"]): k for k in baseline_keys}
    pairs: list[tuple[int, str, str, str]] = []
    for key, unit in sorted(units.items()):
        if key in baseline_keys:
            continue
        if unit["granularity"] is not None:
            granularity = Granularity.parse(unit["granularity"])
            previous = by_window.get(
                (
                    unit["granularity"],
                    granularity.shift(unit["window_start"], -1),
                    unit["model_id"],
                    unit["slice_key"],
                    unit["slice_value"],
                )
            )
            if previous is not None:
                pairs.append((len(pairs), key, previous, CONSECUTIVE))
        reference = by_slice.get((unit["slice_key"], unit["slice_value"]))
        if reference is not None:
            pairs.append((len(pairs), key, reference, BASELINE))
    return pairs


def _drift(
    spark: SparkSession,
    counts: DataFrame,
    pairs: list[tuple[int, str, str, str]],
    stats: dict[tuple[str, str], dict[str, Any]],
    columns: list[ColumnSpec],
) -> dict[tuple[int, str], dict[str, Any]]:
    """The distances of every pair and column, keyed by (pair_id, column_name)."""
    pair_df = spark.createDataFrame(
        [(p, t, r) for p, t, r, _ in pairs], "pair_id int, target_key string, reference_key string"
    )
    numeric = [c.name for c in columns if c.kind == "numeric"]
    edge_rows = []
    for pair_id, _, reference, _ in pairs:
        for name in numeric:
            quantiles = (stats.get((reference, name)) or {}).get("quantiles")
            if quantiles:
                deciles = sorted({quantiles[QUANTILES.index(q)] for q in DECILES})
                edge_rows.append((pair_id, name, deciles))
    edges = spark.createDataFrame(edge_rows, "pair_id int, column_name string, edges array<double>")
    result: dict[tuple[int, str], dict[str, Any]] = {}
    for row in ecdf_distances(counts, pair_df).collect():
        result.setdefault((row["pair_id"], row["column_name"]), {}).update(
            {
                "ks_test": {
                    "statistic": row["ks"],
                    "pvalue": ks_pvalue(row["ks"], row["n1"], row["n0"]),
                },
                "wasserstein_distance": row["wasserstein"] or 0.0,
            }
        )
    for row in binned_distances(counts, pair_df, edges).collect():
        result.setdefault((row["pair_id"], row["column_name"]), {}).update(
            {
                "population_stability_index": row["psi"],
                "js_distance": row["js"],
                "chi_squared_test": {
                    "statistic": row["chi2"],
                    "pvalue": chi2_pvalue(row["chi2"], row["bins"]),
                },
                "tv_distance": row["tv"],
                "l_infinity_distance": row["linf"],
            }
        )
    return result


# --- Writing -----------------------------------------------------------------------------------
def _frame(
    spark: SparkSession, rows: list[dict[str, Any]], schema: StructType, *, with_cmp: bool
) -> DataFrame:
    """The rows built on the driver (windows as epoch seconds) as a frame of ``schema``."""
    flat_fields = [
        StructField("window_start", LongType()),
        StructField("window_end", LongType()),
    ]
    if with_cmp:
        flat_fields += [StructField("cmp_start", LongType()), StructField("cmp_end", LongType())]
    flat_fields += [f for f in schema.fields if f.name not in ("window", "window_cmp")]
    flat = StructType(flat_fields)
    # JSON keeps nested values (structs, arrays of structs) without a Python type check per row.
    text = spark.createDataFrame([(json.dumps(r),) for r in rows], "j string")
    parsed = text.select(F.from_json("j", flat).alias("r")).select("r.*")

    def window(start: str, end: str) -> Any:
        return F.when(
            F.col(start).isNotNull(),
            F.struct(
                F.timestamp_seconds(F.col(start)).alias("start"),
                F.timestamp_seconds(F.col(end)).alias("end"),
            ),
        )

    selected = []
    for f in schema.fields:
        if f.name == "window":
            selected.append(window("window_start", "window_end").alias("window"))
        elif f.name == "window_cmp":
            selected.append(window("cmp_start", "cmp_end").alias("window_cmp"))
        else:
            selected.append(F.col(f.name).cast(f.dataType).alias(f.name))
    return parsed.select(*selected)


def _window_condition(windows: set[WindowId], *, baseline: bool) -> str:
    """SQL over the target ``t`` matching the rows of ``windows`` (and of the baseline)."""
    clauses = []
    by_granularity: dict[str | None, list[int]] = {}
    for granularity, start in windows:
        by_granularity.setdefault(granularity, []).append(start)
    for granularity, starts in sorted(by_granularity.items(), key=lambda i: i[0] or ""):
        starts_sql = ", ".join(str(s) for s in sorted(starts))
        which = (
            "t.granularity IS NULL" if granularity is None else f"t.granularity = '{granularity}'"
        )
        clauses.append(
            f"({which} AND t.window IS NOT NULL AND unix_seconds(t.window.start) IN ({starts_sql}))"
        )
    if baseline:
        clauses.append("(t.log_type = 'BASELINE')")
    return " OR ".join(clauses) or "false"


def _merge(
    spark: SparkSession,
    catalog: TableCatalog,
    name: str,
    rows: DataFrame,
    keys: Iterable[str],
    stale: str,
) -> None:
    """MERGE ``rows`` into ``name``: replace matching rows, insert new ones, delete the rows of
    the recomputed windows (``stale``, SQL over ``t``) that were not recomputed."""
    create_if_missing(spark, catalog, name, rows)
    on = " AND ".join(
        ["t.window.start <=> s.window.start", *[f"t.`{k}` <=> s.`{k}`" for k in keys]]
    )
    (
        DeltaTable.forPath(spark, catalog.path(name))
        .alias("t")
        .merge(rows.alias("s"), on)
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .whenNotMatchedBySourceDelete(condition=stale)
        .execute()
    )
