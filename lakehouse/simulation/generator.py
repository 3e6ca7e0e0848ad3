"""A seeded generator of the raw credit-risk world: daily drops into ``landing/<entity>/``.

The world: customers with a profile (age, income, employment, home ownership, region, a bureau
credit score correlated with them) that some of them update later; card transactions in merchant
categories (``GAMBLING`` among them) and channels; loan applications; and repayment outcomes
observed 28 to 70 days after each application. Whether a loan defaults is drawn from a logistic
function of what the gold features can see (credit score, loan amount against income,
employment years, term, age, the 30-day gambling share and spending) plus noise, so a model can
learn it well but not perfectly.

Every drop follows the landing contract of :mod:`lakehouse.medallion.contracts`
(``LANDING_FORMATS``, ``RAW_FIELDS``): ``landing/<entity>/<entity>_<YYYY-MM-DD>.json|csv``, JSON
lines or CSV with a header, timestamps ``2026-01-05T13:45:10Z``. Each file is written under a
temporary name that starts with ``.`` and then renamed, so a streaming reader watching the folder
never sees half a file. One file per entity per day is written, empty or not (a CSV file
always has its header).

Faults and drift are injected on purpose (see :class:`GeneratorConfig`), and
:func:`generate` returns a :class:`GenerationReport` that accounts for every line written::

    lines == clean_records + malformed + invalid_values + exact_duplicates + key_duplicates

``late`` counts clean records delivered after their event day and ``drifted_lines`` the lines
(other than malformed or invalid ones) that carry a field outside the contract; both are
properties of lines already counted above.

Determinism: the world is simulated day by day with one random stream per (seed, day, purpose),
so the same configuration gives byte-identical files, generating a range of days gives the same
files as generating everything at once, and a longer horizon (``days``) only adds drops: the
file of day ``d`` depends on nothing after ``d``. Faults draw from their own streams, so the clean
world is the same whatever the fault rates. Records that would land after the horizon (a late
event, a duplicate, an outcome not yet observed) are simply not written yet.

The world is simulated by :mod:`lakehouse.simulation.world`, its faults planned by
:mod:`lakehouse.simulation.faults`; this module renders and writes the drops and accounts for
them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from lakehouse.medallion.contracts import (
    CHANNELS,
    GAMBLING,
    HOME_OWNERSHIP,
    LANDING_FORMATS,
    MERCHANT_CATEGORIES,
    PURPOSES,
    RAW_FIELDS,
    REGIONS,
    TERMS,
)
from lakehouse.platform.catalog import ENTITIES
from lakehouse.simulation.config import (
    APPLICATION_CHANNEL_FIELD,
    APPLICATION_CHANNELS,
    DEVICE_TYPE_FIELD,
    DEVICE_TYPES,
    DRIFT_FIELDS,
    GeneratorConfig,
)
from lakehouse.simulation.faults import (
    CORRECTED_FIELDS,
    EXACT,
    INVALID,
    INVALID_VALUE_FIELDS,
    KEY,
    LATE_ENTITIES,
    MAX_LATE_DAYS,
    Extras,
    corrected,
    invalid_value,
    plan_faults,
    spoiled_csv,
    spoiled_json,
)
from lakehouse.simulation.world import DAY, OBSERVATION_DAYS, World, simulate

log = logging.getLogger(__name__)

#: Reserved key prefix of bad lines, per entity (``TX...``, ``CX...``, ``AX...``).
_PREFIX = {"customers": "C", "transactions": "T", "loan_applications": "A", "repayments": "A"}


# --- Report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntityReport:
    """What was written for one entity (or, for :attr:`GenerationReport.totals`, for all).

    Attributes:
        entity: entity name, or ``"total"``.
        files: files written.
        lines: data lines written (CSV header lines excluded).
        clean_records: lines holding a record of the world for the first time (each business
            key once).
        malformed: lines that do not parse (truncated or broken JSON, wrong CSV column count).
        invalid_values: lines that parse but carry an unreadable required value (for example
            a non-numeric amount); silver has to reject them.
        exact_duplicates: byte-identical repeats of a clean line.
        key_duplicates: lines repeating a clean record's business key with corrected content.
        late: clean records whose event day is 1-5 days before the drop they are in.
        drifted_lines: parseable lines carrying the schema-drift field (clean or duplicate).
    """

    entity: str
    files: int = 0
    lines: int = 0
    clean_records: int = 0
    malformed: int = 0
    invalid_values: int = 0
    exact_duplicates: int = 0
    key_duplicates: int = 0
    late: int = 0
    drifted_lines: int = 0

    def __add__(self, other: EntityReport) -> EntityReport:
        """Counts summed (the entity name of ``self`` is kept)."""
        counts = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in fields(self)
            if f.name != "entity"
        }
        return EntityReport(self.entity, **counts)

    @property
    def balanced(self) -> bool:
        """Whether every line is one of: clean, malformed, invalid, duplicate."""
        return self.lines == (
            self.clean_records
            + self.malformed
            + self.invalid_values
            + self.exact_duplicates
            + self.key_duplicates
        )


@dataclass(frozen=True)
class GenerationReport:
    """What :func:`generate` wrote.

    Attributes:
        landing_dir: the landing root the drops went to.
        days: the day indexes generated.
        entities: per entity name, its :class:`EntityReport`.
        paths: every file written, in writing order.
    """

    landing_dir: Path
    days: tuple[int, ...]
    entities: Mapping[str, EntityReport]
    paths: tuple[Path, ...] = field(default=())

    @property
    def totals(self) -> EntityReport:
        """The counts of every entity summed."""
        total = EntityReport("total")
        for report in self.entities.values():
            total = total + report
        return total

    @property
    def total_files(self) -> int:
        """Files written, all entities."""
        return self.totals.files

    @property
    def total_lines(self) -> int:
        """Data lines written, all entities."""
        return self.totals.lines

    def entity(self, name: str) -> EntityReport:
        """The report of one entity."""
        if name not in self.entities:
            raise KeyError(f"unknown entity {name!r}: expected one of {list(self.entities)}")
        return self.entities[name]

    def merged(self, other: GenerationReport) -> GenerationReport:
        """The report of two generations into the same landing folder, summed."""
        names = list(dict.fromkeys([*self.entities, *other.entities]))
        entities = {
            n: self.entities.get(n, EntityReport(n)) + other.entities.get(n, EntityReport(n))
            for n in names
        }
        return GenerationReport(
            self.landing_dir,
            tuple(sorted({*self.days, *other.days})),
            entities,
            self.paths + other.paths,
        )

    def rows(self) -> list[tuple[Any, ...]]:
        """One row per entity and a total row, for printing (see :data:`REPORT_HEADERS`)."""
        reports = [*self.entities.values(), self.totals]
        return [tuple(getattr(r, h) for h in REPORT_HEADERS) for r in reports]


#: Column order of :meth:`GenerationReport.rows`.
REPORT_HEADERS: tuple[str, ...] = tuple(f.name for f in fields(EntityReport))


def landing_path(landing_dir: Path | str, entity: str, day: date) -> Path:
    """``<landing_dir>/<entity>/<entity>_<YYYY-MM-DD>.<json|csv>``."""
    if entity not in LANDING_FORMATS:
        raise ValueError(f"unknown entity {entity!r}: expected one of {list(LANDING_FORMATS)}")
    return Path(landing_dir) / entity / f"{entity}_{day.isoformat()}.{LANDING_FORMATS[entity]}"


# --- Rendering -------------------------------------------------------------------------------


def _timestamps(config: GeneratorConfig, seconds: np.ndarray) -> list[str]:
    base = np.datetime64(config.start_date.isoformat(), "s")
    text = np.datetime_as_string(base + seconds.astype("timedelta64[s]"), unit="s")
    return [f"{t}Z" for t in text.tolist()]


def _values(world: World, entity: str, idx: np.ndarray) -> list[list[Any]]:
    """Contract values (in ``RAW_FIELDS`` order) of records ``idx``, as Python objects."""
    cols = world.tables[entity].cols
    ts = _timestamps(world.config, cols["ts"][idx])
    customer = [f"C{c + 1:06d}" for c in cols["customer"][idx].tolist()]
    if entity == "customers":
        who = cols["customer"][idx].tolist()
        return [
            [cid, world.names[c], world.birth[c], inc, emp, HOME_OWNERSHIP[h], REGIONS[g], cs, t]
            for cid, c, inc, emp, h, g, cs, t in zip(
                customer,
                who,
                cols["income"][idx].tolist(),
                cols["employment"][idx].tolist(),
                cols["home"][idx].tolist(),
                cols["region"][idx].tolist(),
                cols["credit"][idx].tolist(),
                ts,
                strict=True,
            )
        ]
    if entity == "transactions":
        return [
            [f"T{i:010d}", cid, f"{a:.2f}", MERCHANT_CATEGORIES[c], CHANNELS[ch], t]
            for i, cid, a, c, ch, t in zip(
                cols["id"][idx].tolist(),
                customer,
                cols["amount"][idx].tolist(),
                cols["category"][idx].tolist(),
                cols["channel"][idx].tolist(),
                ts,
                strict=True,
            )
        ]
    if entity == "loan_applications":
        return [
            [f"A{i:08d}", cid, t, loan, term, PURPOSES[p]]
            for i, cid, t, loan, term, p in zip(
                cols["id"][idx].tolist(),
                customer,
                ts,
                cols["loan"][idx].tolist(),
                cols["term"][idx].tolist(),
                cols["purpose"][idx].tolist(),
                strict=True,
            )
        ]
    return [
        [f"A{i:08d}", cid, t, d, dpd]
        for i, cid, t, d, dpd in zip(
            cols["id"][idx].tolist(),
            customer,
            ts,
            cols["defaulted"][idx].tolist(),
            cols["dpd"][idx].tolist(),
            strict=True,
        )
    ]


def _drift_values(world: World, entity: str, idx: np.ndarray) -> list[str]:
    cols = world.tables[entity].cols
    if entity == "transactions":
        return [DEVICE_TYPES[d] for d in cols["device"][idx].tolist()]
    return [APPLICATION_CHANNELS[c] for c in cols["app_channel"][idx].tolist()]


def _json_line(names: Sequence[str], values: Sequence[Any]) -> str:
    return json.dumps(
        dict(zip(names, values, strict=True)), separators=(",", ":"), ensure_ascii=False
    )


def _render_file(world: World, extras: Extras, entity: str, day: int) -> tuple[str, EntityReport]:
    """The text of one drop and its counts."""
    config = world.config
    table = world.tables[entity]
    drifted = config.schema_drifted(entity, day)
    names = list(RAW_FIELDS[entity])
    if drifted:
        names.append(DRIFT_FIELDS[entity])
    is_csv = LANDING_FORMATS[entity] == "csv"

    clean = np.flatnonzero(table.delivery_day == day)
    mine = np.flatnonzero(extras.target_day == day)
    extra_records = extras.record[mine]
    records = np.concatenate([clean, extra_records])
    values = _values(world, entity, records)
    if drifted:
        for row, extra in zip(values, _drift_values(world, entity, records), strict=True):
            row.append(extra)
    keys = np.concatenate([table.event_s[clean] - day * DAY, extras.position[mine]])
    lines: list[str] = []
    corrected_at = RAW_FIELDS[entity].index(CORRECTED_FIELDS[entity])
    invalid_at = RAW_FIELDS[entity].index(INVALID_VALUE_FIELDS[entity])
    counts = dict.fromkeys(("malformed", "invalid", "exact", "key"), 0)
    n_clean = len(clean)
    for i, row in enumerate(values):
        if i >= n_clean:
            j = mine[i - n_clean]
            kind, param = int(extras.kind[j]), float(extras.param[j])
            if kind == KEY:
                row[corrected_at] = corrected(entity, row[corrected_at], param)
                counts["key"] += 1
            elif kind == EXACT:
                counts["exact"] += 1
            else:
                row[0] = f"{_PREFIX[entity]}X{day:04d}{int(extras.serial[j]):06d}"
                if kind == INVALID:
                    row[invalid_at] = invalid_value(entity, param)
                    counts["invalid"] += 1
                else:
                    counts["malformed"] += 1
                lines.append(
                    spoiled_csv(row, kind, param)
                    if is_csv
                    else spoiled_json(_json_line(names, row), kind, param)
                )
                continue
        lines.append(",".join(row) if is_csv else _json_line(names, row))
    order = np.argsort(keys, kind="stable")
    body = "".join(lines[i] + "\n" for i in order.tolist())
    if is_csv:
        body = ",".join(names) + "\n" + body
    parseable = n_clean + counts["exact"] + counts["key"]
    report = EntityReport(
        entity,
        files=1,
        lines=len(lines),
        clean_records=n_clean,
        malformed=counts["malformed"],
        invalid_values=counts["invalid"],
        exact_duplicates=counts["exact"],
        key_duplicates=counts["key"],
        late=int(table.late[clean].sum()),
        drifted_lines=parseable if drifted else 0,
    )
    return body, report


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` under a hidden temporary name in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _day_indexes(config: GeneratorConfig, days: Iterable[int] | None) -> tuple[int, ...]:
    if days is None:
        return tuple(range(config.days))
    chosen = tuple(sorted(set(days)))
    if not chosen:
        raise ValueError("days is empty: nothing to generate")
    outside = [d for d in chosen if not 0 <= d < config.days]
    if outside:
        raise ValueError(
            f"days {outside[:5]} are outside the horizon 0..{config.days - 1} "
            f"({config.start_date} .. {config.end_date})"
        )
    return chosen


def generate(
    landing_dir: Path | str,
    config: GeneratorConfig | None = None,
    days: range | Iterable[int] | None = None,
) -> GenerationReport:
    """Write the daily drops of ``config``'s world into ``landing_dir/<entity>/``.

    Args:
        landing_dir: the landing root (``settings.landing_dir``).
        config: the world and its faults; defaults to :class:`GeneratorConfig`'s defaults.
        days: day indexes to write (``range(0, 60)`` then ``range(60, 90)`` writes the same
            files as everything at once); ``None`` writes the whole horizon.

    Returns:
        A :class:`GenerationReport` accounting for every line written by this call.

    Raises:
        ValueError: when a day index is outside ``0 .. config.days - 1``.
    """
    config = config or GeneratorConfig()
    chosen = _day_indexes(config, days)
    last_day = max(chosen)
    world = simulate(config, last_day)
    extras = {
        entity: plan_faults(config, entity, index, world.tables[entity], last_day)
        for index, entity in enumerate(ENTITIES)
    }
    reports = {entity: EntityReport(entity) for entity in ENTITIES}
    paths: list[Path] = []
    for day in chosen:
        for entity in ENTITIES:
            text, counts = _render_file(world, extras[entity], entity, day)
            path = landing_path(landing_dir, entity, config.date_of(day))
            _write_atomic(path, text)
            paths.append(path)
            reports[entity] = reports[entity] + counts
    report = GenerationReport(Path(landing_dir), chosen, reports, tuple(paths))
    log.info(
        "wrote %d files, %d lines (%d transactions) for days %d..%d to %s",
        report.total_files,
        report.total_lines,
        reports["transactions"].lines,
        chosen[0],
        chosen[-1],
        landing_dir,
    )
    return report


__all__ = [
    "APPLICATION_CHANNELS",
    "APPLICATION_CHANNEL_FIELD",
    "CHANNELS",
    "CORRECTED_FIELDS",
    "DEVICE_TYPES",
    "DEVICE_TYPE_FIELD",
    "DRIFT_FIELDS",
    "ENTITIES",
    "GAMBLING",
    "HOME_OWNERSHIP",
    "INVALID_VALUE_FIELDS",
    "LATE_ENTITIES",
    "MAX_LATE_DAYS",
    "MERCHANT_CATEGORIES",
    "OBSERVATION_DAYS",
    "PURPOSES",
    "REGIONS",
    "REPORT_HEADERS",
    "TERMS",
    "EntityReport",
    "GenerationReport",
    "GeneratorConfig",
    "generate",
    "landing_path",
]
