"""``lakehouse datagen``: write seeded daily drops of the credit-risk world into landing/.

Examples::

    lakehouse datagen                                   # 2000 customers, 90 days
    lakehouse datagen --to-day 59 && lakehouse datagen --from-day 60   # same files, in two goes
    lakehouse datagen --customers 20000 --malformed-rate 0.01 --schema-drift-from-day 60
    lakehouse datagen --hostile all                     # hostile files only (see --hostile)
    lakehouse datagen --hostile bom,crlf,non_finite --seed 3
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path

from lakehouse.cli.console import render_rows
from lakehouse.platform.settings import load_settings
from lakehouse.simulation.generator import REPORT_HEADERS, GeneratorConfig, generate
from lakehouse.simulation.hostile import HOSTILE_CLASSES, parse_classes, write_hostile

_DEFAULTS = GeneratorConfig()


def _integer(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _number(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``datagen`` command."""
    parser = sub.add_parser(
        "datagen",
        help="write seeded daily raw drops (customers, transactions, applications, repayments)",
        description="Generate the credit-risk world into landing/<entity>/<entity>_<date>.json|csv"
        ", with optional faults and drift. The same flags always give the same bytes; a day "
        "range writes only those drops, identical to a full run's.",
    )
    rate = _number(0.0, 1.0)
    parser.add_argument(
        "--landing-dir",
        type=Path,
        default=None,
        help="landing root (default: settings.landing_dir, under LAKEHOUSE_HOME)",
    )
    world = parser.add_argument_group("world")
    world.add_argument("--seed", type=_integer(0), default=_DEFAULTS.seed, help="default 42")
    world.add_argument(
        "--customers", type=_integer(1), default=_DEFAULTS.customers, help="default 2000"
    )
    world.add_argument(
        "--start-date",
        type=_iso_date,
        default=_DEFAULTS.start_date,
        help=f"date of day 0, YYYY-MM-DD (default {_DEFAULTS.start_date})",
    )
    world.add_argument(
        "--days", type=_integer(1), default=_DEFAULTS.days, help="horizon in days (default 90)"
    )
    world.add_argument(
        "--from-day", type=_integer(0), default=0, help="first day index to write (default 0)"
    )
    world.add_argument(
        "--to-day",
        type=_integer(0),
        default=None,
        help="last day index to write, inclusive (default: the last day of the horizon)",
    )
    world.add_argument(
        "--txn-per-customer-per-day",
        type=_number(0.0, 100.0),
        default=_DEFAULTS.txn_per_customer_per_day,
        help="mean transactions per customer per day "
        f"(default {_DEFAULTS.txn_per_customer_per_day})",
    )
    world.add_argument(
        "--application-rate",
        type=rate,
        default=_DEFAULTS.application_rate,
        help=f"loan applications per customer per day (default {_DEFAULTS.application_rate})",
    )
    world.add_argument(
        "--profile-update-rate",
        type=rate,
        default=_DEFAULTS.profile_update_rate,
        help=f"profile updates per customer per day (default {_DEFAULTS.profile_update_rate})",
    )
    faults = parser.add_argument_group("faults and drift")
    for flag, attr, what in (
        ("--malformed-rate", "malformed_rate", "bad lines per record"),
        ("--duplicate-rate", "duplicate_rate", "exact duplicate lines"),
        ("--key-duplicate-rate", "key_duplicate_rate", "corrected re-sends, same key"),
        ("--late-rate", "late_rate", "events landing 1-5 days late"),
    ):
        default = getattr(_DEFAULTS, attr)
        faults.add_argument(flag, type=rate, default=default, help=f"{what} (default {default})")
    faults.add_argument(
        "--schema-drift-from-day",
        type=_integer(0),
        default=None,
        help="day index from which applications and transactions carry an extra field",
    )
    faults.add_argument(
        "--drift-from-day",
        type=_integer(0),
        default=None,
        help="day index from which incomes fall, spending, gambling and defaults rise",
    )
    faults.add_argument(
        "--drift-strength",
        type=_number(0.0, 10.0),
        default=_DEFAULTS.drift_strength,
        help=f"size of the distribution drift (default {_DEFAULTS.drift_strength})",
    )
    hostile = parser.add_argument_group("hostile inputs")
    hostile.add_argument(
        "--hostile",
        type=_classes,
        default=None,
        metavar="CLASS[,CLASS]",
        help="write only hostile files of these classes (or 'all') beside the drops, with "
        "--seed: " + ", ".join(HOSTILE_CLASSES),
    )
    hostile.add_argument(
        "--hostile-day",
        type=_iso_date,
        default=None,
        help="date of the hostile files' valid records, YYYY-MM-DD (default: yesterday)",
    )
    parser.set_defaults(handler=partial(run, parser))


def _classes(text: str) -> tuple[str, ...]:
    try:
        return parse_classes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Generate the drops (or the hostile files) and print what was written."""
    if args.hostile is not None:
        return _run_hostile(args)
    to_day = args.days - 1 if args.to_day is None else args.to_day
    if to_day >= args.days:
        parser.error(f"argument --to-day: must be below --days ({args.days}), got {to_day}")
    if args.from_day > to_day:
        parser.error(f"argument --from-day: must not be after --to-day ({to_day})")
    try:
        config = GeneratorConfig(
            seed=args.seed,
            customers=args.customers,
            start_date=args.start_date,
            days=args.days,
            txn_per_customer_per_day=args.txn_per_customer_per_day,
            application_rate=args.application_rate,
            profile_update_rate=args.profile_update_rate,
            malformed_rate=args.malformed_rate,
            duplicate_rate=args.duplicate_rate,
            key_duplicate_rate=args.key_duplicate_rate,
            late_rate=args.late_rate,
            schema_drift_from_day=args.schema_drift_from_day,
            drift_from_day=args.drift_from_day,
            drift_strength=args.drift_strength,
        )
    except ValueError as exc:
        parser.error(str(exc))
    landing = args.landing_dir
    if landing is None:
        landing = load_settings().landing_dir
    report = generate(landing, config, days=range(args.from_day, to_day + 1))
    print(
        f"wrote days {args.from_day}..{to_day} "
        f"({config.date_of(args.from_day)} .. {config.date_of(to_day)}) to {landing}"
    )
    print(render_rows([h.replace("_", " ") for h in REPORT_HEADERS], report.rows()))
    return 0


def _run_hostile(args: argparse.Namespace) -> int:
    landing = args.landing_dir or load_settings().landing_dir
    report = write_hostile(landing, args.hostile, seed=args.seed, day=args.hostile_day)
    print(
        f"wrote {len(report.files)} hostile file(s) of {len(args.hostile)} class(es) to {landing}"
    )
    print(render_rows(["class", "entity", "file", "lines", "accepted"], report.rows()))
    return 0
