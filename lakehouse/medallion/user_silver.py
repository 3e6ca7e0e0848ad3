"""Silver for a user's own bronze table, its expectations declared as data (a YAML spec).

A spec names the tables, the key to MERGE on and the expectations, with the names of Delta Live
Tables' decorators::

    source: bronze.orders            # optional: the table `lakehouse ingest --table` names
    target: silver.orders
    keys: [order_id]
    sequence_by: updated_at          # optional: of two records of a key, the later wins
    columns:                         # optional: types (bronze values are cast; default: as is)
      order_id: string
      amount: double
      updated_at: timestamp
    expect:                          # warn: keep the row, count it
      known_status: "status IN ('NEW', 'PAID', 'SHIPPED')"
    expect_or_drop:                  # the row goes to silver.quarantine with the rule's name
      positive_amount: "amount > 0"
    expect_or_fail:                  # one failing row stops the build; nothing is committed
      has_order_id: "order_id IS NOT NULL"

:func:`build_user_silver` runs it the way silver runs the platform's entities
(:mod:`lakehouse.medallion.silver`), with the same pieces: a Delta stream over the bronze table
(its own checkpoint, ``availableNow``), :func:`~lakehouse.medallion.expectations.flag_expectations`
and :func:`~lakehouse.medallion.expectations.check_counts` (a ``fail`` rule raises
:class:`~lakehouse.medallion.expectations.ExpectationFailed` before anything of the batch is
written, and the checkpoint does not advance), rejected rows appended to ``silver.quarantine``
with the rule, the reason and the raw bronze record, the passing rows deduplicated on the key and
MERGEd (a re-run changes nothing), and each batch's counts, ``duplicates`` included, appended to
``silver.expectation_results``. The ``entity`` of those rows is the target table's name, so
``bronze = silver + quarantined + duplicates`` holds per target (:func:`user_accounting`).

Rules run in this order, each on the rows no earlier rule dropped: the built-in ``malformed``
(drop: the line did not parse, kept whole in ``_rescued_data``), ``schema_drift`` (warn: the row
carried columns outside the schema, mode ``rescue``) and ``valid_types`` (drop: a value that does
not convert to its declared type), then the spec's ``expect_or_fail``, ``expect_or_drop`` and
``expect`` rules in the order written, and last ``required_keys`` (drop: a key column is null).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StringType

from lakehouse.medallion.autoloader import METADATA_COLUMNS, RESCUED
from lakehouse.medallion.bronze import pending_batch, run_available_now, stream_app_id
from lakehouse.medallion.contracts import EXPECTATION_RESULTS_SCHEMA
from lakehouse.medallion.expectations import (
    DUPLICATES,
    MALFORMED,
    MALFORMED_FLAG,
    SCHEMA_DRIFT,
    UNCONVERTED,
    Expectation,
    ExpectationCount,
    FlaggedRows,
    check_counts,
    flag_expectations,
)
from lakehouse.medallion.silver import (
    USER_METADATA_CONF,
    Accounting,
    SilverResult,
    ensure_shared_tables,
)
from lakehouse.platform.catalog import (
    SILVER_EXPECTATIONS,
    SILVER_QUARANTINE,
    TableCatalog,
    split_name,
)
from lakehouse.platform.tables import (
    append_batch,
    batch_metadata,
    committed_batch,
    create_if_missing,
    has_commit,
    merge_upsert,
)

log = logging.getLogger(__name__)

#: The spec's sections of expectations and the action each declares (DLT's names).
SECTIONS: Mapping[str, str] = {
    "expect_or_fail": "fail",
    "expect_or_drop": "drop",
    "expect": "warn",
}
#: Built-in drop rule: a value that does not convert to the type the spec declares.
VALID_TYPES = "valid_types"
#: Built-in drop rule, last: a key column is null.
REQUIRED_KEYS = "required_keys"
#: The session setting that lets a MERGE add the columns its source brings.
AUTO_MERGE_CONF = "spark.databricks.delta.schema.autoMerge.enabled"
_SPEC_KEYS = {"source", "target", "keys", "sequence_by", "columns", *SECTIONS}
_RAW_RECORD = "_raw_record"
_METADATA = ("_source_file", "_ingested_at")


class SpecError(ValueError):
    """A silver spec that cannot be run, with the file and what is wrong."""


@dataclass(frozen=True)
class SilverSpec:
    """A user's silver table, as declared in a YAML spec.

    Attributes:
        target: the silver table (``silver.<name>``).
        source: the bronze table it reads; None when the caller supplies it.
        keys: the columns that identify a record: the MERGE's key.
        sequence_by: the column ordering two records of one key (the later wins), if any.
        columns: (name, type) of the typed columns; empty keeps bronze's columns as they are.
        expectations: the spec's rules in the order they run.
    """

    target: str
    keys: tuple[str, ...]
    source: str | None = None
    sequence_by: str | None = None
    columns: tuple[tuple[str, str], ...] = ()
    expectations: tuple[Expectation, ...] = field(default=())

    def with_source(self, source: str) -> SilverSpec:
        """The spec reading ``source`` (a spec that names another source is refused)."""
        if self.source is not None and self.source != source:
            raise SpecError(f"the spec reads {self.source}, not {source}")
        return SilverSpec(
            self.target, self.keys, source, self.sequence_by, self.columns, self.expectations
        )


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{what} must be a column name or a list of them, got {value!r}")
    return tuple(value)


def parse_spec(data: Any, origin: str = "spec") -> SilverSpec:
    """A :class:`SilverSpec` from a parsed YAML document.

    Raises:
        SpecError: an unknown section, a missing target or key, a target outside ``silver``,
            a source outside ``bronze``, a rule without a condition.
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"{origin}: expected a mapping with target, keys and expectations")
    unknown = sorted(set(data) - _SPEC_KEYS)
    if unknown:
        raise SpecError(f"{origin}: unknown section(s) {unknown}; known: {sorted(_SPEC_KEYS)}")
    try:
        target = str(data["target"])
        if split_name(target)[0] != "silver":
            raise SpecError(f"{origin}: target must be a silver table, got {target!r}")
        source = data.get("source")
        if source is not None and split_name(str(source))[0] != "bronze":
            raise SpecError(f"{origin}: source must be a bronze table, got {source!r}")
        keys = _names(data.get("keys"), f"{origin}: keys")
        columns = data.get("columns") or {}
        if not isinstance(columns, Mapping):
            raise SpecError(f"{origin}: columns must map names to types")
        rules = []
        for section, action in SECTIONS.items():
            entries = data.get(section) or {}
            if not isinstance(entries, Mapping):
                raise SpecError(f"{origin}: {section} must map rule names to SQL conditions")
            for name, condition in entries.items():
                rules.append(Expectation(str(name), str(condition or ""), action))
    except KeyError as exc:
        raise SpecError(f"{origin}: missing {exc.args[0]!r}") from exc
    except SpecError:
        raise
    except ValueError as exc:  # a bad table name or rule
        raise SpecError(f"{origin}: {exc}") from exc
    sequence_by = data.get("sequence_by")
    return SilverSpec(
        target=target,
        keys=keys,
        source=str(source) if source is not None else None,
        sequence_by=str(sequence_by) if sequence_by else None,
        columns=tuple((str(n), str(t)) for n, t in columns.items()),
        expectations=tuple(rules),
    )


def check_types(spec: SilverSpec) -> None:
    """Raise :class:`SpecError` for a column type Spark does not know (needs a session)."""
    for name, type_text in spec.columns:
        try:
            DataType.fromDDL(type_text)
        except Exception as exc:
            raise SpecError(f"{spec.target}: column {name}: unknown type {type_text!r}") from exc


def load_spec(path: Path | str) -> SilverSpec:
    """Read a spec file (:func:`parse_spec`)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read the silver spec {path}: {exc}") from exc
    return parse_spec(data, str(path))


# --- Typing and rules (pure transforms) ----------------------------------------------------------


def _data_columns(bronze: DataFrame) -> list[str]:
    return [c for c in bronze.columns if c not in METADATA_COLUMNS]


def _typed(spec: SilverSpec, bronze: DataFrame) -> list[tuple[str, Column, Column]]:
    """(name, typed value, "present but did not convert") of each silver data column."""
    if not spec.columns:
        return [(c, F.col(f"`{c}`"), F.lit(False)) for c in _data_columns(bronze)]
    available = {c.lower(): c for c in bronze.columns}
    result = []
    for name, type_text in spec.columns:
        data_type = DataType.fromDDL(type_text)
        source = available.get(name.lower())
        if source is None:
            result.append((name, F.lit(None).cast(data_type), F.lit(False)))
            continue
        raw = F.col(f"`{source}`")
        if not isinstance(data_type, StringType):
            text = F.nullif(F.trim(raw.cast("string")), F.lit(""))
            value = text.try_cast(data_type)
            result.append((name, value, text.isNotNull() & value.isNull()))
        else:
            result.append((name, raw.cast(data_type), F.lit(False)))
    return result


def prepare_batch(spec: SilverSpec, bronze: DataFrame) -> DataFrame:
    """Bronze rows -> the typed silver columns, the columns that did not convert
    (:data:`UNCONVERTED`), ``_rescued_data``, the raw record (JSON) and the malformed flag."""
    typed = _typed(spec, bronze)
    data = _data_columns(bronze)
    all_null: Column = F.lit(True)
    for column in data:
        all_null = all_null & F.col(f"`{column}`").isNull()
    unconverted = F.filter(
        F.array(*[F.when(bad, F.lit(name)) for name, _, bad in typed]), lambda n: n.isNotNull()
    )
    return bronze.select(
        *[value.alias(name) for name, value, _ in typed],
        *[F.col(c) for c in _METADATA],
        unconverted.alias(UNCONVERTED),
        F.col(RESCUED),
        F.to_json(F.struct(*[F.col(f"`{c}`") for c in bronze.columns])).alias(_RAW_RECORD),
        (F.col(RESCUED).isNotNull() & all_null).alias(MALFORMED_FLAG),
    )


def rules(spec: SilverSpec) -> list[Expectation]:
    """Every rule of a build of ``spec``, in the order they run (see the module's docstring)."""
    keys = " AND ".join(f"`{k}` IS NOT NULL" for k in spec.keys)
    return [
        Expectation(
            MALFORMED,
            f"NOT {MALFORMED_FLAG}",
            "drop",
            "the raw line did not parse; it is kept whole in _rescued_data",
        ),
        Expectation(
            SCHEMA_DRIFT,
            f"{RESCUED} IS NULL",
            "warn",
            "the record carried columns outside the schema (kept in _rescued_data)",
        ),
        Expectation(
            VALID_TYPES,
            f"size({UNCONVERTED}) = 0",
            "drop",
            "a value does not convert to the type the spec declares",
        ),
        *spec.expectations,
        Expectation(REQUIRED_KEYS, keys, "drop", f"a key column ({', '.join(spec.keys)}) is null"),
    ]


def deduplicate(df: DataFrame, spec: SilverSpec) -> DataFrame:
    """One row per key: the latest by ``sequence_by`` (if any), ``_ingested_at``, then
    ``_source_file``; remaining ties broken by the row's values, so the choice is deterministic."""
    data = [c for c in df.columns if c not in spec.keys and c not in _METADATA]
    first = [spec.sequence_by] if spec.sequence_by else []
    order = [F.col(f"`{c}`").desc_nulls_last() for c in [*first, *_METADATA, *data]]
    ranked = df.withColumn(
        "_rank", F.row_number().over(Window.partitionBy(*spec.keys).orderBy(*order))
    )
    return ranked.where("_rank = 1").drop("_rank")


def _newer_and_different(spec: SilverSpec, columns: Sequence[str]) -> str:
    """SQL over ``s`` and ``t``: the incoming record is later than the stored one and differs."""
    arrival = (
        "(s._ingested_at > t._ingested_at OR "
        "(s._ingested_at = t._ingested_at AND s._source_file > t._source_file))"
    )
    if spec.sequence_by:
        seq = f"`{spec.sequence_by}`"
        newer = f"(s.{seq} > t.{seq} OR (s.{seq} <=> t.{seq} AND {arrival}))"
    else:
        newer = arrival
    data = [c for c in columns if c not in spec.keys and c not in _METADATA]
    same = " AND ".join(f"s.`{c}` <=> t.`{c}`" for c in data) or "true"
    return f"{newer} AND NOT ({same})"


# --- Build ---------------------------------------------------------------------------------------


def new_run_id() -> str:
    """A short unique id for a build."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class UserSilverBatchProcessor:
    """The ``foreachBatch`` function of a user silver build: check, quarantine, MERGE, count.

    The same steps as :class:`lakehouse.medallion.silver.SilverBatchProcessor` for a table the
    spec describes rather than a platform entity; its totals are read with :meth:`result`.

    Args:
        spark: the session of the build.
        catalog: where the tables live.
        spec: the silver spec (with its source).
        checkpoint_dir: the stream's checkpoint (its id marks the commits).
        run_id: recorded with the quarantined rows and the counts.
        replayed: the batch the stream left unfinished when it last stopped.
    """

    def __init__(
        self,
        spark: SparkSession,
        catalog: TableCatalog,
        spec: SilverSpec,
        checkpoint_dir: Path | str,
        run_id: str,
        replayed: int | None,
    ) -> None:
        self.spark = spark
        self.catalog = catalog
        self.spec = spec
        self.checkpoint_dir = checkpoint_dir
        self.run_id = run_id
        self.replayed = replayed
        self.rules = rules(spec)
        self.totals = {"rows_read": 0, "inserted": 0, "updated": 0, "quarantined": 0, "dups": 0}
        self.warnings: dict[str, int] = {}

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        """Process one micro-batch of bronze rows."""
        flagged = flag_expectations(prepare_batch(self.spec, batch), self.rules)
        rows = flagged.df.withColumn(
            _RAW_RECORD, F.when(~flagged.passed, F.col(_RAW_RECORD))
        ).persist()
        try:
            self._process(flagged, rows, batch_id)
        finally:
            rows.unpersist()

    def _process(self, flagged: FlaggedRows, rows: DataFrame, batch_id: int) -> None:
        target = self.spec.target
        stats = rows.agg(
            F.count(F.lit(1)).alias("_rows"),
            *flagged.aggregates,
            F.count_if(flagged.passed).alias("_passed"),
        ).first()
        assert stats is not None
        rows_read = int(stats["_rows"])
        if rows_read == 0:
            return
        counts = flagged.counts(stats)
        check_counts(counts, self.rules, target)  # a fail rule: nothing is written
        passed = int(stats["_passed"])
        quarantined = rows_read - passed
        now = datetime.now(UTC)
        app_id = stream_app_id(self.checkpoint_dir, target)
        if quarantined:
            self._quarantine(flagged, rows, now, app_id, batch_id)
        inserted = updated = 0
        if passed:
            inserted, updated = self._upsert(flagged, rows, app_id, batch_id)
        duplicates = ExpectationCount(DUPLICATES, "drop", inserted, passed - inserted)
        self._record_counts([*counts, duplicates], now, app_id, batch_id)
        for name, value in (
            ("rows_read", rows_read),
            ("inserted", inserted),
            ("updated", updated),
            ("quarantined", quarantined),
            ("dups", passed - inserted),
        ):
            self.totals[name] += value
        for count in counts:
            if count.action == "warn":
                self.warnings[count.name] = self.warnings.get(count.name, 0) + count.failed
        log.info(
            "%s batch %d: %d read, %d inserted, %d updated, %d quarantined, %d duplicates",
            target,
            batch_id,
            rows_read,
            inserted,
            updated,
            quarantined,
            passed - inserted,
        )

    def _quarantine(
        self, flagged: FlaggedRows, rows: DataFrame, now: datetime, app_id: str, batch_id: int
    ) -> None:
        append_batch(
            flagged.rejected_rows(rows).select(
                F.lit(self.spec.target).alias("entity"),
                F.col("rule"),
                F.col("reason"),
                F.col(_RAW_RECORD).alias("raw_record"),
                F.col("_source_file"),
                F.col("_ingested_at"),
                F.lit(now).cast("timestamp").alias("quarantined_at"),
                F.lit(self.run_id).alias("run_id"),
            ),
            self.catalog,
            SILVER_QUARANTINE,
            f"{app_id}:quarantine",
            batch_id,
            self.replayed,
        )

    def _upsert(
        self, flagged: FlaggedRows, rows: DataFrame, app_id: str, batch_id: int
    ) -> tuple[int, int]:
        """Deduplicate the passing rows and MERGE them on the key; (inserted, updated).

        The MERGE's commit carries the batch's mark, so a batch an earlier attempt merged but did
        not checkpoint is not merged again but counted as that attempt counted it.
        """
        target = self.spec.target
        helpers = {UNCONVERTED, RESCUED, _RAW_RECORD, MALFORMED_FLAG}
        columns = [f"`{c}`" for c in flagged.columns if c not in helpers]
        deduped = deduplicate(flagged.passed_rows(rows).select(*columns), self.spec)
        create_if_missing(
            self.spark,
            self.catalog,
            target,
            self.spark.createDataFrame([], deduped.schema),
            comment=f"Checked rows of {self.spec.source}, one per {', '.join(self.spec.keys)}.",
        )
        if batch_id == self.replayed and (
            committed_batch(self.spark, self.catalog, target, app_id) >= batch_id
        ):
            return self._earlier_write(app_id, batch_id)
        session = rows.sparkSession
        session.conf.set(USER_METADATA_CONF, batch_metadata(app_id, batch_id))
        # Columns bronze gained since (schema evolution) join the silver table with the MERGE.
        session.conf.set(AUTO_MERGE_CONF, "true")
        try:
            metrics = merge_upsert(
                session,
                self.catalog,
                target,
                deduped,
                list(self.spec.keys),
                update_condition=_newer_and_different(self.spec, deduped.columns),
                read_history=False,
            )
        finally:
            session.conf.unset(USER_METADATA_CONF)
            session.conf.unset(AUTO_MERGE_CONF)
        return metrics.get("numTargetRowsInserted", 0), metrics.get("numTargetRowsUpdated", 0)

    def _earlier_write(self, app_id: str, batch_id: int) -> tuple[int, int]:
        commit = (
            DeltaTable.forPath(self.spark, self.catalog.path(self.spec.target))
            .history()
            .where(F.col("userMetadata") == batch_metadata(app_id, batch_id))
            .select("operationMetrics")
            .first()
        )
        metrics = (commit["operationMetrics"] if commit else None) or {}
        return (
            int(metrics.get("numTargetRowsInserted") or 0),
            int(metrics.get("numTargetRowsUpdated") or 0),
        )

    def _record_counts(
        self, counts: Sequence[ExpectationCount], now: datetime, app_id: str, batch_id: int
    ) -> None:
        rows = [
            (self.run_id, self.spec.target, c.name, c.action, int(c.passed), int(c.failed), now)
            for c in counts
        ]
        append_batch(
            self.spark.createDataFrame(rows, EXPECTATION_RESULTS_SCHEMA),
            self.catalog,
            SILVER_EXPECTATIONS,
            f"{app_id}:expectations",
            batch_id,
            self.replayed,
        )

    def result(self) -> SilverResult:
        """What the micro-batches processed so far did (duplicates counted as key duplicates)."""
        totals = self.totals
        return SilverResult(
            split_name(self.spec.target)[1],
            rows_read=totals["rows_read"],
            inserted=totals["inserted"],
            updated=totals["updated"],
            quarantined=totals["quarantined"],
            key_duplicates=totals["dups"],
            warnings=tuple(sorted(self.warnings.items())),
        )


def build_user_silver(
    spark: SparkSession,
    catalog: TableCatalog,
    spec: SilverSpec,
    checkpoint_dir: Path | str,
    run_id: str | None = None,
) -> SilverResult:
    """MERGE the rows of ``spec.source`` not processed yet into ``spec.target``.

    The result's ``entity`` is the target's name within ``silver``, so it prints as
    ``silver.<name>: ...``.

    Raises:
        ExpectationFailed: an ``expect_or_fail`` rule failed; nothing of that batch was written
            and the next build processes it again.
        SpecError: the spec has no source or an unknown column type, or the source table does
            not exist.
        ValueError: a rule's condition does not resolve against the table's columns.
    """
    if spec.source is None:
        raise SpecError(f"the spec of {spec.target} names no source table")
    check_types(spec)
    if not catalog.exists(spark, spec.source):
        raise SpecError(f"{spec.source} does not exist: ingest its files first")
    ensure_shared_tables(spark, catalog)
    processor = UserSilverBatchProcessor(
        spark,
        catalog,
        spec,
        checkpoint_dir,
        run_id or new_run_id(),
        pending_batch(spark, checkpoint_dir),
    )
    reader = spark.readStream.format("delta")
    if has_commit(spark, catalog, spec.source, 0):
        reader = reader.option("startingVersion", 0)  # an append-only table: read its commits
    run_available_now(reader.load(catalog.path(spec.source)), checkpoint_dir, processor)
    return processor.result()


def user_accounting(spark: SparkSession, catalog: TableCatalog, spec: SilverSpec) -> Accounting:
    """Where the bronze rows of ``spec.source`` went: silver, quarantine or duplicates."""

    def count(name: str | None, where: Column | None = None) -> int:
        if name is None or not catalog.exists(spark, name):
            return 0
        df = catalog.read(spark, name)
        return df.where(where).count() if where is not None else df.count()

    duplicates = 0
    if catalog.exists(spark, SILVER_EXPECTATIONS):
        row = (
            catalog.read(spark, SILVER_EXPECTATIONS)
            .where((F.col("entity") == spec.target) & (F.col("expectation") == DUPLICATES))
            .agg(F.sum("failed").alias("n"))
            .first()
        )
        duplicates = int(row["n"] or 0) if row else 0
    return Accounting(
        entity=spec.target,
        bronze_rows=count(spec.source),
        silver_rows=count(spec.target),
        quarantined_rows=count(SILVER_QUARANTINE, F.col("entity") == spec.target),
        duplicate_rows=duplicates,
    )
