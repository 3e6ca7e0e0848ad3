"""The ``lakehouse`` command.

Each sub-command lives in a module of :mod:`lakehouse.cli.commands` that defines
``register(subparsers)``; the module is found by name, so adding a command is adding a file.
A command's handler takes the parsed arguments and returns an exit code.

An error that reaches :func:`main` is printed as one line (what failed, the table or file, the
Spark error class and SQLSTATE) naming the log file that holds its traceback; the exit status is
the error's own (75: another run holds the lock, 78: the state folder was moved) or 1.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from lakehouse import __version__
from lakehouse.platform.errors import report
from lakehouse.platform.jars import SetupError
from lakehouse.platform.session import configure_logging


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="lakehouse",
        description="A local Databricks-style ML lakehouse: Spark, Delta Lake, Feast, MLflow.",
    )
    parser.add_argument("--version", action="version", version=f"lakehouse {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log at DEBUG level, with tracebacks and Spark's warnings on the terminal "
        "(they always go to the log file under $LAKEHOUSE_HOME/logs/)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import lakehouse.cli.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"lakehouse.cli.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lakehouse`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    name = command_name(args)
    configure_logging(args.verbose, name, progress=bool(getattr(args, "progress", False)))
    try:
        return int(handler(args) or 0)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return report(exc, f"lakehouse {name.replace('-', ' ')}")


def command_name(args: argparse.Namespace) -> str:
    """``pipeline-run`` for ``lakehouse pipeline run``: the command and its action, if any."""
    words = [getattr(args, "command", None), getattr(args, "action", None)]
    return "-".join(str(w) for w in words if w) or "lakehouse"


if __name__ == "__main__":
    raise SystemExit(main())
