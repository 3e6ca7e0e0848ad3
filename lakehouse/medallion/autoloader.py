"""Bring your own data: a folder of CSV, JSON or Parquet files into bronze, each file once.

This is Databricks Auto Loader's pattern on the platform's building blocks (the ones the
platform's own bronze uses, :mod:`lakehouse.medallion.bronze`): a Structured Streaming file
source with a checkpoint and ``trigger(availableNow=True)`` (:func:`run_available_now`) lists the
files not ingested yet, and each micro-batch is appended exactly once
(:func:`lakehouse.platform.tables.append_batch`, marked with the stream's id and the batch id).

The stream lists the files only (``binaryFile`` with the path selected, so their bytes are not
read); each micro-batch then reads its files with Spark's own reader of the format, so every
option of that reader applies and Parquet keeps its types.

* **Schema**: inferred from the files of the first micro-batch and recorded under the checkpoint,
  as Auto Loader records it under ``cloudFiles.schemaLocation``: ``<checkpoint>/_schemas/<n>``,
  one JSON file per version. CSV and JSON columns are strings (Auto Loader's default without
  ``inferColumnTypes``), so a value of an unexpected type never breaks a row; Parquet columns
  keep their file types. Schema hints (``"amount double, day date"``, Auto Loader's
  ``cloudFiles.schemaHints``) set the type of the columns they name.
* **Schema evolution**: a later file with a column the recorded schema lacks either adds it (mode
  ``addNewColumns``, the default: a new schema version, the Delta table's schema merged) or
  keeps it in ``_rescued_data`` as a JSON object (mode ``rescue``: the schema stays fixed).
* **Bad records**: a CSV or JSON line that does not parse under the schema (wrong column count,
  not JSON, a value that does not fit a hinted type) becomes a row with every column null and
  the whole line in ``_rescued_data``; nothing is dropped.
* ``_source_file`` and ``_ingested_at`` say where and when each row came in.

CSV files are read per header: files whose headers differ (a column added half-way) are each
read under their own header, by name, not by position.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StringType, StructField, StructType

from lakehouse.medallion.bronze import pending_batch, run_available_now, stream_app_id
from lakehouse.platform.catalog import TableCatalog, split_name
from lakehouse.platform.tables import append_batch, create_if_missing

log = logging.getLogger(__name__)

#: The file formats a folder can hold.
FORMATS: tuple[str, ...] = ("csv", "json", "parquet")
#: What to do with a column the recorded schema lacks (Auto Loader's ``schemaEvolutionMode``).
EVOLUTION_MODES: tuple[str, ...] = ("addNewColumns", "rescue")
RESCUED = "_rescued_data"
SOURCE_FILE = "_source_file"
INGESTED_AT = "_ingested_at"
#: The columns the ingest adds to every row, in table order after the data columns.
METADATA_COLUMNS: tuple[str, ...] = (RESCUED, SOURCE_FILE, INGESTED_AT)
#: The session setting that lets a Delta append add the columns its data frame brings.
AUTO_MERGE_CONF = "spark.databricks.delta.schema.autoMerge.enabled"
#: Folder of the recorded schema versions under the stream's checkpoint.
SCHEMAS_FOLDER = "_schemas"

_CORRUPT = "_corrupt_record"
#: Characters Delta does not accept in a column name (without column mapping).
_INVALID_NAME = re.compile(r"[ ,;{}()\n\t=]")
_FIRST_LINE = r"^\ufeff?([^\r\n]*)"
#: The schema of Spark's ``binaryFile`` source, which a stream must be given.
_LISTING_SCHEMA = "path STRING, modificationTime TIMESTAMP, length BIGINT, content BINARY"


@dataclass(frozen=True)
class AutoLoaderResult:
    """What one ingest of one folder appended to its bronze table."""

    table: str
    files: int
    rows: int
    rescued_rows: int
    new_columns: tuple[str, ...]
    schema_version: int

    def __str__(self) -> str:
        added = ", ".join(self.new_columns) if self.new_columns else "none"
        return (
            f"{self.table}: {self.files} new file(s), {self.rows} row(s), "
            f"{self.rescued_rows} rescued, new columns: {added}"
        )


# --- Schema hints and names (pure) ---------------------------------------------------------------


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses and angle brackets (``decimal(10,2)`` stays whole)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char in "(<":
            depth += 1
        elif char in ")>":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


class SchemaHintError(ValueError):
    """Schema hints that cannot be read: an entry without a type, or a type Spark does not know."""


def split_schema_hints(text: str | None) -> list[tuple[str, str]]:
    """``"amount double, day date"`` -> ``[("amount", "double"), ("day", "date")]``.

    Column names may be quoted with backticks. Checks the form only (no Spark needed); the
    types are read by :func:`parse_schema_hints`.

    Raises:
        SchemaHintError: an entry is not ``<column> <type>``.
    """
    hints = []
    for entry in _split_top_level(text or ""):
        match = re.fullmatch(r"(`[^`]+`|\S+)\s+(.+)", entry)
        if match is None:
            raise SchemaHintError(f"schema hint {entry!r} is not '<column> <type>'")
        hints.append((match.group(1).strip("`"), match.group(2).strip()))
    return hints


def parse_schema_hints(text: str | None) -> dict[str, DataType]:
    """``"amount double, day date"`` -> ``{"amount": DoubleType(), "day": DateType()}``.

    Needs a running Spark session (Spark reads the types).

    Raises:
        SchemaHintError: an entry without a type, or a type Spark does not know.
    """
    hints: dict[str, DataType] = {}
    for name, type_text in split_schema_hints(text):
        try:
            hints[name] = DataType.fromDDL(type_text)
        except Exception as exc:
            raise SchemaHintError(f"schema hint {name!r}: unknown type {type_text!r}") from exc
    return hints


def column_names(header: Sequence[str]) -> list[str]:
    """Column names Delta accepts for a file's header: blanks named ``_c<i>`` (as Spark names
    them), characters Delta rejects replaced by ``_``, repeated names numbered."""
    names: list[str] = []
    seen: set[str] = set()
    for i, raw in enumerate(header):
        name = _INVALID_NAME.sub("_", raw.strip()) or f"_c{i}"
        base, n = name, 1
        while name.lower() in seen:
            n += 1
            name = f"{base}_{n}"
        seen.add(name.lower())
        names.append(name)
    return names


def _csv_header(line: str) -> list[str]:
    """The fields of a CSV header line (split on commas if ``csv`` cannot read it)."""
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        return line.split(",")


# --- The recorded schema -------------------------------------------------------------------------


@dataclass
class RecordedSchema:
    """The data columns of a bronze table fed by the Auto Loader pattern, and its hints.

    Attributes:
        version: the schema version (its file ``<checkpoint>/_schemas/<version>``); -1 before the
            first micro-batch.
        columns: the data columns, in table order (the metadata columns come after them).
        hints: the schema hints the columns were typed with.
    """

    version: int = -1
    columns: list[StructField] = field(default_factory=list)
    hints: dict[str, DataType] = field(default_factory=dict)

    def find(self, name: str) -> StructField | None:
        """The column called ``name``, compared without case (as Spark and Delta compare)."""
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)

    def type_for(self, name: str, inferred: DataType) -> DataType:
        """The type a new column ``name`` takes: its hint, else what the files hold."""
        hint = next((t for n, t in self.hints.items() if n.lower() == name.lower()), None)
        return hint or inferred

    def to_json(self, fmt: str) -> str:
        """The schema file's text."""
        return json.dumps(
            {
                "version": self.version,
                "format": fmt,
                "columns": StructType(self.columns).jsonValue(),
                "hints": {n: t.simpleString() for n, t in self.hints.items()},
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> RecordedSchema:
        """Read a schema file's text."""
        data = json.loads(text)
        columns = StructType.fromJson(data["columns"]).fields
        hints = {n: DataType.fromDDL(t) for n, t in data.get("hints", {}).items()}
        return cls(int(data["version"]), list(columns), hints)


class SchemaStore:
    """The schema versions of one ingest, as files under its checkpoint (any Hadoop path)."""

    def __init__(self, spark: SparkSession, checkpoint_dir: Path | str) -> None:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._jvm = jvm
        self._folder = jvm.org.apache.hadoop.fs.Path(
            f"{str(checkpoint_dir).rstrip('/')}/{SCHEMAS_FOLDER}"
        )
        self._fs = self._folder.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())

    def latest(self) -> RecordedSchema | None:
        """The newest recorded schema, or None before the first micro-batch."""
        if not self._fs.exists(self._folder):
            return None
        versions = [
            int(s.getPath().getName())
            for s in self._fs.listStatus(self._folder)
            if s.getPath().getName().isdigit()
        ]
        if not versions:
            return None
        path = self._jvm.org.apache.hadoop.fs.Path(self._folder, str(max(versions)))
        stream = self._fs.open(path)
        try:
            text = self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()
        return RecordedSchema.from_json(str(text))

    def write(self, schema: RecordedSchema, fmt: str) -> None:
        """Record ``schema`` as its version's file (replacing one an interrupted run wrote)."""
        self._fs.mkdirs(self._folder)
        path = self._jvm.org.apache.hadoop.fs.Path(self._folder, str(schema.version))
        out = self._fs.create(path, True)
        try:
            out.write(bytearray(schema.to_json(fmt).encode("utf-8")))
        finally:
            out.close()


# --- Reading one micro-batch's files -------------------------------------------------------------


@dataclass(frozen=True)
class _FileGroup:
    """Files read together: the same columns (a CSV header), read by name."""

    paths: tuple[str, ...]
    columns: tuple[tuple[str, DataType], ...]  # (name in the file's read schema, inferred type)


def _csv_groups(spark: SparkSession, paths: Sequence[str]) -> list[_FileGroup]:
    """The batch's CSV files grouped by header, in the order of their first file."""
    heads = (
        spark.read.format("text")
        .option("wholetext", "true")
        .load(list(paths))
        .select(
            F.col("_metadata.file_path").alias("path"),
            F.regexp_extract("value", _FIRST_LINE, 1).alias("header"),
        )
        .collect()
    )
    by_header: dict[str, list[str]] = {}
    for row in sorted(heads, key=lambda r: r["path"]):
        if row["header"].strip():  # an empty file adds nothing
            by_header.setdefault(row["header"], []).append(row["path"])
    return [
        _FileGroup(
            tuple(files), tuple((n, StringType()) for n in column_names(_csv_header(header)))
        )
        for header, files in by_header.items()
    ]


def _json_groups(spark: SparkSession, paths: Sequence[str]) -> list[_FileGroup]:
    """The batch's JSON files as one group with the top-level keys they hold."""
    inferred = (
        spark.read.format("json")
        .option("primitivesAsString", "true")
        .option("columnNameOfCorruptRecord", _CORRUPT)
        .load(list(paths))
        .schema
    )
    columns = tuple((f.name, StringType()) for f in inferred.fields if f.name != _CORRUPT)
    return [_FileGroup(tuple(paths), columns)]


def _parquet_groups(spark: SparkSession, paths: Sequence[str]) -> list[_FileGroup]:
    """The batch's Parquet files as one group with their merged schema."""
    inferred = spark.read.option("mergeSchema", "true").parquet(*paths).schema
    return [_FileGroup(tuple(paths), tuple((f.name, f.dataType) for f in inferred.fields))]


def _groups(spark: SparkSession, fmt: str, paths: Sequence[str]) -> list[_FileGroup]:
    if fmt == "csv":
        return _csv_groups(spark, paths)
    if fmt == "json":
        return _json_groups(spark, paths)
    return _parquet_groups(spark, paths)


def evolve(
    schema: RecordedSchema, groups: Iterable[_FileGroup], mode: str
) -> tuple[RecordedSchema, list[str]]:
    """The schema after a batch's files: (schema, the columns added).

    The first batch defines every column; later ones add the columns the schema lacks in mode
    ``addNewColumns`` and none in mode ``rescue``. Each column takes its hint's type if it has
    one. A changed schema has the next version.
    """
    first = schema.version < 0 or not schema.columns
    columns = list(schema.columns)
    added: list[str] = []
    for group in groups:
        for name, inferred in group.columns:
            probe = RecordedSchema(columns=columns)
            if probe.find(name) is not None or name.lower() in (
                m.lower() for m in METADATA_COLUMNS
            ):
                continue
            if not first and mode == "rescue":
                continue
            columns.append(StructField(name, schema.type_for(name, inferred), True))
            added.append(name)
    if not first and not added:
        return schema, []
    return RecordedSchema(schema.version + 1, columns, dict(schema.hints)), added


def _read_group(
    session: SparkSession, fmt: str, group: _FileGroup, schema: RecordedSchema
) -> DataFrame:
    """One group's rows with the schema's data columns, ``_rescued_data`` and ``_source_file``.

    A row that did not parse has null columns and its line in ``_rescued_data``; columns the
    schema lacks (mode ``rescue``) go to ``_rescued_data`` as a JSON object.
    """
    known = [(name, schema.find(name)) for name, _ in group.columns]
    extras = [name for name, column in known if column is None]
    file_type = {name: t for name, t in group.columns}
    corrupt: Column = F.lit(None).cast("string")
    if fmt == "parquet":
        raw = session.read.parquet(*group.paths)
    else:
        fields = [
            StructField(name, column.dataType if column else file_type[name], True)
            for name, column in known
        ]
        reader = (
            session.read.format(fmt)
            .schema(StructType([*fields, StructField(_CORRUPT, StringType(), True)]))
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", _CORRUPT)
        )
        if fmt == "csv":
            # Quotes inside a quoted value are doubled (RFC 4180), as most writers write them.
            reader = reader.option("header", "true").option("escape", '"')
        raw = reader.load(list(group.paths))
        corrupt = F.col(_CORRUPT)
    present = {column.name.lower(): name for name, column in known if column is not None}
    data = []
    for column in schema.columns:
        source = present.get(column.name.lower())
        value = F.col(f"`{source}`").cast(column.dataType) if source else F.lit(None)
        data.append(F.when(corrupt.isNull(), value).cast(column.dataType).alias(column.name))
    if extras:
        extra_json = F.to_json(F.struct(*[F.col(f"`{n}`").cast("string").alias(n) for n in extras]))
        rescued = F.coalesce(corrupt, F.when(corrupt.isNull(), extra_json))
    else:
        rescued = corrupt
    return raw.select(
        *data,
        rescued.cast("string").alias(RESCUED),
        F.col("_metadata.file_path").alias(SOURCE_FILE),
    )


# --- The micro-batch function and the ingest -----------------------------------------------------


class AutoLoaderBatchIngester:
    """The ``foreachBatch`` function of one folder's ingest: reads the files a micro-batch
    lists, evolves and records the schema, appends the rows to the bronze table exactly once.

    The counts are held by the object (read :meth:`result` once the stream has stopped).

    Args:
        spark: the session of the ingest (the table is created and registered through it).
        catalog: where the bronze table lives.
        table: the bronze table (``bronze.<name>``).
        fmt: ``csv``, ``json`` or ``parquet``.
        checkpoint_dir: the stream's checkpoint (its id marks the appends; the schema files
            live under it).
        schemas: the schema store under the checkpoint.
        schema: the schema recorded so far (version -1 before the first batch).
        mode: ``addNewColumns`` or ``rescue``.
        replayed: the batch the stream left unfinished when it last stopped.
    """

    def __init__(
        self,
        spark: SparkSession,
        catalog: TableCatalog,
        table: str,
        fmt: str,
        checkpoint_dir: Path | str,
        schemas: SchemaStore,
        schema: RecordedSchema,
        mode: str,
        replayed: int | None,
    ) -> None:
        self.spark = spark
        self.catalog = catalog
        self.table = table
        self.fmt = fmt
        self.checkpoint_dir = checkpoint_dir
        self.schemas = schemas
        self.schema = schema
        self.mode = mode
        self.replayed = replayed
        self.files = self.rows = self.rescued = 0
        self.new_columns: list[str] = []

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        """Read, record and append one micro-batch of files."""
        paths = sorted({row["path"] for row in batch.select("path").collect()})
        if not paths:
            return
        session = batch.sparkSession
        groups = _groups(session, self.fmt, paths)
        schema, added = evolve(self.schema, groups, self.mode)
        if schema is not self.schema:
            self.schemas.write(schema, self.fmt)
        if self.schema.version < 0:
            added = []  # the first files define the schema: nothing is new yet
        elif added:
            log.warning("%s: new column(s) %s added to the schema", self.table, added)
        self.schema = schema
        rows = rescued = 0
        if groups:
            rows, rescued = self._append(session, groups, batch_id)
        self.files += len(paths)
        self.rows += rows
        self.rescued += rescued
        self.new_columns += [c for c in added if c not in self.new_columns]
        log.info(
            "%s batch %d: %d file(s), %d row(s), %d rescued",
            self.table,
            batch_id,
            len(paths),
            rows,
            rescued,
        )

    def _append(
        self, session: SparkSession, groups: Sequence[_FileGroup], batch_id: int
    ) -> tuple[int, int]:
        """Append the groups' rows; (rows, rescued rows) appended."""
        parts = [_read_group(session, self.fmt, g, self.schema) for g in groups]
        rows = parts[0]
        for part in parts[1:]:
            rows = rows.unionByName(part)
        rows = rows.withColumn(INGESTED_AT, F.lit(datetime.now(UTC)).cast("timestamp"))
        created = create_if_missing(
            self.spark,
            self.catalog,
            self.table,
            self.spark.createDataFrame([], rows.schema),
            comment=f"Raw {self.fmt} files as they landed, each file ingested once.",
        )
        observed = Observation(f"{self.table}:{batch_id}")
        counted = rows.observe(
            observed, F.count(F.lit(1)).alias("rows"), F.count(RESCUED).alias("rescued")
        )
        writer = stream_app_id(self.checkpoint_dir, self.table)
        # New columns join the table's schema with the append (Delta's schema merge).
        session.conf.set(AUTO_MERGE_CONF, "true")
        try:
            appended = append_batch(
                counted, self.catalog, self.table, writer, batch_id, self.replayed
            )
        finally:
            session.conf.unset(AUTO_MERGE_CONF)
        if created:
            log.info("created %s with columns %s", self.table, rows.columns)
        if not appended:
            log.info("%s batch %d was appended by an earlier attempt", self.table, batch_id)
            return 0, 0
        metrics = observed.get
        return int(metrics["rows"]), int(metrics["rescued"])

    def result(self) -> AutoLoaderResult:
        """What the micro-batches processed so far appended."""
        return AutoLoaderResult(
            self.table,
            self.files,
            self.rows,
            self.rescued,
            tuple(self.new_columns),
            self.schema.version,
        )


def check_table(table: str) -> None:
    """Raise ValueError unless ``table`` is a ``bronze.<name>`` table name."""
    schema, _ = split_name(table)
    if schema != "bronze":
        raise ValueError(f"ingest writes a bronze table (bronze.<name>), got {table!r}")


def ingest_folder(
    spark: SparkSession,
    catalog: TableCatalog,
    source_dir: Path | str,
    table: str,
    fmt: str,
    checkpoint_dir: Path | str,
    schema_hints: str | None = None,
    evolution: str = "addNewColumns",
    glob: str | None = None,
) -> AutoLoaderResult:
    """Append the files of ``source_dir`` not ingested yet to ``table``.

    Reads the files matching ``glob`` (default ``*.<fmt>``) with a file stream checkpointed at
    ``checkpoint_dir``; a re-run with no new file writes nothing. The table is created by the
    first micro-batch, with the schema inferred from its files.

    Raises:
        SchemaHintError: a schema hint that cannot be read.
        ValueError: a bad table name, format or evolution mode.
        FileNotFoundError: a local ``source_dir`` that does not exist.
    """
    check_table(table)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if evolution not in EVOLUTION_MODES:
        raise ValueError(f"schema evolution must be one of {list(EVOLUTION_MODES)}")
    hints = parse_schema_hints(schema_hints)
    source = str(source_dir)
    if "://" not in source and not Path(source).is_dir():
        raise FileNotFoundError(f"source folder {source} does not exist")
    schemas = SchemaStore(spark, checkpoint_dir)
    schema = schemas.latest() or RecordedSchema()
    if hints and schema.version < 0:
        schema = RecordedSchema(-1, [], hints)
    elif hints:
        # Hints of later runs type the columns still to come; recorded columns keep their type.
        schema = RecordedSchema(schema.version, schema.columns, {**schema.hints, **hints})
    stream = (
        spark.readStream.format("binaryFile")
        .schema(_LISTING_SCHEMA)
        .option("pathGlobFilter", glob or f"*.{fmt}")
        .load(source)
        .select("path")
    )
    ingester = AutoLoaderBatchIngester(
        spark,
        catalog,
        table,
        fmt,
        checkpoint_dir,
        schemas,
        schema,
        evolution,
        pending_batch(spark, checkpoint_dir),
    )
    run_available_now(stream, checkpoint_dir, ingester)
    result = ingester.result()
    if result.rescued_rows:
        log.warning("%s: %d row(s) with rescued data", table, result.rescued_rows)
    log.info("%s", result)
    return result
