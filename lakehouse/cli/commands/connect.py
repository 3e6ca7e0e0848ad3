"""``lakehouse connect start|stop|status``: a Spark Connect server over the platform's tables."""

from __future__ import annotations

import argparse
import sys

from lakehouse.cli.commands._daemon import EXIT_BUSY, EXIT_NOT_RUNNING, port_number, seconds
from lakehouse.cli.console import format_seconds
from lakehouse.platform.connect import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ConnectError,
    pid_path,
    running,
    start,
    stop,
)
from lakehouse.platform.settings import load_settings

EPILOG = f"""\
The server runs in the background with the same Delta and catalog configuration as every
other session of the platform: a client of SparkSession.builder.remote("sc://localhost:PORT")
reads, writes and MERGEs the same tables. Notebooks use it with
LAKEHOUSE_SPARK_REMOTE=sc://localhost:PORT (get_spark() then returns a Connect session).
Its pid file is $LAKEHOUSE_HOME/run/connect.pid, its log $LAKEHOUSE_HOME/logs/connect-*.log.

Exit status: 0 done; 1 the server could not start or stop (one line naming the log file);
{EXIT_BUSY} `start` found a server of this state folder running; {EXIT_NOT_RUNNING} `status` found
none.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``connect`` command group."""
    connect = sub.add_parser(
        "connect",
        help="run a Spark Connect server over the platform's tables (as Databricks Connect)",
        description="Start, stop or inspect the Spark Connect server of this state folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = connect.add_subparsers(dest="action", metavar="ACTION", required=True)
    start_ = actions.add_parser("start", help="start the server in the background")
    start_.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}: this machine only)",
    )
    start_.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    start_.add_argument(
        "--wait",
        type=seconds,
        default=180.0,
        metavar="SECONDS",
        help="wait up to SECONDS for the server to answer (default 180; 0: return once launched)",
    )
    start_.set_defaults(handler=run_start)
    stop_ = actions.add_parser("stop", help="stop the server (SIGTERM, then wait)")
    stop_.add_argument(
        "--timeout",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="SIGKILL the server if it has not ended after SECONDS (default 60)",
    )
    stop_.set_defaults(handler=run_stop)
    status = actions.add_parser("status", help="print the server's url, pid and uptime")
    status.set_defaults(handler=run_status)


def run_start(args: argparse.Namespace) -> int:
    """Start the server and print its URL."""
    settings = load_settings()
    try:
        info = start(settings, host=args.host, port=args.port, wait=args.wait)
    except ConnectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    state = "started" if args.wait > 0 else "starting"
    print(f"Spark Connect server {state} at {info.url} (pid {info.pid}); log {info.log}")
    return 0


def run_stop(args: argparse.Namespace) -> int:
    """Stop the server, if one runs."""
    settings = load_settings()
    try:
        info = stop(settings, timeout=args.timeout)
    except ConnectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if info is None:
        print(f"no Spark Connect server running for {settings.home}", file=sys.stderr)
    else:
        print(f"Spark Connect server stopped (pid {info.pid})")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print the running server's URL, pid and uptime."""
    settings = load_settings()
    info = running(settings)
    if info is None:
        print(f"no Spark Connect server running for {settings.home}")
        return EXIT_NOT_RUNNING
    if info.pid <= 0:
        print(f"a Spark Connect server is starting (no record in {pid_path(settings)} yet)")
        return 0
    print(f"url:    {info.url}")
    print(f"pid:    {info.pid}")
    print(f"uptime: {format_seconds(info.uptime())}")
    print(f"log:    {info.log}")
    return 0
