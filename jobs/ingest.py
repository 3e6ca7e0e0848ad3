"""Ingest a folder of files into a bronze table, each file once; optionally build its silver.

Run it with spark-submit (from the repository, with the virtual env active)::

    spark-submit --jars "$(lakehouse jars)" jobs/ingest.py SOURCE_DIR --table bronze.NAME \\
        --format csv|json|parquet [--schema-hints "col type, ..."] [--silver-spec FILE]

On a cluster add ``--master spark://HOST:7077``. The flags are those of ``lakehouse ingest``
(``--help`` lists them). A re-run with no new file ingests nothing. Exit status: 0 done; 1 failed
(one line on stderr); 2 usage; 3 an ``expect_or_fail`` rule failed (nothing of its batch
committed); 75 another run ingests the same table (``--wait SECONDS`` waits for it first).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lakehouse.medallion.autoloader import EVOLUTION_MODES, FORMATS, SchemaHintError
from lakehouse.medallion.byo import IngestRequest, ingest_lock, run_ingest
from lakehouse.medallion.expectations import ExpectationFailed
from lakehouse.medallion.user_silver import SilverSpec, SpecError, load_spec
from lakehouse.platform.errors import guarded
from lakehouse.platform.locks import EXIT_BUSY, LockBusy
from lakehouse.platform.session import configure_logging, job_session
from lakehouse.platform.settings import load_settings


def _spec(text: str) -> SilverSpec:
    try:
        return load_spec(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the job's flags."""
    parser = argparse.ArgumentParser(prog="ingest", description=__doc__.splitlines()[0])
    parser.add_argument("source_dir", metavar="SOURCE_DIR", help="folder (or URI) of the files")
    parser.add_argument("--table", required=True, metavar="bronze.NAME", help="bronze table")
    parser.add_argument("--format", required=True, choices=FORMATS, help="the files' format")
    parser.add_argument("--schema-hints", metavar='"COL TYPE, ..."', help="column types")
    parser.add_argument(
        "--schema-evolution", choices=EVOLUTION_MODES, default="addNewColumns", help="new columns"
    )
    parser.add_argument("--glob", metavar="PATTERN", help="file names (default: *.<format>)")
    parser.add_argument("--silver-spec", type=_spec, metavar="FILE", help="silver spec (YAML)")
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait for a running ingest"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    words = list(sys.argv[1:] if argv is None else argv)
    # An unknown flag is named first, before the required arguments it may hide.
    known = {option for action in parser._actions for option in action.option_strings}
    unknown = [w for w in words if w.startswith("--") and w.split("=")[0] not in known]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return parser.parse_args(words)


def main(argv: Sequence[str] | None = None) -> int:
    """Ingest and print the summary."""
    args = parse_args(argv)
    configure_logging(args.verbose, "ingest")
    return guarded("ingest", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    settings = load_settings()
    request = IngestRequest(
        source_dir=args.source_dir,
        table=args.table,
        fmt=args.format,
        schema_hints=args.schema_hints,
        evolution=args.schema_evolution,
        glob=args.glob,
        spec=args.silver_spec,
    )
    try:
        with ingest_lock(settings, args.table, args.wait), job_session("ingest", settings) as job:
            report = run_ingest(job.spark, job.settings, job.catalog, request)
    except LockBusy as exc:
        print(f"error: {exc}; not started", file=sys.stderr)
        return EXIT_BUSY
    except ExpectationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (SchemaHintError, SpecError) as exc:
        print(f"error: ingest: {exc}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
