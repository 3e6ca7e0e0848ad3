"""Score new loan applications as they land in silver, with Structured Streaming.

Run it with spark-submit (from the repository, with the virtual env active)::

    spark-submit --jars "$(lakehouse jars)" jobs/stream_score.py --processing-time "1 second"

``--available-now`` scores what has landed and stops; ``--processing-time`` runs until Ctrl-C or
SIGTERM, which stop the query cleanly (exit code 0). The champion alias is resolved again at
every micro-batch; the checkpoint is ``<home>/checkpoints/scoring``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lakehouse.platform.errors import guarded
from lakehouse.platform.session import configure_logging
from lakehouse.workflows.scoring import ScoringError, add_stream_arguments, run_stream


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the job's flags."""
    parser = argparse.ArgumentParser(prog="stream_score", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    add_stream_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scoring stream until it stops."""
    args = parse_args(argv)
    configure_logging(args.verbose, "stream_score", progress=True)
    return guarded("stream_score", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    try:
        run_stream(args)
    except ScoringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
