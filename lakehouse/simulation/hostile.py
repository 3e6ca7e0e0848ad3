"""Hostile landing files: what a real source system sends sooner or later.

:func:`write_hostile` writes, for each chosen class of :data:`HOSTILE_CLASSES`, a few seeded
files beside the generator's drops (``landing/<entity>/<entity>_hostile-<class>.json|csv``),
in the format the landing contract gives the entity (JSON lines, CSV with a header). Each file
mixes records the contract accepts with records it must reject, and the returned
:class:`HostileReport` says how many of each every file holds, so a test can check that every
line ends up where it should: ``lines`` bronze rows per file, ``accepted`` of them in silver,
the rest in the quarantine.

Valid records use keys of their own (``CH``, ``TH``, ``AH`` then the class's number), so they
never collide with the generated world or with another class, and they reference the customers
of one extra file, ``customers_hostile-base.json``, written with every class (the ``orphans``
class excepted, whose records reference nobody known). The same seed and day give the same
bytes.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from lakehouse.medallion.contracts import AMOUNT_LIMIT, LANDING_FORMATS, RAW_FIELDS

#: Every class of hostile input, in a fixed order (its index is part of the keys it writes).
HOSTILE_CLASSES: tuple[str, ...] = (
    "out_of_range",  # amounts beyond what gold holds, negative incomes, scores off the scale
    "non_finite",  # NaN, Infinity
    "far_future",  # 9999-12-31, the year 2999, a five-digit year
    "ancient",  # year 1, the zero epoch, 1899
    "oversized",  # a 200,000-character customer_id, a 100,000-character name
    "wrong_types",  # text for numbers, booleans for amounts, epoch seconds for timestamps
    "nested",  # JSON objects and arrays where a scalar is expected
    "bom",  # files starting with a UTF-8 byte-order mark (all records valid)
    "crlf",  # Windows line endings (all records valid)
    "non_utf8",  # Latin-1 bytes and broken UTF-8 sequences
    "binary",  # random bytes under a .json or .csv name
    "empty",  # zero-byte files, a file of blank lines
    "header_only",  # CSV files holding only their header
    "repeated_header",  # a CSV header repeated mid-file (files joined together)
    "extra_columns",  # unknown JSON keys, an extra CSV column, a line with one field too many
    "missing_columns",  # absent JSON keys, a CSV header without a column, a line too short
    "json_array",  # a JSON array on one line, and one spread over several lines
    "truncated",  # the last line cut short, without its line break
    "orphans",  # valid records of a customer (or application) nobody sent
)

#: The class name of the customers file the valid records of every other class reference.
BASE = "base"
_BASE_CUSTOMERS = 3
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class HostileFile:
    """One file written by :func:`write_hostile`.

    Attributes:
        path: where it was written.
        entity: the entity whose landing folder holds it.
        hostile_class: one of :data:`HOSTILE_CLASSES`, or :data:`BASE`.
        lines: the bronze rows the file makes (its non-blank lines, a CSV header aside).
        accepted: how many of them the contract accepts into silver (the rest are quarantined).
    """

    path: Path
    entity: str
    hostile_class: str
    lines: int
    accepted: int

    @property
    def rejected(self) -> int:
        """Lines the contract rejects."""
        return self.lines - self.accepted


@dataclass(frozen=True)
class HostileReport:
    """What :func:`write_hostile` wrote."""

    files: tuple[HostileFile, ...]

    def of_class(self, hostile_class: str) -> list[HostileFile]:
        """The files of one class."""
        return [f for f in self.files if f.hostile_class == hostile_class]

    @property
    def lines(self) -> int:
        """Bronze rows of every file."""
        return sum(f.lines for f in self.files)

    @property
    def accepted(self) -> int:
        """Rows the contract accepts, every file."""
        return sum(f.accepted for f in self.files)

    def rows(self) -> list[tuple[str, str, str, int, int]]:
        """(class, entity, file name, lines, accepted) per file, for printing."""
        return [(f.hostile_class, f.entity, f.path.name, f.lines, f.accepted) for f in self.files]


def parse_classes(text: str) -> tuple[str, ...]:
    """``"bom,crlf"`` or ``"all"`` -> the classes, in :data:`HOSTILE_CLASSES` order.

    Raises:
        ValueError: an unknown class, or none.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return HOSTILE_CLASSES
    unknown = [n for n in names if n not in HOSTILE_CLASSES]
    if unknown or not names:
        raise ValueError(
            f"unknown hostile class(es) {', '.join(unknown) or '(none)'}: expected 'all' or "
            f"some of {', '.join(HOSTILE_CLASSES)}"
        )
    return tuple(c for c in HOSTILE_CLASSES if c in names)


# --- Records ---------------------------------------------------------------------------------


class _Records:
    """Valid records of one class: unique keys, references to the base customers."""

    def __init__(self, index: int, day: date, rng: random.Random) -> None:
        self.index = index
        self.day = day
        self.rng = rng
        self.serial = 0
        self.customers = [base_customer_id(i) for i in range(_BASE_CUSTOMERS)]

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def ts(self) -> str:
        """A time on the class's day (after the base customers' profiles)."""
        seconds = self.rng.randrange(3600, 86_000)
        moment = datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)
        return (moment + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def customer(self, **changes: Any) -> dict[str, Any]:
        record = {
            "customer_id": f"CH{self.index:02d}{self._next():06d}",
            "name": f"Hostile {self.index}-{self.serial}",
            "birth_date": f"{self.rng.randrange(1950, 2000)}-05-17",
            "annual_income": float(self.rng.randrange(20, 200) * 1000),
            "employment_years": float(self.rng.randrange(0, 30)),
            "home_ownership": self.rng.choice(["RENT", "OWN", "MORTGAGE"]),
            "region": self.rng.choice(["NORTH", "SOUTH", "EAST", "WEST", "CENTRAL"]),
            "credit_score": self.rng.randrange(300, 851),
            "updated_at": self.ts(),
        }
        record.update(changes)
        return record

    def transaction(self, **changes: Any) -> dict[str, Any]:
        record = {
            "transaction_id": f"TH{self.index:02d}{self._next():08d}",
            "customer_id": self.rng.choice(self.customers),
            "amount": f"{self.rng.randrange(100, 100_000) / 100:.2f}",
            "merchant_category": self.rng.choice(["GROCERY", "FUEL", "TRAVEL", "GAMBLING"]),
            "channel": self.rng.choice(["POS", "ONLINE", "ATM"]),
            "transaction_ts": self.ts(),
        }
        record.update(changes)
        return record

    def application(self, **changes: Any) -> dict[str, Any]:
        record = {
            "application_id": f"AH{self.index:02d}{self._next():06d}",
            "customer_id": self.rng.choice(self.customers),
            "applied_at": self.ts(),
            "loan_amount": float(self.rng.randrange(10, 400) * 100),
            "term_months": self.rng.choice([12, 24, 36, 48, 60]),
            "purpose": self.rng.choice(["CAR", "EDUCATION", "OTHER"]),
        }
        record.update(changes)
        return record

    def repayment(self, application_id: str, customer_id: str, **changes: Any) -> dict[str, Any]:
        record = {
            "application_id": application_id,
            "customer_id": customer_id,
            "observed_at": self.ts(),
            "defaulted": self.rng.random() < 0.2,
            "days_past_due": self.rng.randrange(0, 90),
        }
        record.update(changes)
        return record


def base_customer_id(i: int) -> str:
    """The id of the ``i``-th base customer."""
    return f"CHB{i + 1:06d}"


def _json(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def _csv_line(record: dict[str, Any], columns: Sequence[str] | None = None) -> str:
    names = columns or RAW_FIELDS["transactions"]
    return ",".join(str(record.get(n, "")) for n in names)


_CSV_HEADER = ",".join(RAW_FIELDS["transactions"])


@dataclass
class _Draft:
    """A file being composed: its bytes, and its line counts."""

    entity: str
    data: bytes
    lines: int
    accepted: int


def _lines_file(entity: str, lines: Sequence[tuple[str, bool]], header: str = "") -> _Draft:
    """A file of ``lines`` (text, accepted), each ending with LF; CSV files get ``header``."""
    text = "".join(f"{line}\n" for line, _ in lines)
    if LANDING_FORMATS[entity] == "csv":
        text = f"{header or _CSV_HEADER}\n{text}"
    accepted = sum(1 for _, ok in lines if ok)
    return _Draft(entity, text.encode("utf-8"), len(lines), accepted)


# --- Classes ----------------------------------------------------------------------------------


def _repayment_of_new_application(
    r: _Records, applications: list[dict[str, Any]], **changes: Any
) -> dict[str, Any]:
    application = r.application()
    applications.append(application)
    return r.repayment(application["application_id"], application["customer_id"], **changes)


def _value_class(
    r: _Records,
    bad: dict[str, Sequence[tuple[str, Any]]],
) -> list[_Draft]:
    """Files of two valid records and one record per bad (field, value) of each entity."""
    drafts = []
    make: Callable[..., dict[str, Any]]
    makers: dict[str, Callable[..., dict[str, Any]]] = {
        "customers": r.customer,
        "transactions": r.transaction,
        "loan_applications": r.application,
    }
    for entity, values in bad.items():
        paired: list[dict[str, Any]] = []
        if entity == "repayments":
            # Each repayment is of an application of its own, so that none is an orphan or a
            # duplicate; the applications go to a file of their own.
            make = partial(_repayment_of_new_application, r, paired)
        else:
            make = makers[entity]
        good = [make(), make()]
        wrong = [make(**{field: value}) for field, value in values]
        render = _csv_line if LANDING_FORMATS[entity] == "csv" else _json
        lines = [(render(rec), True) for rec in good] + [(render(rec), False) for rec in wrong]
        drafts.append(_lines_file(entity, lines))
        if paired:
            drafts.append(_lines_file("loan_applications", [(_json(a), True) for a in paired]))
    return drafts


def _out_of_range(r: _Records) -> list[_Draft]:
    return _value_class(
        r,
        {
            "transactions": [
                ("amount", "1e308"),
                ("amount", f"{AMOUNT_LIMIT:.0f}"),  # the limit itself is outside
                ("amount", "-5.00"),
                ("amount", "0"),
                ("amount", "1" + "0" * 30),
            ],
            "customers": [
                ("credit_score", 9999),
                ("credit_score", 299),
                ("annual_income", -1.0),
                ("annual_income", 1e300),
                ("employment_years", 500),
                ("birth_date", "1850-01-01"),
            ],
            "loan_applications": [
                ("loan_amount", 1e308),
                ("term_months", 7),
                ("term_months", 10**12),
            ],
            "repayments": [("days_past_due", -3), ("days_past_due", 10**11)],
        },
    )


def _non_finite(r: _Records) -> list[_Draft]:
    drafts = _value_class(
        r,
        {
            "transactions": [
                ("amount", "NaN"),
                ("amount", "Infinity"),
                ("amount", "-Infinity"),
                ("amount", "nan"),
                ("amount", "inf"),
            ],
            "customers": [("annual_income", "NaN"), ("employment_years", "Infinity")],
            "loan_applications": [("loan_amount", "NaN"), ("loan_amount", "-inf")],
        },
    )
    # NaN and Infinity as bare JSON tokens (not JSON, but what Python and Spark write).
    bare = [
        (_json(r.customer(annual_income=float("nan"))), False),
        (_json(r.application(loan_amount=float("inf"))), False),
    ]
    drafts.append(_lines_file("customers", bare[:1]))
    drafts.append(_lines_file("loan_applications", bare[1:]))
    return drafts


def _far_future(r: _Records) -> list[_Draft]:
    values = ("9999-12-31T23:59:59Z", "2999-06-30T12:00:00Z", "+10000-01-01T00:00:00Z")
    return _value_class(
        r,
        {
            "transactions": [("transaction_ts", v) for v in values],
            "customers": [("updated_at", v) for v in values] + [("birth_date", "2999-01-01")],
            "loan_applications": [("applied_at", v) for v in values],
            "repayments": [("observed_at", v) for v in values],
        },
    )


def _ancient(r: _Records) -> list[_Draft]:
    values = ("0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1899-12-31T23:59:59Z")
    return _value_class(
        r,
        {
            "transactions": [("transaction_ts", v) for v in values],
            "customers": [("updated_at", v) for v in values],
            "loan_applications": [("applied_at", v) for v in values],
        },
    )


def _oversized(r: _Records) -> list[_Draft]:
    long_id = "C" + "9" * 199_999
    return _value_class(
        r,
        {
            "customers": [("customer_id", long_id), ("name", "N" * 100_000)],
            "transactions": [
                ("customer_id", long_id),
                ("transaction_id", "T" + "1" * 64),  # one character too many
                ("merchant_category", "G" * 10_000),
            ],
            "loan_applications": [("purpose", "P" * 1_000)],
        },
    )


def _wrong_types(r: _Records) -> list[_Draft]:
    return _value_class(
        r,
        {
            "transactions": [
                ("amount", "abc"),
                ("amount", "1d"),  # Java would read it as 1.0
                ("amount", "0x1p3"),  # and this as 8.0
                ("amount", "12.5.1"),
                ("transaction_ts", "1767225600"),
                ("transaction_ts", "2026-01-05T1"),
            ],
            "customers": [
                ("credit_score", 700.5),
                ("credit_score", "seven hundred"),
                ("annual_income", True),
                ("birth_date", "17/05/1980"),
                ("updated_at", 1767225600),
            ],
            "loan_applications": [("term_months", "thirty-six"), ("loan_amount", False)],
            "repayments": [("defaulted", "maybe"), ("defaulted", 2), ("days_past_due", "x")],
        },
    )


def _nested(r: _Records) -> list[_Draft]:
    customer = r.customer()
    # Only the key, a nested name and the time: the rest of the profile is missing.
    sparse = {
        "customer_id": f"CH{r.index:02d}{r._next():06d}",
        "name": {"first": "Ann", "last": "Lee"},
        "updated_at": r.ts(),
    }
    nested = [
        (_json(customer), True),
        (_json(sparse), False),
        (_json(r.customer(name={"first": "Bo"})), False),
        (_json(r.customer(customer_id={"id": "C1"})), False),
        (_json(r.customer(region=["NORTH", "SOUTH"])), False),
        (_json(r.customer(annual_income={"amount": 1})), False),
    ]
    applications = [
        (_json(r.application()), True),
        (_json(r.application(loan_amount=[1, 2])), False),
        (_json(r.application(purpose=["CAR"])), False),
    ]
    transaction = r.transaction(merchant_category='"{""kind"": ""GROCERY""}"')
    transactions = [(_csv_line(r.transaction()), True), (_csv_line(transaction), False)]
    return [
        _lines_file("customers", nested),
        _lines_file("loan_applications", applications),
        _lines_file("transactions", transactions),
    ]


def _bom(r: _Records) -> list[_Draft]:
    drafts = [
        _lines_file("customers", [(_json(r.customer()), True) for _ in range(3)]),
        _lines_file("transactions", [(_csv_line(r.transaction()), True) for _ in range(3)]),
    ]
    for draft in drafts:
        draft.data = _BOM + draft.data
    return drafts


def _crlf(r: _Records) -> list[_Draft]:
    drafts = [
        _lines_file("customers", [(_json(r.customer()), True) for _ in range(3)]),
        _lines_file("transactions", [(_csv_line(r.transaction()), True) for _ in range(3)]),
    ]
    for draft in drafts:
        draft.data = draft.data.replace(b"\n", b"\r\n")
    # A lone carriage return at the very end (an editor's leftover) is a line break too.
    drafts.append(
        _Draft(
            "loan_applications",
            (_json(r.application()) + "\r\n" + _json(r.application()) + "\r").encode(),
            2,
            2,
        )
    )
    return drafts


def _non_utf8(r: _Records) -> list[_Draft]:
    good_customer = _json(r.customer()).encode()
    latin1_name = _json(r.customer(name="Caf\u00e9 Owner")).encode("latin-1")
    broken = _json(r.customer(region="NORTH")).encode().replace(b"NORTH", b"NOR\xc3\x28TH")
    customers = b"\n".join([good_customer, latin1_name, broken]) + b"\n"
    good_txn = _csv_line(r.transaction()).encode()
    bad_id = _csv_line(r.transaction(customer_id="CHB000001")).encode().replace(b"CHB", b"C\xffB")
    bad_category = _csv_line(r.transaction(merchant_category="GROCERY")).encode()
    bad_category = bad_category.replace(b"GROCERY", b"GROC\xe9RY")
    transactions = b"\n".join([_CSV_HEADER.encode(), good_txn, bad_id, bad_category]) + b"\n"
    return [_Draft("customers", customers, 3, 1), _Draft("transactions", transactions, 3, 1)]


def _random_lines(rng: random.Random, count: int) -> bytes:
    """``count`` lines of random bytes: no line break, BOM lead byte or space inside, each
    starting with 0xFF, so none is blank and none parses."""
    excluded = {0x0A, 0x0D, 0x20, 0xEF}
    alphabet = bytes(b for b in range(256) if b not in excluded)
    lines = [
        b"\xff" + bytes(rng.choice(alphabet) for _ in range(rng.randrange(8, 200)))
        for _ in range(count)
    ]
    return b"\n".join(lines) + b"\n"


def _binary(r: _Records) -> list[_Draft]:
    return [
        _Draft("customers", _random_lines(r.rng, 5), 5, 0),
        # The first line of a CSV file is its header, garbage or not.
        _Draft("transactions", _random_lines(r.rng, 6), 5, 0),
    ]


def _empty(r: _Records) -> list[_Draft]:
    return [
        _Draft("customers", b"", 0, 0),
        _Draft("transactions", b"", 0, 0),
        _Draft("loan_applications", b"\n\n   \n\r\n", 0, 0),
    ]


def _header_only(r: _Records) -> list[_Draft]:
    header = _CSV_HEADER.encode()
    # Two files of one entity in one class: the second differs by its name only.
    return [
        _Draft("transactions", header + b"\n", 0, 0),
        _Draft("transactions", header, 0, 0),
    ]


def _repeated_header(r: _Records) -> list[_Draft]:
    lines = [
        (_csv_line(r.transaction()), True),
        (_csv_line(r.transaction()), True),
        (_CSV_HEADER, False),
        (_csv_line(r.transaction()), True),
        (_csv_line(r.transaction()), True),
    ]
    return [_lines_file("transactions", lines)]


def _extra_columns(r: _Records) -> list[_Draft]:
    extended = [*RAW_FIELDS["transactions"], "device_type"]
    drifted = [
        (_csv_line({**r.transaction(), "device_type": "MOBILE"}, extended), True),
        (_csv_line({**r.transaction(), "device_type": "ATM"}, extended), True),
    ]
    one_too_many = [
        (_csv_line(r.transaction()), True),
        (_csv_line(r.transaction()) + ",EXTRA", False),
    ]
    customers = [
        (_json(r.customer()), True),
        (_json({**r.customer(), "loyalty_tier": "GOLD", "notes": {"a": 1}}), True),
    ]
    return [
        _lines_file("transactions", drifted, header=",".join(extended)),
        _lines_file("transactions", one_too_many),
        _lines_file("customers", customers),
    ]


def _missing_columns(r: _Records) -> list[_Draft]:
    without_channel = [c for c in RAW_FIELDS["transactions"] if c != "channel"]
    no_channel = [(_csv_line(r.transaction(), without_channel), False) for _ in range(2)]
    short = [
        (_csv_line(r.transaction()), True),
        (",".join(_csv_line(r.transaction()).split(",")[:4]), False),
    ]
    customer = r.customer()
    incomplete = {k: v for k, v in customer.items() if k not in ("credit_score", "region")}
    keyless = {k: v for k, v in r.customer().items() if k != "customer_id"}
    customers = [(_json(r.customer()), True), (_json(incomplete), False), (_json(keyless), False)]
    application = r.application()
    no_amount = {k: v for k, v in application.items() if k != "loan_amount"}
    return [
        _lines_file("transactions", no_channel, header=",".join(without_channel)),
        _lines_file("transactions", short),
        _lines_file("customers", customers),
        _lines_file("loan_applications", [(_json(no_amount), False)]),
    ]


def _json_array(r: _Records) -> list[_Draft]:
    one_line = "[" + ",".join(_json(r.customer()) for _ in range(3)) + "]"
    first, second = r.application(), r.application()
    # Pretty-printed: the bracket lines and "{...}," do not parse; the last element is a
    # complete JSON object on a line of its own, which is a valid record.
    spread = ["[", f"  {_json(first)},", f"  {_json(second)}", "]"]
    return [
        _lines_file("customers", [(one_line, False)]),
        _lines_file(
            "loan_applications",
            [(spread[0], False), (spread[1], False), (spread[2], True), (spread[3], False)],
        ),
    ]


def _truncated(r: _Records) -> list[_Draft]:
    customers = [_json(r.customer()) for _ in range(3)]
    cut = customers[-1][: r.rng.randrange(5, len(customers[-1]) - 1)]
    json_data = "\n".join([*customers[:-1], cut]).encode()
    transactions = [_csv_line(r.transaction()) for _ in range(3)]
    last = transactions[-1]
    # Cut before the last separator, so the line is a field or more short.
    txn_cut = last[: r.rng.randrange(1, last.rindex(","))]
    csv_data = "\n".join([_CSV_HEADER, *transactions[:-1], txn_cut]).encode()
    return [_Draft("customers", json_data, 3, 2), _Draft("transactions", csv_data, 3, 2)]


def _orphans(r: _Records) -> list[_Draft]:
    r.customers = [f"CH{r.index:02d}999999"]  # sent by nobody
    application = r.application()
    return [
        _lines_file("transactions", [(_csv_line(r.transaction()), True) for _ in range(2)]),
        _lines_file("loan_applications", [(_json(application), True)]),
        _lines_file(
            "repayments",
            [(_json(r.repayment(f"AH{r.index:02d}999999", application["customer_id"])), True)],
        ),
    ]


_WRITERS: dict[str, Callable[[_Records], list[_Draft]]] = {
    "out_of_range": _out_of_range,
    "non_finite": _non_finite,
    "far_future": _far_future,
    "ancient": _ancient,
    "oversized": _oversized,
    "wrong_types": _wrong_types,
    "nested": _nested,
    "bom": _bom,
    "crlf": _crlf,
    "non_utf8": _non_utf8,
    "binary": _binary,
    "empty": _empty,
    "header_only": _header_only,
    "repeated_header": _repeated_header,
    "extra_columns": _extra_columns,
    "missing_columns": _missing_columns,
    "json_array": _json_array,
    "truncated": _truncated,
    "orphans": _orphans,
}


def _base(day: date) -> _Draft:
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC).strftime("%Y-%m-%dT00:00:01Z")
    records = [
        {
            "customer_id": base_customer_id(i),
            "name": f"Base {i + 1}",
            "birth_date": "1985-01-01",
            "annual_income": 60000.0,
            "employment_years": 5.0,
            "home_ownership": "RENT",
            "region": "NORTH",
            "credit_score": 700,
            "updated_at": moment,
        }
        for i in range(_BASE_CUSTOMERS)
    ]
    return _lines_file("customers", [(_json(rec), True) for rec in records])


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` under a hidden temporary name in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_hostile(
    landing_dir: Path | str,
    classes: Iterable[str] = HOSTILE_CLASSES,
    seed: int = 0,
    day: date | None = None,
) -> HostileReport:
    """Write the hostile files of ``classes`` into ``landing_dir/<entity>/``.

    Args:
        landing_dir: the landing root (``settings.landing_dir``).
        classes: some of :data:`HOSTILE_CLASSES`.
        seed: seed of the random values (same seed and day, same bytes).
        day: the day of the valid records' event times; defaults to yesterday (UTC), so that
            they are neither in the future nor old.

    Returns:
        A :class:`HostileReport` with every file and its line counts.

    Raises:
        ValueError: an unknown class, or a negative seed.
    """
    chosen = parse_classes(",".join(classes))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    day = day or (datetime.now(UTC).date() - timedelta(days=1))
    landing = Path(landing_dir)
    written: list[HostileFile] = []

    def emit(hostile_class: str, drafts: Sequence[_Draft]) -> None:
        seen: dict[str, int] = {}
        for draft in drafts:
            n = seen.get(draft.entity, 0)
            seen[draft.entity] = n + 1
            suffix = f"-{n + 1}" if n else ""
            ext = LANDING_FORMATS[draft.entity]
            name = f"{draft.entity}_hostile-{hostile_class}{suffix}.{ext}"
            path = landing / draft.entity / name
            _write_bytes(path, draft.data)
            written.append(HostileFile(path, draft.entity, hostile_class, draft.lines,
                                       draft.accepted))  # fmt: skip

    emit(BASE, [_base(day)])
    for hostile_class in chosen:
        index = HOSTILE_CLASSES.index(hostile_class)
        rng = random.Random(f"{seed}:{hostile_class}")
        emit(hostile_class, _WRITERS[hostile_class](_Records(index, day, rng)))
    return HostileReport(tuple(written))


__all__ = [
    "BASE",
    "HOSTILE_CLASSES",
    "HostileFile",
    "HostileReport",
    "base_customer_id",
    "parse_classes",
    "write_hostile",
]
