"""``lakehouse jars``: print the jars for ``spark-submit --jars``: Delta's and, where it could be
built, the platform's persistent catalog (a job's session then sees the tables every other
application created, and its own persist)."""

from __future__ import annotations

import argparse

from lakehouse.platform.jars import catalog_jar, check_java, resolve_jars


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``jars`` command."""
    parser = sub.add_parser(
        "jars",
        help="print the Delta and catalog jars, comma-separated, for spark-submit --jars",
        description="Resolve Delta Lake's jars (and build the platform's catalog jar) if needed; "
        'use as --jars "$(lakehouse jars)".',
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the comma-separated jar paths."""
    check_java()
    jars = resolve_jars()
    catalog = catalog_jar()
    if catalog is not None:
        jars.append(catalog)
    print(",".join(str(p) for p in jars))
    return 0
