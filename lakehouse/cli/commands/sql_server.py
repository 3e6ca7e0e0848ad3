"""``lakehouse sql-server start|stop|status``: the SQL endpoint (Spark's Thrift server).

Clients speak HiveServer2's protocol: ``beeline -u jdbc:hive2://127.0.0.1:10000``, any Hive
JDBC or ODBC driver, or PyHive from Python. See :mod:`lakehouse.platform.sql_endpoint`.
"""

from __future__ import annotations

import argparse
import sys

from lakehouse.cli.commands._daemon import EXIT_BUSY, EXIT_NOT_RUNNING, port_number
from lakehouse.platform.locks import exclusive
from lakehouse.platform.settings import load_settings
from lakehouse.platform.sql_endpoint import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    StartFailed,
    clear_record,
    pid_path,
    port_answers,
    read_record,
    run_foreground,
    start_background,
    stop_pid,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sql-server`` command."""
    parser = sub.add_parser(
        "sql-server",
        help="the SQL endpoint: Spark's Thrift server (JDBC, ODBC, beeline, DB-API)",
        description=(
            "Run Spark's Thrift server (HiveServer2 protocol) with Delta Lake and the persistent "
            "catalog: every table under $LAKEHOUSE_HOME/tables answers SQL from beeline, JDBC, "
            "ODBC and DB-API clients, time travel included. The pid file, the log and Hive's "
            "Derby metastore are kept under $LAKEHOUSE_HOME/sql-server/."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser(
        "start",
        help="start the server in the background and wait until it answers",
        description=(
            "Start the server and wait until its port answers; print its JDBC URL. Exits 75 if "
            "a server of this state folder already runs, 1 if it does not come up (the log "
            "says why)."
        ),
    )
    start.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 in a container)",
    )
    start.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    start.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the port to answer (default 300)",
    )
    start.add_argument(
        "--foreground",
        action="store_true",
        help="run the server in this process, its output on the terminal (for containers)",
    )
    start.set_defaults(handler=run_start)
    stop = actions.add_parser("stop", help="stop the server (SIGTERM, then wait)")
    stop.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait after SIGTERM before SIGKILL (default 60)",
    )
    stop.set_defaults(handler=run_stop)
    status = actions.add_parser(
        "status", help="the JDBC URL, pid and uptime of the server (exit 3: not running)"
    )
    status.set_defaults(handler=run_status)


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def run_start(args: argparse.Namespace) -> int:
    """Start the server unless one runs for this state folder."""
    settings = load_settings()
    with exclusive(settings.home, "sql-server-start"):
        running = read_record(settings)
        if running is not None:
            print(
                f"lakehouse sql-server: already running as pid {running.pid} at {running.url} "
                f"(stop it with `lakehouse sql-server stop`)",
                file=sys.stderr,
            )
            return EXIT_BUSY
        clear_record(settings)  # a stale record of a server that is gone
        if not args.foreground:
            try:
                record = start_background(settings, args.host, args.port, args.timeout)
            except StartFailed as exc:
                print(f"lakehouse sql-server: {exc}", file=sys.stderr)
                return 1
            print(f"SQL endpoint running: {record.url} (pid {record.pid}, log {record.log})")
            return 0
    # Released first: ``exec`` would keep the lock's record, and the next start would take the
    # server for a run that did not finish.
    run_foreground(settings, args.host, args.port)


def run_stop(args: argparse.Namespace) -> int:
    """Stop the recorded server."""
    settings = load_settings()
    record = read_record(settings)
    if record is None:
        clear_record(settings)
        print("lakehouse sql-server: not running")
        return 0
    stop_pid(record.pid, args.timeout)
    clear_record(settings, record.pid)
    print(f"SQL endpoint stopped (pid {record.pid})")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print the URL, pid and uptime of the server; exit 3 when none runs."""
    settings = load_settings()
    record = read_record(settings)
    if record is None:
        print(f"lakehouse sql-server: not running (no live server in {pid_path(settings)})")
        return EXIT_NOT_RUNNING
    answering = "" if port_answers(record.host, record.port) else " (not answering yet)"
    print(f"url:    {record.url}{answering}")
    print(f"pid:    {record.pid}")
    print(f"uptime: {_uptime(record.uptime())}")
    print(f"log:    {record.log}")
    return 0
