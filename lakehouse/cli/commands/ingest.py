"""``lakehouse ingest``: any folder of files into bronze (Auto Loader's pattern), then silver."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lakehouse.medallion.autoloader import (
    EVOLUTION_MODES,
    FORMATS,
    SchemaHintError,
    check_table,
    split_schema_hints,
)
from lakehouse.medallion.expectations import ExpectationFailed
from lakehouse.medallion.user_silver import SilverSpec, SpecError, load_spec
from lakehouse.platform.locks import EXIT_BUSY, LockBusy

EPILOG = f"""\
Each file is ingested once: the stream's checkpoint is
$LAKEHOUSE_HOME/checkpoints/ingest/<table>, and the schema inferred from the first files is
recorded under it (_schemas/<version>). CSV and JSON columns are strings unless
--schema-hints types them. A column that later files add joins the table (a new schema version)
or, with --schema-evolution rescue, stays in _rescued_data as JSON; a line that does not parse
is kept whole in _rescued_data. Every row has _source_file and _ingested_at.

--silver-spec FILE (YAML) builds a silver table from the bronze rows not processed yet:
  target: silver.orders
  keys: [order_id]
  sequence_by: updated_at          # optional: the later record of a key wins
  columns: {{order_id: string, amount: double, updated_at: timestamp}}   # optional
  expect:          {{known_status: "status IN ('NEW', 'PAID')"}}          # warn
  expect_or_drop:  {{positive_amount: "amount > 0"}}   # to silver.quarantine with the rule
  expect_or_fail:  {{has_id: "order_id IS NOT NULL"}}  # stops the build, commits nothing
Rows are MERGEd on the keys; every bronze row ends up in silver, in silver.quarantine or
counted as a duplicate (silver.expectation_results).

Exit status: 0 done; 1 failed (one line, the traceback in $LAKEHOUSE_HOME/logs/); 2 usage;
3 an expect_or_fail rule failed (nothing of its batch committed); {EXIT_BUSY} another run
ingests the same table.
"""


def bronze_name(text: str) -> str:
    """A ``--table`` value: ``bronze.<name>``."""
    try:
        check_table(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def source_folder(text: str) -> str:
    """A SOURCE_DIR value: an existing local folder, or a URI (s3a://...)."""
    if "://" not in text and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no folder {text}")
    return text if "://" in text else str(Path(text).resolve())


def schema_hints(text: str) -> str:
    """A ``--schema-hints`` value: ``"col type, col type"`` (types are checked by Spark)."""
    try:
        split_schema_hints(text)
    except SchemaHintError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def silver_spec(text: str) -> SilverSpec:
    """A ``--silver-spec`` value: a YAML spec file."""
    try:
        return load_spec(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def wait_seconds(text: str) -> float:
    """A ``--wait`` value: seconds, zero or more."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from exc
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``ingest`` command."""
    parser = sub.add_parser(
        "ingest",
        help="ingest a folder of csv, json or parquet files into bronze, each file once",
        description="Ingest the new files of SOURCE_DIR into a bronze table (the Auto Loader "
        "pattern), and optionally build a silver table from it by a spec of expectations.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source_dir", metavar="SOURCE_DIR", type=source_folder)
    parser.add_argument(
        "--table", required=True, type=bronze_name, metavar="bronze.NAME", help="bronze table"
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="the files' format")
    parser.add_argument(
        "--schema-hints",
        type=schema_hints,
        metavar='"COL TYPE, ..."',
        help='types of named columns, for example "amount double, day date"',
    )
    parser.add_argument(
        "--schema-evolution",
        choices=EVOLUTION_MODES,
        default="addNewColumns",
        help="a column later files add: add it to the table (default) or rescue it",
    )
    parser.add_argument(
        "--glob", metavar="PATTERN", help="file names to read (default: *.<format>)"
    )
    parser.add_argument(
        "--silver-spec", type=silver_spec, metavar="FILE", help="build silver by this YAML spec"
    )
    parser.add_argument(
        "--wait",
        type=wait_seconds,
        default=0.0,
        metavar="SECONDS",
        help=f"wait for a run ingesting the same table (default 0: exit {EXIT_BUSY} at once)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Ingest, build silver if asked, print the summary."""
    from lakehouse.medallion.byo import IngestRequest, ingest_lock, run_ingest
    from lakehouse.platform.session import job_session
    from lakehouse.platform.settings import load_settings

    request = IngestRequest(
        source_dir=args.source_dir,
        table=args.table,
        fmt=args.format,
        schema_hints=args.schema_hints,
        evolution=args.schema_evolution,
        glob=args.glob,
        spec=args.silver_spec,
    )
    settings = load_settings()
    try:
        with (
            ingest_lock(settings, args.table, args.wait),
            job_session("lakehouse-ingest", settings) as job,
        ):
            report = run_ingest(job.spark, job.settings, job.catalog, request)
    except LockBusy as exc:
        print(f"error: {exc}; not started (--wait SECONDS to wait for it)", file=sys.stderr)
        return EXIT_BUSY
    except ExpectationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (SchemaHintError, SpecError) as exc:
        print(f"error: lakehouse ingest: {exc}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    return 0
