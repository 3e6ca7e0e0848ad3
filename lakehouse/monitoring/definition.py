"""Monitor definitions in the shape of Databricks Lakehouse Monitoring, and where they persist.

A monitor watches one Delta table with one of three profiles, named as in the Databricks SDK
(``databricks.sdk.service.catalog``): :class:`MonitorInferenceLog` (a model's predictions, with
timestamp, model id, prediction and label columns), :class:`MonitorTimeSeries` (any table with
a timestamp column) and :class:`MonitorSnapshot` (the whole table as it is now). Its results go
to ``<schema>.<table>_profile_metrics`` and ``<schema>.<table>_drift_metrics``.

A definition is one JSON file, ``<tables root>/_monitors/<schema>.<table>.json``, written through
Hadoop's file system so it lives beside the tables on a local folder and on an object store
alike: copying the root copies the monitors with their tables, any application reads a
definition without a Spark job or a metastore, and two monitors never write the same file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pyspark.sql import SparkSession

from lakehouse.platform.catalog import TableCatalog, split_name

PROFILE_TYPES: tuple[str, ...] = ("inference", "snapshot", "time-series")
PROBLEM_TYPES: tuple[str, ...] = ("PROBLEM_TYPE_CLASSIFICATION", "PROBLEM_TYPE_REGRESSION")
#: Folder under the tables root that holds the monitor definitions.
MONITORS_DIR = "_monitors"
PROFILE_SUFFIX = "_profile_metrics"
DRIFT_SUFFIX = "_drift_metrics"
STATUS_ACTIVE = "MONITOR_STATUS_ACTIVE"

_GRANULARITY = re.compile(r"^\s*(\d+)\s+(minute|hour|day|week|month|year)s?\s*$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
#: 1970-01-05, the first Monday after the epoch: weeks start on Mondays, as ``date_trunc``'s.
MONDAY_EPOCH = 4 * 86400


class MonitorError(ValueError):
    """A monitor definition or request that cannot be honoured; the message says why."""


@dataclass(frozen=True)
class Granularity:
    """One window length, parsed from Databricks' spelling (``"1 day"``, ``"30 minutes"``)."""

    text: str
    count: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> Granularity:
        """Parse ``"<n> minute|hour|day|week|month|year[s]"``; months and years take n = 1."""
        match = _GRANULARITY.match(text or "")
        if not match or int(match.group(1)) < 1:
            raise MonitorError(
                f"granularity must look like '1 day', '30 minutes', '1 week' or '1 month', "
                f"got {text!r}"
            )
        count, unit = int(match.group(1)), match.group(2)
        if unit in ("month", "year") and count != 1:
            raise MonitorError(f"granularity {text!r}: months and years take a count of 1")
        canonical = f"{count} {unit}" + ("s" if count > 1 else "")
        return cls(canonical, count, unit)

    @property
    def seconds(self) -> int | None:
        """The fixed length in seconds; None for months and years."""
        unit = _UNIT_SECONDS.get(self.unit)
        return None if unit is None else unit * self.count

    def shift(self, start: int, windows: int) -> int:
        """The start (epoch seconds) of the window ``windows`` after the one starting at
        ``start`` (negative: before)."""
        if self.seconds is not None:
            return start + windows * self.seconds
        day = dt.datetime.fromtimestamp(start, dt.UTC)
        months = windows * (12 if self.unit == "year" else 1)
        index = day.year * 12 + day.month - 1 + months
        return int(dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=dt.UTC).timestamp())


@dataclass(frozen=True)
class MonitorInferenceLog:
    """The inference profile: a model's predictions over time (as Databricks' type)."""

    timestamp_col: str
    granularities: list[str]
    model_id_col: str
    prediction_col: str
    problem_type: str = "PROBLEM_TYPE_CLASSIFICATION"
    label_col: str | None = None
    prediction_proba_col: str | None = None


@dataclass(frozen=True)
class MonitorTimeSeries:
    """The time-series profile: any table with a timestamp column."""

    timestamp_col: str
    granularities: list[str]


@dataclass(frozen=True)
class MonitorSnapshot:
    """The snapshot profile: the whole table, one window per content of the table."""


@dataclass(frozen=True)
class MonitorInfo:
    """A monitor on one table: its profile, baseline, slices and output tables.

    Field names follow ``databricks.sdk.service.catalog.MonitorInfo``; ``columns`` (the columns
    profiled; empty: every supported column but the monitor's own) and ``baseline_source``
    (``champion``: the baseline table holds the champion's training rows and follows the
    champion) are this platform's.
    """

    table_name: str
    output_schema_name: str
    inference_log: MonitorInferenceLog | None = None
    time_series: MonitorTimeSeries | None = None
    snapshot: MonitorSnapshot | None = None
    baseline_table_name: str | None = None
    slicing_exprs: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    baseline_source: str | None = None
    monitor_version: int = 1
    status: str = STATUS_ACTIVE

    def __post_init__(self) -> None:
        profiles = [p for p in (self.inference_log, self.time_series, self.snapshot) if p]
        if len(profiles) != 1:
            raise MonitorError("a monitor has exactly one of inference_log, time_series, snapshot")
        split_name(self.table_name)
        if self.baseline_table_name:
            split_name(self.baseline_table_name)
        if self.baseline_source not in (None, "champion"):
            raise MonitorError(
                f"baseline_source must be 'champion' or absent, got {self.baseline_source!r}"
            )
        if self.baseline_source and not self.baseline_table_name:
            raise MonitorError("a champion baseline needs its baseline_table_name")
        for text in self.granularities:
            Granularity.parse(text)
        if len(set(self.granularities)) != len(self.granularities):
            raise MonitorError(f"granularities repeat: {self.granularities}")
        if self.inference_log and self.inference_log.problem_type not in PROBLEM_TYPES:
            raise MonitorError(
                f"problem_type must be one of {', '.join(PROBLEM_TYPES)}, "
                f"got {self.inference_log.problem_type!r}"
            )

    @property
    def profile_type(self) -> str:
        """``inference``, ``time-series`` or ``snapshot``."""
        if self.inference_log:
            return "inference"
        return "time-series" if self.time_series else "snapshot"

    @property
    def timestamp_col(self) -> str | None:
        """The column windows are cut on (None for a snapshot)."""
        profile = self.inference_log or self.time_series
        return profile.timestamp_col if profile else None

    @property
    def granularities(self) -> list[str]:
        """The window lengths (none for a snapshot)."""
        profile = self.inference_log or self.time_series
        return [Granularity.parse(g).text for g in profile.granularities] if profile else []

    @property
    def profile_metrics_table_name(self) -> str:
        """``<output schema>.<table>_profile_metrics``."""
        return f"{self.output_schema_name}.{split_name(self.table_name)[1]}{PROFILE_SUFFIX}"

    @property
    def drift_metrics_table_name(self) -> str:
        """``<output schema>.<table>_drift_metrics``."""
        return f"{self.output_schema_name}.{split_name(self.table_name)[1]}{DRIFT_SUFFIX}"

    def own_columns(self) -> set[str]:
        """The columns the profile itself uses (timestamp, model id), not profiled as data."""
        own = {self.timestamp_col} if self.timestamp_col else set()
        if self.inference_log:
            own.add(self.inference_log.model_id_col)
        return own

    def as_dict(self) -> dict[str, Any]:
        """The definition as JSON-ready data (the shape of the SDK's ``as_dict``)."""
        body = {key: value for key, value in asdict(self).items() if value not in (None, [])}
        if self.snapshot is not None:
            body["snapshot"] = {}
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> MonitorInfo:
        """The definition written by :meth:`as_dict`."""
        body = dict(body)
        if body.get("inference_log") is not None:
            body["inference_log"] = MonitorInferenceLog(**body["inference_log"])
        if body.get("time_series") is not None:
            body["time_series"] = MonitorTimeSeries(**body["time_series"])
        if body.get("snapshot") is not None:
            body["snapshot"] = MonitorSnapshot()
        return cls(**body)

    def config_digest(self) -> str:
        """A digest of everything that shapes the metrics; part of each window's fingerprint,
        so changing the monitor recomputes every window."""
        body = {k: v for k, v in self.as_dict().items() if k not in ("status",)}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]

    def with_status(self, status: str) -> MonitorInfo:
        """A copy with another status."""
        return replace(self, status=status)


# --- Persistence -----------------------------------------------------------------------------
def _fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hadoop_path


def monitor_path(catalog: TableCatalog, table_name: str) -> str:
    """Where the definition of the monitor on ``table_name`` is kept."""
    split_name(table_name)
    return f"{catalog.root.rstrip('/')}/{MONITORS_DIR}/{table_name}.json"


def save_monitor(spark: SparkSession, catalog: TableCatalog, info: MonitorInfo) -> str:
    """Write the definition (atomically: a temporary file renamed over the old one)."""
    path = monitor_path(catalog, info.table_name)
    fs, target = _fs(spark, path)
    _, temporary = _fs(spark, f"{path}.tmp")
    stream = fs.create(temporary, True)
    try:
        stream.write(json.dumps(info.as_dict(), indent=2, sort_keys=True).encode())
    finally:
        stream.close()
    if fs.exists(target):
        fs.delete(target, False)
    if not fs.rename(temporary, target):
        raise OSError(f"could not write {path}")
    return path


def load_monitor(spark: SparkSession, catalog: TableCatalog, table_name: str) -> MonitorInfo:
    """The monitor on ``table_name``; :class:`MonitorError` when there is none."""
    path = monitor_path(catalog, table_name)
    fs, target = _fs(spark, path)
    if not fs.exists(target):
        raise MonitorError(
            f"no monitor on {table_name}; create one with `lakehouse monitor create`"
        )
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    stream = fs.open(target)
    try:
        text = str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()
    return MonitorInfo.from_dict(json.loads(text))


def list_monitors(spark: SparkSession, catalog: TableCatalog) -> list[MonitorInfo]:
    """Every monitor under the catalog's root, by table name."""
    fs, folder = _fs(spark, f"{catalog.root.rstrip('/')}/{MONITORS_DIR}")
    if not fs.exists(folder):
        return []
    names = sorted(
        str(status.getPath().getName())[: -len(".json")]
        for status in fs.listStatus(folder)
        if str(status.getPath().getName()).endswith(".json")
    )
    return [load_monitor(spark, catalog, name) for name in names]


def delete_monitor(spark: SparkSession, catalog: TableCatalog, table_name: str) -> None:
    """Remove the definition; the metrics tables stay, as on Databricks."""
    fs, target = _fs(spark, monitor_path(catalog, table_name))
    if not fs.exists(target):
        raise MonitorError(f"no monitor on {table_name}")
    fs.delete(target, False)
