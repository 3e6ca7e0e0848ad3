"""``lakehouse jars``: print the Delta jars for ``spark-submit --jars``."""

from __future__ import annotations

import argparse

from lakehouse.platform.jars import check_java, resolve_jars


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``jars`` command."""
    parser = sub.add_parser(
        "jars",
        help="print the Delta jars, comma-separated, for spark-submit --jars",
        description='Resolve Delta Lake\'s jars if needed; use as --jars "$(lakehouse jars)".',
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the comma-separated jar paths."""
    check_java()
    print(",".join(str(p) for p in resolve_jars()))
    return 0
