"""Bronze: incremental ingest of the landing files, each file exactly once (Auto Loader pattern).

A Structured Streaming file source watches ``landing/<entity>/``; ``trigger(availableNow=True)``
processes every file not yet recorded in the stream's checkpoint, then stops. Each micro-batch is
appended to ``bronze.<entity>_raw`` exactly once (:func:`lakehouse.platform.tables.append_batch`:
the commit carries the stream's id and the batch id), so a batch replayed after a crash is not
written twice. The micro-batches are processed by a :class:`BronzeBatchIngester`, which holds
their counts for the caller to read once the stream has stopped.

Every contract field is kept as a string (:func:`lakehouse.medallion.contracts.bronze_schema`)
and nothing is ever dropped: a line that does not parse becomes a row with null fields and the
whole line in ``_rescued_data``; a line that parses but carries fields outside the contract
(schema drift) keeps them as a JSON object in ``_rescued_data``. Files are read whole (one record
per line): a daily drop must fit in an executor's memory.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pyspark.errors import StreamingQueryException
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from lakehouse.medallion.contracts import LANDING_FORMATS, RAW_FIELDS, bronze_schema
from lakehouse.platform.catalog import ENTITIES, TableCatalog
from lakehouse.platform.tables import append_batch, create_if_missing

log = logging.getLogger(__name__)

_CORRUPT = "_corrupt_record"
#: A line ends with CRLF, LF or a lone CR (so no line keeps a carriage return).
_LINE_BREAK = r"\r\n|\r|\n"
#: A UTF-8 byte-order mark at the start of a line (of a file, or of files joined together): an
#: encoding marker, not data, so it is removed before the lines are parsed.
_BOM = "(?m)^\ufeff"
_MAX_ARRAY = 2**31 - 2  # the largest length slice() takes: to the end of any array


@dataclass(frozen=True)
class IngestResult:
    """What one ingest of one entity appended to bronze."""

    entity: str
    files: int
    rows: int
    rescued_rows: int


def bronze_table(entity: str) -> str:
    """The bronze table name of ``entity`` (``bronze.<entity>_raw``)."""
    check_entity(entity)
    return f"bronze.{entity}_raw"


def entity_checkpoint(checkpoint_dir: Path | str, entity: str) -> str:
    """The checkpoint of ``entity``'s stream under a stage's ``checkpoint_dir``."""
    return f"{str(checkpoint_dir).rstrip('/')}/{entity}"


def check_entity(entity: str) -> None:
    """Raise ValueError unless ``entity`` is one of the contract's entities."""
    if entity not in RAW_FIELDS:
        raise ValueError(f"unknown entity {entity!r}: expected one of {list(RAW_FIELDS)}")


# --- Parsing (pure transforms) -------------------------------------------------------------------


def _text(value: Column) -> Column:
    """A whole file's text without byte-order marks."""
    return F.regexp_replace(value, _BOM, "")


def _lines(value: Column) -> Column:
    """The non-blank lines of a whole file, without their line breaks and byte-order marks, in
    file order."""
    return F.filter(F.split(_text(value), _LINE_BREAK), _not_blank)


def _not_blank(line: Column) -> Column:
    return F.trim(line) != ""


def file_stats(files: DataFrame, entity: str, rows: bool = True) -> DataFrame:
    """Whole landing files (``value``, ``_source_file``) -> one row: what parsing them gives.

    Columns: ``files``, ``rows`` (the bronze rows :func:`parse_files` makes of them: every
    non-blank line, the header line of a CSV file aside; null unless ``rows``) and ``headers``
    (the distinct CSV headers, empty for JSON). Computed from the files alone, without parsing a
    record. Counting the rows splits every file into lines; the files and headers alone do not
    (a header is read from the head of its file, :func:`_first_line`).
    """
    check_entity(entity)
    csv_format = LANDING_FORMATS[entity] == "csv"
    if csv_format:
        first = _first_line(F.col("value"))
        headers = F.collect_set(F.when(_not_blank(first), first))
    else:
        headers = F.array().cast("array<string>")
    if rows:
        count = F.size(_lines(F.col("value")))
        total = F.sum(F.greatest(count - 1, F.lit(0))) if csv_format else F.sum(count)
        counted = F.coalesce(total, F.lit(0)).cast("long")
    else:
        counted = F.lit(None).cast("long")
    return files.agg(
        F.count(F.lit(1)).alias("files"), counted.alias("rows"), headers.alias("headers")
    )


def _first_line(value: Column) -> Column:
    """The first line of a file that is not blank (as :func:`_lines` splits and filters it).

    Read with one regular expression from the head of the file, without splitting the rest:
    a byte-order mark and lines of spaces only are skipped, then the line runs to the next line
    break (CRLF, LF or CR) or the end. A file of blank lines gives a blank string.
    """
    return F.regexp_extract(value, r"^\ufeff?(?:[ ]*(?:\r\n|\r|\n)\ufeff?)*([^\r\n]*)", 1)


def _all_null(columns: Sequence[Column]) -> Column:
    """True when every column is null (or when there is none)."""
    result: Column = F.lit(True)
    for column in columns:
        result = result & column.isNull()
    return result


def _extras_json(line: Column, extra_keys: Column) -> Column:
    """A JSON object of the extra keys' values, read again from the raw JSON line."""
    values = F.transform(
        extra_keys,
        lambda k: F.call_function("get_json_object", line, F.concat(F.lit("$['"), k, F.lit("']"))),
    )
    return F.to_json(F.map_from_arrays(extra_keys, values))


def parse_json_lines(lines: DataFrame, entity: str) -> DataFrame:
    """Parse JSON lines into the contract fields of ``entity`` (all strings) + ``_rescued_data``.

    ``lines`` has ``value`` and ``_source_file``. Numbers and booleans keep their JSON text, and
    so do nested objects and arrays. A line must hold exactly one JSON object: anything else
    (an array, an object followed by more) is rescued whole.
    """
    fields = RAW_FIELDS[entity]
    ddl = ", ".join([f"`{f}` STRING" for f in fields] + [f"{_CORRUPT} STRING"])
    parsed = F.from_json(
        F.col("value"), ddl, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}
    )
    keys = F.json_object_keys(F.col("value"))
    df = lines.select(
        "value",
        "_source_file",
        parsed.alias("_p"),
        F.array_distinct(F.filter(keys, lambda k: ~k.isin(*fields))).alias("_extra"),
        (keys.isNull()).alias("_bad"),
    )
    bad = (
        F.col("_bad")
        | F.col(f"_p.{_CORRUPT}").isNotNull()
        | _all_null([F.col(f"_p.`{f}`") for f in fields])
        # The parser stops after the first object: "{...}," (a line of a JSON array) or two
        # objects on one line would otherwise pass with what follows the object ignored.
        | ~F.col("value").rlike(r"\}\s*$")
    )
    rescued = (
        F.when(bad, F.col("value"))
        .when(F.size("_extra") > 0, _extras_json(F.col("value"), F.col("_extra")))
        .otherwise(F.lit(None).cast("string"))
    )
    return df.select(
        *[F.when(bad, F.lit(None)).otherwise(F.col(f"_p.`{f}`")).alias(f) for f in fields],
        rescued.alias("_rescued_data"),
        "_source_file",
    )


def _header_columns(header: str) -> list[str]:
    """The column names of a CSV header line; split on commas if ``csv`` cannot read it."""
    try:
        row = next(csv.reader([header]), [])
    except csv.Error:  # a stray carriage return inside the line
        row = header.split(",")
    return [c.strip() for c in row]


def parse_csv_lines(lines: DataFrame, entity: str, headers: Sequence[str]) -> DataFrame:
    """Parse CSV lines under their file's header into the contract fields + ``_rescued_data``.

    ``lines`` has ``value``, ``_source_file`` and ``_header`` (the first line of the file; header
    lines themselves must already be removed); ``headers`` lists the distinct headers present.
    A line whose column count differs from its header is rescued whole, and so is a line that
    repeats its file's header (files joined together); columns a header announces beyond the
    contract (schema drift) go to ``_rescued_data`` as a JSON object.
    """
    fields = RAW_FIELDS[entity]
    parts: list[DataFrame] = []
    for header in headers:
        columns = _header_columns(header)
        ddl = ", ".join([f"c{i} STRING" for i in range(len(columns))] + [f"{_CORRUPT} STRING"])
        # Quotes inside a quoted value are doubled (RFC 4180), as Python's csv writes them.
        options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT, "escape": '"'}
        parsed = F.from_csv(F.col("value"), ddl, options)
        position: dict[str, int] = {}
        for i, name in enumerate(columns):
            position.setdefault(name, i)
        extras = [(n, i) for n, i in position.items() if n and n not in fields]
        sub = lines.where(F.col("_header") == F.lit(header)).select(
            "value", "_source_file", parsed.alias("_p")
        )
        bad = (
            F.col(f"_p.{_CORRUPT}").isNotNull()
            | _all_null([F.col(f"_p.c{position[f]}") for f in fields if f in position])
            | (F.col("value") == F.lit(header))
        )
        drift = (
            F.to_json(F.struct(*[F.col(f"_p.c{i}").alias(n) for n, i in extras]))
            if extras
            else F.lit(None).cast("string")
        )
        values = [
            F.when(bad, F.lit(None)).otherwise(F.col(f"_p.c{position[f]}"))
            if f in position
            else F.lit(None).cast("string")
            for f in fields
        ]
        parts.append(
            sub.select(
                *[v.cast("string").alias(f) for v, f in zip(values, fields, strict=True)],
                F.when(bad, F.col("value")).otherwise(drift).alias("_rescued_data"),
                "_source_file",
            )
        )
    if not parts:
        nothing = F.lit(None).cast("string")
        return lines.select(
            *[nothing.alias(f) for f in fields], nothing.alias("_rescued_data"), "_source_file"
        ).limit(0)
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part)
    return result


def parse_files(
    files: DataFrame,
    entity: str,
    ingested_at: datetime,
    headers: Sequence[str] | None = None,
) -> DataFrame:
    """Whole landing files (``value``, ``_source_file``) -> bronze rows of ``entity``.

    ``headers`` lists the distinct CSV headers of ``files`` when the caller knows them already
    (see :func:`file_stats`); otherwise they are collected from ``files``.
    """
    lines = _lines(F.col("value"))
    if LANDING_FORMATS[entity] == "csv":
        # The header of a file is its first line: each row takes it from its own file's lines.
        data = files.select(
            "_source_file",
            F.try_element_at(lines, F.lit(1)).alias("_header"),
            F.explode(F.slice(lines, 2, _MAX_ARRAY)).alias("value"),
        )
        if headers is None:
            row = file_stats(files, entity, rows=False).first()
            headers = row["headers"] if row is not None else []
        parsed = parse_csv_lines(data, entity, sorted(set(headers)))
    else:
        values = files.select("_source_file", F.explode(lines).alias("value"))
        parsed = parse_json_lines(values, entity)
    schema = bronze_schema(entity)
    return parsed.withColumn("_ingested_at", F.lit(ingested_at).cast("timestamp")).select(
        *[F.col(f.name) for f in schema.fields]
    )


# --- Streaming helpers ---------------------------------------------------------------------------


def stream_app_id(checkpoint_dir: Path | str, table: str) -> str:
    """The writer id of a stream's appends to ``table``: the stream's persistent id.

    The id is read from the checkpoint's ``metadata`` file, so it survives restarts and changes
    when the checkpoint is reset; for a non-local checkpoint it falls back to the path.
    """
    metadata = Path(str(checkpoint_dir)) / "metadata"
    try:
        query_id = json.loads(metadata.read_text().splitlines()[0])["id"]
    except (OSError, ValueError, KeyError, IndexError):
        query_id = str(checkpoint_dir)
    return f"{table}:{query_id}"


def pending_batch(spark: SparkSession, checkpoint_dir: Path | str) -> int | None:
    """The micro-batch the stream at ``checkpoint_dir`` started and did not finish when it last
    stopped; None when it finished every batch it started (or never ran).

    Structured Streaming records a batch's offsets (``offsets/<id>``) before running it and its
    completion (``commits/<id>``) after; on restart it runs a started, unfinished batch again,
    with the same id. Call this before starting the stream: during a run the batch in progress
    looks the same.
    """
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    conf = spark.sparkContext._jsc.hadoopConfiguration()

    def newest(folder: str) -> int:
        path = jvm.org.apache.hadoop.fs.Path(f"{str(checkpoint_dir).rstrip('/')}/{folder}")
        fs = path.getFileSystem(conf)
        if not fs.exists(path):
            return -1
        names = (status.getPath().getName() for status in fs.listStatus(path))
        return max((int(name) for name in names if name.isdigit()), default=-1)

    started = newest("offsets")
    return started if started > newest("commits") else None


class _KeepingError:
    """A ``foreachBatch`` function that keeps the first exception ``process`` raised, so that
    :func:`run_available_now` re-raises it as itself rather than wrapped by the engine."""

    def __init__(self, process: Callable[[DataFrame, int], None]) -> None:
        self.process = process
        self.error: Exception | None = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        try:
            self.process(batch, batch_id)
        except Exception as exc:
            if self.error is None:
                self.error = exc
            raise


def run_available_now(
    stream: DataFrame,
    checkpoint_dir: Path | str,
    process: Callable[[DataFrame, int], None],
) -> None:
    """Run ``process`` on every micro-batch of ``stream`` available now, then stop.

    An exception raised by ``process`` is re-raised as itself (not wrapped by the streaming
    engine); the failed batch is not committed to the checkpoint, so the next run replays it.
    """
    guarded = _KeepingError(process)
    query = (
        stream.writeStream.foreachBatch(guarded)
        .option("checkpointLocation", str(checkpoint_dir))
        .trigger(availableNow=True)
        .start()
    )
    try:
        query.awaitTermination()
    except StreamingQueryException:
        if guarded.error is not None:
            raise guarded.error from None
        raise
    failure = query.exception()
    if failure is not None:
        if guarded.error is not None:
            raise guarded.error
        raise RuntimeError(f"stream with checkpoint {checkpoint_dir} failed: {failure}")


# --- Ingest --------------------------------------------------------------------------------------


def _local(path: Path | str) -> Path | None:
    text = str(path)
    if "://" in text and not text.startswith("file:"):
        return None
    return Path(text.removeprefix("file://").removeprefix("file:"))


class BronzeBatchIngester:
    """The ``foreachBatch`` function of a bronze ingest: parses the landing files of a
    micro-batch and appends their rows to ``bronze.<entity>_raw``, exactly once.

    The counts are held by the object (read :meth:`result` once the stream has stopped), not by
    variables of the caller, so they arrive wherever the object is asked for them.

    Args:
        catalog: where ``bronze.<entity>_raw`` lives.
        entity: the entity ingested.
        checkpoint_dir: the stream's checkpoint (its id marks the appends).
        replayed: the batch the stream left unfinished when it last stopped
            (:func:`pending_batch`), the only one an earlier attempt may have appended.
    """

    def __init__(
        self,
        catalog: TableCatalog,
        entity: str,
        checkpoint_dir: Path | str,
        replayed: int | None,
    ) -> None:
        self.catalog = catalog
        self.entity = entity
        self.table = bronze_table(entity)
        self.checkpoint_dir = checkpoint_dir
        self.replayed = replayed
        self.files = self.rows = self.rescued = 0

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        """Append one micro-batch of whole landing files and add up its counts."""
        # A light pass over the files counts them and reads the CSV headers from their heads; a
        # second parses and appends them, counting the rows and the rescued rows on the way.
        stats = file_stats(batch, self.entity, rows=False).first()
        assert stats is not None
        files = int(stats["files"])
        if files == 0:
            return
        n_rows, n_rescued = self._append(batch, batch_id, stats["headers"])
        self.files += files
        self.rows += n_rows
        self.rescued += n_rescued
        log.info(
            "%s batch %d: %d file(s), %d row(s), %d rescued",
            self.table,
            batch_id,
            files,
            n_rows,
            n_rescued,
        )

    def _append(self, batch: DataFrame, batch_id: int, headers: Sequence[str]) -> tuple[int, int]:
        """Parse and append the files of ``batch``; (rows, rescued rows) appended."""
        observed = Observation(f"{self.table}:{batch_id}")
        rows = parse_files(batch, self.entity, datetime.now(UTC), headers=headers)
        counted = rows.observe(
            observed,
            F.count(F.lit(1)).alias("rows"),
            F.count("_rescued_data").alias("rescued"),
        )
        # The stream's id is read per batch: the checkpoint's metadata exists once it started.
        writer = stream_app_id(self.checkpoint_dir, self.table)
        if append_batch(counted, self.catalog, self.table, writer, batch_id, self.replayed):
            metrics = observed.get
            return int(metrics["rows"]), int(metrics["rescued"])
        # An earlier attempt appended this batch, and stopped before the stream's checkpoint
        # recorded it. Its rows are in bronze already: count them from the files.
        log.info("%s batch %d was appended by an earlier attempt", self.table, batch_id)
        full = file_stats(batch, self.entity).first()
        assert full is not None
        return int(full["rows"]), 0

    def result(self) -> IngestResult:
        """What the micro-batches processed so far appended."""
        return IngestResult(self.entity, self.files, self.rows, self.rescued)


def ingest_entity(
    spark: SparkSession,
    catalog: TableCatalog,
    entity: str,
    landing_dir: Path | str,
    checkpoint_dir: Path | str,
) -> IngestResult:
    """Append the landing files of ``entity`` not ingested yet to ``bronze.<entity>_raw``.

    Reads ``landing_dir/<entity>/*.json|csv`` (format from the landing contract) with a file
    stream checkpointed at ``checkpoint_dir``; a re-run with no new file writes nothing.
    The table is created (empty) and registered even when no file has landed yet.

    Raises:
        ValueError: ``entity`` is not part of the contract.
        FileNotFoundError: ``landing_dir`` does not exist.
    """
    check_entity(entity)
    table = bronze_table(entity)
    schema = bronze_schema(entity)
    create_if_missing(
        spark,
        catalog,
        table,
        spark.createDataFrame([], schema),
        comment=f"Raw {entity} records as they landed, each landing file ingested once.",
    )
    source = f"{str(landing_dir).rstrip('/')}/{entity}"
    local_landing = _local(landing_dir)
    if local_landing is not None:
        if not local_landing.is_dir():
            raise FileNotFoundError(f"landing folder {landing_dir} does not exist")
        if not (local_landing / entity).is_dir():
            log.warning("no landing folder for %s at %s: nothing to ingest", entity, source)
            return IngestResult(entity, 0, 0, 0)

    ext = LANDING_FORMATS[entity]
    stream = (
        spark.readStream.format("text")
        .option("wholetext", "true")
        .option("pathGlobFilter", f"*.{ext}")
        .load(source)
        .select("value", F.col("_metadata.file_path").alias("_source_file"))
    )
    ingester = BronzeBatchIngester(
        catalog, entity, checkpoint_dir, pending_batch(spark, checkpoint_dir)
    )
    run_available_now(stream, checkpoint_dir, ingester)
    result = ingester.result()
    if result.rescued_rows:
        log.warning("%s: %d row(s) with rescued data", table, result.rescued_rows)
    log.info("ingested %s: %d new file(s), %d row(s)", table, result.files, result.rows)
    return result


def ingest_all(
    spark: SparkSession,
    catalog: TableCatalog,
    landing_dir: Path | str,
    checkpoint_dir: Path | str,
    entities: Sequence[str] = ENTITIES,
) -> list[IngestResult]:
    """Ingest every entity, each with its own checkpoint ``checkpoint_dir/<entity>``."""
    for entity in entities:
        check_entity(entity)
    return [
        ingest_entity(
            spark, catalog, entity, landing_dir, entity_checkpoint(checkpoint_dir, entity)
        )
        for entity in entities
    ]
