"""The faults the generator injects into the clean world: late deliveries, duplicates, bad lines.

:func:`plan_faults` decides, day by day from the fault streams, which records land late and
which extra lines (exact and key duplicates, lines that do not parse, lines with an unreadable
value) each drop carries; :func:`corrected`, :func:`invalid_value`, :func:`spoiled_csv` and
:func:`spoiled_json` then spoil the rendered values. Faults draw from their own streams, so the
clean world is the same whatever the fault rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lakehouse.medallion.contracts import LANDING_FORMATS
from lakehouse.simulation.config import GeneratorConfig
from lakehouse.simulation.world import DAY, Table, rng

#: Entities whose events may arrive late (1-5 days after their event day).
LATE_ENTITIES: tuple[str, ...] = ("transactions", "loan_applications")
#: The field a key duplicate corrects, per entity.
CORRECTED_FIELDS: dict[str, str] = {
    "customers": "annual_income",
    "transactions": "amount",
    "loan_applications": "loan_amount",
    "repayments": "days_past_due",
}
#: The field an invalid-value line spoils, per entity (one silver declares NOT NULL).
INVALID_VALUE_FIELDS: dict[str, str] = {
    "customers": "updated_at",
    "transactions": "amount",
    "loan_applications": "loan_amount",
    "repayments": "defaulted",
}
MAX_LATE_DAYS = 5

#: Fault streams are keyed (seed, day, S_FAULTS + the entity's index), apart from the world's.
S_FAULTS = 100

# Fault kinds of extra lines.
EXACT, KEY, TRUNCATED, SYNTAX, MISSING_COL, EXTRA_COL, INVALID = range(7)

_BAD_NUMBERS = ("N/A", "n/a", "abc", "12.5.1", "--", "?", "", "1O0.00", "$")
_BAD_TIMESTAMPS = ("yesterday", "2026-02-30T25:61:00Z", "N/A", "", "01/02/2026 10:00")
_BAD_BOOLEANS = ("maybe", "N/A", "", "unknown", "?")


@dataclass
class Extras:
    """Extra lines (duplicates and bad lines) of one entity."""

    record: np.ndarray
    kind: np.ndarray
    target_day: np.ndarray
    position: np.ndarray  # seconds into the target day, orders the line in its file
    param: np.ndarray  # uniform in [0, 1): which value, where to cut, how to correct
    serial: np.ndarray  # reserved key number of a bad line


def plan_faults(
    config: GeneratorConfig, entity: str, index: int, table: Table, last_day: int
) -> Extras:
    """Decide late delivery (in place) and the extra lines of ``entity``, day by day."""
    starts = np.searchsorted(table.event_day, np.arange(last_day + 2))
    parts: list[tuple[np.ndarray, ...]] = []
    csv_entity = LANDING_FORMATS[entity] == "csv"
    for day in range(last_day + 1):
        lo, hi = int(starts[day]), int(starts[day + 1])
        k = hi - lo
        r = rng(config.seed, day, S_FAULTS + index)
        u_late, lag = r.random(k), r.integers(1, MAX_LATE_DAYS + 1, k)
        u_dup, dup_after = r.random(k), r.integers(0, 4, k)
        u_key, key_after = r.random(k), r.integers(1, 4, k)
        pos = r.integers(0, DAY, (2, k))
        key_param = r.random(k)
        n_bad = int(r.binomial(k, config.malformed_rate)) if k else 0
        bad_record = r.integers(0, max(k, 1), n_bad)
        bad_kind = r.integers(0, 3, n_bad)
        bad_param, bad_pos = r.random(n_bad), r.integers(0, DAY, n_bad)

        if entity in LATE_ENTITIES:
            late = u_late < config.late_rate
            table.late[lo:hi] = late
            table.delivery_day[lo:hi] = day + np.where(late, lag, 0)
        delivery = table.delivery_day[lo:hi]
        records = np.arange(lo, hi)

        dup = u_dup < config.duplicate_rate
        dup_after = np.where(dup_after == 3, 0, dup_after)  # half in the same drop
        dup_target = delivery + dup_after
        # A duplicate stays in a drop of the same schema as its original (drift or not).
        same = np.array(
            [config.schema_drifted(entity, int(a)) == config.schema_drifted(entity, int(b))
             for a, b in zip(delivery[dup], dup_target[dup], strict=True)],
            dtype=bool,
        )  # fmt: skip
        dup_target[np.flatnonzero(dup)[~same]] = delivery[dup][~same]
        key = u_key < config.key_duplicate_rate
        key_target = delivery + key_after

        if csv_entity:
            kinds = np.array([MISSING_COL, EXTRA_COL, INVALID])[bad_kind]
        else:
            kinds = np.array([TRUNCATED, SYNTAX, INVALID])[bad_kind]
        parts.append(
            (
                np.concatenate([records[dup], records[key], lo + bad_record]),
                np.concatenate([np.full(dup.sum(), EXACT), np.full(key.sum(), KEY), kinds]).astype(
                    np.int64
                ),
                np.concatenate([dup_target[dup], key_target[key], np.full(n_bad, day)]),
                np.concatenate([pos[0][dup], pos[1][key], bad_pos]),
                np.concatenate([key_param[dup], key_param[key], bad_param]),
                np.concatenate([np.zeros(dup.sum() + key.sum(), np.int64), np.arange(n_bad)]),
            )
        )
    columns = [np.concatenate([p[i] for p in parts]) for i in range(6)] if parts else []
    if not columns:
        empty = np.empty(0, np.int64)
        return Extras(empty, empty, empty, empty, np.empty(0), empty)
    return Extras(
        columns[0].astype(np.int64),
        columns[1],
        columns[2].astype(np.int64),
        columns[3].astype(np.int64),
        columns[4],
        columns[5].astype(np.int64),
    )


def corrected(entity: str, value: Any, param: float) -> Any:
    """A different value of the corrected field of a key duplicate."""
    if entity == "customers":
        new = round(value * (0.85 + 0.3 * param), -2)
        return new + 100.0 if new == value else new
    if entity == "transactions":
        old = float(value)
        new = max(round(old * (0.5 + param), 2), 1.0)
        return f"{(new + 0.01 if new == old else new):.2f}"
    if entity == "loan_applications":
        new = max(round(value * (0.8 + 0.4 * param) / 50.0) * 50.0, 500.0)
        return new + 50.0 if new == value else new
    if value >= 30:
        return value + 1 + int(param * 10)
    return value + 1 if value < 29 else 28


def invalid_value(entity: str, param: float) -> str:
    """An unreadable value of the entity's :data:`INVALID_VALUE_FIELDS` field."""
    choices: tuple[str, ...]
    if entity == "customers":
        choices = _BAD_TIMESTAMPS
    elif entity == "repayments":
        choices = _BAD_BOOLEANS
    else:
        choices = _BAD_NUMBERS
    return choices[int(param * len(choices)) % len(choices)]


def spoiled_csv(row: list[Any], kind: int, param: float) -> str:
    """A CSV line of ``row`` with the wrong column count (``INVALID``: the right one)."""
    tokens = [str(v) for v in row]
    if kind == MISSING_COL:
        del tokens[1 + int(param * (len(tokens) - 1))]
    elif kind == EXTRA_COL:
        tokens.append(tokens[-1])
    return ",".join(tokens)


def spoiled_json(line: str, kind: int, param: float) -> str:
    """A JSON ``line`` cut short or broken (``INVALID``: left whole)."""
    if kind == TRUNCATED:
        return line[: 1 + int(param * (len(line) - 2))]
    if kind == SYNTAX:
        return line.replace('":', '"=', 1)
    return line
