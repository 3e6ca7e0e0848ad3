"""``lakehouse features``: apply the Feast repository, materialize, list views, read online."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from types import ModuleType
from typing import Any

from lakehouse.cli.console import render_rows
from lakehouse.platform.settings import load_settings


def _iso(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from exc


def _store() -> ModuleType:
    """:mod:`lakehouse.features.store`, imported on first use."""
    # Not at module level: it imports Feast and Spark, which the CLI parser must be built without.
    from lakehouse.features import store

    return store


def _spark(settings: Any) -> Any:
    """The platform's SparkSession for these commands (Feast reuses it)."""
    from lakehouse.platform.session import platform_spark  # imports pyspark: on use, as above

    spark = platform_spark(settings, "lakehouse-features", register_tables=False)
    _store().use_session(spark)
    return spark


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``features`` command and its sub-commands."""
    parser = sub.add_parser(
        "features",
        help="the Feast feature store: apply, materialize, list, online",
        description="Register feature_repo/ in Feast, load the online store, read features.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    apply_p = actions.add_parser("apply", help="register entities, sources, views and services")
    apply_p.set_defaults(handler=run_apply)

    mat = actions.add_parser(
        "materialize", help="load the online store incrementally up to a time (default now)"
    )
    mat.add_argument("--end", type=_iso, default=None, help="end time, ISO-8601 (UTC if naive)")
    mat.set_defaults(handler=run_materialize)

    list_p = actions.add_parser("list", help="list feature views and their features")
    list_p.set_defaults(handler=run_list)

    online = actions.add_parser("online", help="print online feature values of customers")
    online.add_argument("customer_ids", nargs="+", metavar="CUSTOMER_ID")
    online.set_defaults(handler=run_online)


def run_apply(args: argparse.Namespace) -> int:
    """Apply the repository with the platform's Spark session (sources are validated)."""
    settings = load_settings()
    spark = _spark(settings)
    try:
        names = _store().apply(settings)
    finally:
        spark.stop()
    where = _store().registry_location(settings)
    print(f"applied feature views: {', '.join(names)} (registry: {where})")
    return 0


def run_materialize(args: argparse.Namespace) -> int:
    """Materialize incrementally up to ``--end``."""
    settings = load_settings()
    spark = _spark(settings)
    try:
        end = _store().materialize(settings, end=args.end)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    print(f"materialized up to {end.isoformat()} into the {settings.online_store} online store")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print every feature view with its features and types."""
    views = _store().list_views(load_settings())
    if not views:
        print("no feature views registered; run `lakehouse features apply` first")
        return 0
    rows = [(view, name, dtype) for view, fields in views.items() for name, dtype in fields]
    print(render_rows(["feature view", "feature", "type"], rows))
    return 0


def run_online(args: argparse.Namespace) -> int:
    """Print the online values of the service for the given customers."""
    frame = _store().online_features(load_settings(), args.customer_ids)
    print(render_rows(list(frame.columns), frame.astype(object).itertuples(index=False)))
    return 0
