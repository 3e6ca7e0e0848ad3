"""Refresh monitors: recompute the profile and drift metrics of the windows that changed,
evaluate the alert rules and, with --act, run the actions of new alerts.

Run it with spark-submit (from the repository, with the virtual env active)::

    spark-submit --jars "$(lakehouse jars)" jobs/monitor.py gold.monitored_predictions --act \
        --canary-endpoint credit-risk --canary-percent 10

Without a table every monitor is refreshed. With --canary-endpoint, a retrained challenger that
passes the gate is served as that endpoint's canary by the running server. Exits 1 when a
monitor cannot be refreshed or a canary could not be started.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lakehouse.monitoring.alerts import RULES_FILE, load_rules
from lakehouse.monitoring.definition import list_monitors
from lakehouse.platform.session import configure_logging
from lakehouse.platform.settings import load_settings
from lakehouse.platform.spark import get_spark, table_catalog
from lakehouse.workflows.canary_flags import add_canary_flags, canary_request
from lakehouse.workflows.monitoring import refresh_and_evaluate


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the job's flags."""
    parser = argparse.ArgumentParser(prog="monitor", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("tables", nargs="*", help="monitored tables (default: every monitor)")
    parser.add_argument("--act", action="store_true", help="run the actions of new alerts")
    parser.add_argument(
        "--rules", help=f"alert rules file (default ./{RULES_FILE} if present, else built-in)"
    )
    add_canary_flags(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Refresh and print one line per monitor."""
    args = parse_args(argv)
    configure_logging(args.verbose)
    try:
        rules = load_rules(args.rules)
        canary = canary_request(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = load_settings()
    spark = get_spark(settings, app_name="monitor")
    try:
        catalog = table_catalog(settings)
        tables = args.tables or [m.table_name for m in list_monitors(spark, catalog)]
        failed = False
        for table in tables:
            try:
                outcome = refresh_and_evaluate(
                    spark, settings, catalog, table, act=args.act, rules=rules, canary=canary
                )
                print("\n".join(outcome.lines()))
            except (ValueError, FileNotFoundError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            for error in outcome.errors:
                print(f"error: {error}", file=sys.stderr)
                failed = True
        return 1 if failed else 0
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
