"""``lakehouse model promote|rollback|history``: the model registry by hand."""

from __future__ import annotations

import argparse
import sys

from lakehouse.cli.console import render_rows
from lakehouse.models.registry import history, promote, rollback
from lakehouse.platform.settings import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``model`` command and its sub-commands."""
    parser = sub.add_parser(
        "model",
        help="promote, roll back and list versions of the registered model",
        description="Manage the registered model: the champion alias (stage Production) "
        "scores; rollback restores the previous champion.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    prom = actions.add_parser("promote", help="make a version the champion")
    prom.add_argument("version", type=int, help="model version number")
    prom.add_argument(
        "--force", action="store_true", help="promote even a version the gate rejected"
    )
    prom.set_defaults(handler=run_promote)
    back = actions.add_parser("rollback", help="restore the previous champion")
    back.set_defaults(handler=run_rollback)
    hist = actions.add_parser("history", help="list versions with aliases, stage and verdict")
    hist.set_defaults(handler=run_history)


def run_promote(args: argparse.Namespace) -> int:
    """Promote one version."""
    settings = load_settings()
    try:
        previous = promote(settings, args.version, force=args.force)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{settings.model_name} version {args.version} is champion (was {previous})")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    """Restore the previous champion."""
    settings = load_settings()
    try:
        restored = rollback(settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{settings.model_name} version {restored} is champion again")
    return 0


def run_history(args: argparse.Namespace) -> int:
    """Print every version, newest first."""
    settings = load_settings()
    records = history(settings)
    if not records:
        print(f"no versions of {settings.model_name}; run `lakehouse train` first")
        return 0
    rows = [
        (
            r.version,
            ",".join(r.aliases),
            r.stage,
            "" if r.metric_value is None else f"{r.metric_value:.4f}",
            r.verdict,
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.run_id,
        )
        for r in records
    ]
    print(
        render_rows(
            ["version", "aliases", "stage", "metric", "verdict", "created (UTC)", "run"], rows
        )
    )
    return 0
