"""A seeded generator of the raw credit-risk world: daily drops into ``landing/<entity>/``.

The world: customers with a profile (age, income, employment, home ownership, region, a bureau
credit score correlated with them) that some of them update later; card transactions in merchant
categories (``GAMBLING`` among them) and channels; loan applications; and repayment outcomes
observed 28 to 70 days after each application. Whether a loan defaults is drawn from a logistic
function of what the gold features can see (credit score, loan amount against income,
employment years, term, age, the 30-day gambling share and spending) plus noise, so a model can
learn it well but not perfectly.

Every drop follows the landing contract of :mod:`lakehouse.medallion.contracts`
(``LANDING_FORMATS``,
``RAW_FIELDS``): ``landing/<entity>/<entity>_<YYYY-MM-DD>.json|csv``, JSON lines or CSV with a
header, timestamps ``2026-01-05T13:45:10Z``. Each file is written under a temporary name that
starts with ``.`` and then renamed, so a streaming reader watching the folder never sees half a
file. One file per entity per day is written, empty or not (a CSV file always has its header).

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
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from lakehouse.medallion.contracts import LANDING_FORMATS, RAW_FIELDS

log = logging.getLogger(__name__)

ENTITIES: tuple[str, ...] = ("customers", "transactions", "loan_applications", "repayments")

HOME_OWNERSHIP: tuple[str, ...] = ("RENT", "OWN", "MORTGAGE")
REGIONS: tuple[str, ...] = ("NORTH", "SOUTH", "EAST", "WEST", "CENTRAL")
MERCHANT_CATEGORIES: tuple[str, ...] = (
    "GROCERY",
    "RESTAURANTS",
    "FUEL",
    "UTILITIES",
    "HEALTH",
    "ENTERTAINMENT",
    "ELECTRONICS",
    "TRAVEL",
    "CASH",
    "GAMBLING",
)
GAMBLING = "GAMBLING"
CHANNELS: tuple[str, ...] = ("POS", "ONLINE", "ATM")
TERMS: tuple[int, ...] = (12, 24, 36, 48, 60)
PURPOSES: tuple[str, ...] = ("CAR", "HOME_IMPROVEMENT", "DEBT_CONSOLIDATION", "EDUCATION", "OTHER")

#: Extra field of ``loan_applications`` JSON lines from ``schema_drift_from_day`` on.
APPLICATION_CHANNEL_FIELD = "application_channel"
APPLICATION_CHANNELS: tuple[str, ...] = ("WEB", "MOBILE", "BRANCH", "BROKER")
#: Extra last column of ``transactions`` CSV files from ``schema_drift_from_day`` on.
DEVICE_TYPE_FIELD = "device_type"
DEVICE_TYPES: tuple[str, ...] = ("MOBILE", "DESKTOP", "TABLET", "TERMINAL", "ATM")

#: The extra field each entity carries under schema drift.
DRIFT_FIELDS: dict[str, str] = {
    "transactions": DEVICE_TYPE_FIELD,
    "loan_applications": APPLICATION_CHANNEL_FIELD,
}
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
#: Outcomes are observed this many days after the application (inclusive bounds).
OBSERVATION_DAYS: tuple[int, int] = (28, 70)
MAX_LATE_DAYS = 5

_DAY = 86_400
_PREFIX = {"customers": "C", "transactions": "T", "loan_applications": "A", "repayments": "A"}
_BAD_NUMBERS = ("N/A", "n/a", "abc", "12.5.1", "--", "?", "", "1O0.00", "$")
_BAD_TIMESTAMPS = ("yesterday", "2026-02-30T25:61:00Z", "N/A", "", "01/02/2026 10:00")
_BAD_BOOLEANS = ("maybe", "N/A", "", "unknown", "?")

# Random stream purposes: world streams per day, fault streams per (day, entity).
_S_STATIC, _S_PROFILES, _S_TRANSACTIONS, _S_APPLICATIONS, _S_FAULTS = 0, 1, 2, 3, 100

# Fault kinds of extra lines.
_EXACT, _KEY, _TRUNCATED, _SYNTAX, _MISSING_COL, _EXTRA_COL, _INVALID = range(7)

_FIRST_NAMES = (
    "Ava", "Liam", "Mia", "Noah", "Emma", "Oliver", "Sofia", "Lucas", "Chloe", "Leo",
    "Zoe", "Ethan", "Lena", "Adam", "Nora", "Hugo", "Ines", "Jonas", "Maya", "Omar",
    "Clara", "Felix", "Sara", "Ivan", "Lara", "Theo", "Elif", "Marco", "Anya", "Pablo",
)  # fmt: skip
_LAST_NAMES = (
    "Novak", "Smith", "Garcia", "Kowalski", "Rossi", "Müller", "Dubois", "Jensen", "Silva",
    "Horvat", "Nagy", "Ivanova", "Brown", "Martin", "Fischer", "Costa", "Larsen", "Popescu",
    "Weber", "Moreau", "Santos", "Keller", "Lindqvist", "Papadopoulos", "Yilmaz", "Walsh",
)  # fmt: skip


# --- Configuration and report ----------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorConfig:
    """What world to generate and which faults to inject.

    Attributes:
        seed: seed of every random stream (non-negative).
        customers: number of customers; 75% exist from day 0, the rest join over days 1-60.
        start_date: date of day 0 (the first drop).
        days: horizon: drops are dated ``start_date`` .. ``start_date + days - 1``.
        txn_per_customer_per_day: mean transactions per active customer per day (more on
            weekends; customers differ in activity).
        application_rate: mean loan applications per active customer per day.
        profile_update_rate: chance per customer per day of a new profile version.
        malformed_rate: about this many extra bad lines per clean record of a drop; two thirds
            do not parse (truncated or broken JSON, wrong CSV column count: ``malformed``), one
            third parse but carry an unreadable required value such as a non-numeric amount
            (``invalid_values``). Bad lines use reserved keys (``TX...``, ``AX...``, ``CX...``)
            that no clean record uses, so no clean record is lost.
        duplicate_rate: chance that a record's line is emitted a second time, byte-identical,
            in the same drop or one of the next three.
        key_duplicate_rate: chance that a record is emitted again 1-3 drops later with the same
            business key and corrected content (amount, income, loan amount, days past due).
        late_rate: chance that a transaction or loan application lands 1-5 drops after its
            event day (its event time is then 1-5 days before the drop date).
        schema_drift_from_day: from this day index on, ``loan_applications`` lines carry an
            extra ``application_channel`` field and ``transactions`` files an extra last column
            ``device_type``; ``None`` for no schema drift.
        drift_from_day: from this day index on, the distributions drift: new and updated
            incomes fall, transaction amounts and the gambling share rise, defaults rise;
            ``None`` for no drift.
        drift_strength: size of the distribution drift (0 none, 1 clearly visible).
    """

    seed: int = 42
    customers: int = 2000
    start_date: date = date(2026, 1, 1)
    days: int = 90
    txn_per_customer_per_day: float = 0.6
    application_rate: float = 0.015
    profile_update_rate: float = 0.004
    malformed_rate: float = 0.002
    duplicate_rate: float = 0.003
    key_duplicate_rate: float = 0.002
    late_rate: float = 0.01
    schema_drift_from_day: int | None = None
    drift_from_day: int | None = None
    drift_strength: float = 1.0

    def __post_init__(self) -> None:
        _check_int("seed", self.seed, 0, 2**63 - 1)
        _check_int("customers", self.customers, 1, 999_999)
        _check_int("days", self.days, 1, 36_500)
        if not isinstance(self.start_date, date) or isinstance(self.start_date, datetime):
            raise ValueError(f"start_date must be a datetime.date, got {self.start_date!r}")
        for name in ("txn_per_customer_per_day",):
            _check_float(name, getattr(self, name), 0.0, 100.0)
        for name in (
            "application_rate",
            "profile_update_rate",
            "malformed_rate",
            "duplicate_rate",
            "key_duplicate_rate",
            "late_rate",
        ):
            _check_float(name, getattr(self, name), 0.0, 1.0)
        _check_float("drift_strength", self.drift_strength, 0.0, 10.0)
        for name in ("schema_drift_from_day", "drift_from_day"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 0, 36_500)

    def date_of(self, day: int) -> date:
        """The calendar date of day index ``day``."""
        return self.start_date + timedelta(days=day)

    @property
    def end_date(self) -> date:
        """The date of the last drop of the horizon."""
        return self.date_of(self.days - 1)

    def without_faults(self) -> GeneratorConfig:
        """A copy with every fault rate at zero and no schema or distribution drift."""
        return replace(
            self,
            malformed_rate=0.0,
            duplicate_rate=0.0,
            key_duplicate_rate=0.0,
            late_rate=0.0,
            schema_drift_from_day=None,
            drift_from_day=None,
        )

    def schema_drifted(self, entity: str, day: int) -> bool:
        """Whether the drop of ``entity`` on day index ``day`` carries the drift field."""
        start = self.schema_drift_from_day
        return entity in DRIFT_FIELDS and start is not None and day >= start


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def _check_float(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


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


# --- Simulation ------------------------------------------------------------------------------


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *keys])))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _pick(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw: ``probs`` (k, n) or (n,), ``u`` uniform (k,)."""
    cum = np.cumsum(probs, axis=-1)
    if cum.ndim == 1:
        return np.minimum(np.searchsorted(cum / cum[-1], u, side="right"), len(cum) - 1)
    cum = cum / cum[:, -1:]
    return np.minimum((u[:, None] >= cum).sum(axis=1), cum.shape[1] - 1)


# Merchant categories: base share, log-mean amount, log-sd (GAMBLING is added per customer).
_CAT_SHARE = np.array([0.30, 0.16, 0.11, 0.07, 0.05, 0.09, 0.04, 0.03, 0.15, 0.0])
_CAT_MU = np.log(np.array([42.0, 30.0, 55.0, 95.0, 60.0, 35.0, 260.0, 320.0, 80.0, 55.0]))
_CAT_SIGMA = np.array([0.55, 0.5, 0.35, 0.4, 0.6, 0.6, 0.7, 0.7, 0.6, 0.8])
_CASH = MERCHANT_CATEGORIES.index("CASH")
_GAMBLING = MERCHANT_CATEGORIES.index(GAMBLING)
_PURPOSE_SHARE = np.array([0.25, 0.2, 0.3, 0.1, 0.15])
_PURPOSE_SIZE = np.log(np.array([0.35, 0.3, 0.25, 0.2, 0.12]))


@dataclass
class _Table:
    """Columnar records of one entity over the simulated days, in event order."""

    cols: dict[str, np.ndarray]
    event_s: np.ndarray  # event time, seconds since the start of day 0
    event_day: np.ndarray
    delivery_day: np.ndarray
    late: np.ndarray

    @property
    def size(self) -> int:
        return len(self.event_s)


@dataclass
class _Extras:
    """Extra lines (duplicates and bad lines) of one entity."""

    record: np.ndarray
    kind: np.ndarray
    target_day: np.ndarray
    position: np.ndarray  # seconds into the target day, orders the line in its file
    param: np.ndarray  # uniform in [0, 1): which value, where to cut, how to correct
    serial: np.ndarray  # reserved key number of a bad line


@dataclass
class _World:
    config: GeneratorConfig
    names: list[str]
    birth: list[str]
    tables: dict[str, _Table]
    extras: dict[str, _Extras]


def _concat(parts: list[dict[str, np.ndarray]], template: dict[str, np.dtype]) -> dict[str, Any]:
    if not parts:
        return {k: np.empty(0, dtype=t) for k, t in template.items()}
    return {k: np.concatenate([p[k] for p in parts]) for k in template}


def _simulate(config: GeneratorConfig, last_day: int) -> _World:
    """Simulate days ``0 .. last_day`` of the world (cheap arrays, no text)."""
    n, seed = config.customers, config.seed
    rng = _rng(seed, _S_STATIC)
    age0 = 21.0 + 54.0 * rng.beta(2.0, 3.2, n)
    birth_offset = np.floor(age0 * 365.25).astype(np.int64) + rng.integers(0, 365, n)
    start_ord = config.start_date.toordinal()
    birth = [date.fromordinal(start_ord - int(b)).isoformat() for b in birth_offset]
    first = rng.integers(0, len(_FIRST_NAMES), n)
    last = rng.integers(0, len(_LAST_NAMES), n)
    names = [f"{_FIRST_NAMES[a]} {_LAST_NAMES[b]}" for a, b in zip(first, last, strict=True)]
    joins_later = rng.random(n) >= 0.75
    onboard = np.where(joins_later, rng.integers(1, 61, n), 0)
    onboard_s = rng.integers(0, 6 * 3600, n)
    employment = np.round(np.minimum(age0 - 18.0, rng.gamma(1.6, 4.5, n)), 1)
    z_income = rng.standard_normal(n)
    income = np.exp(
        np.log(40_000.0) + 0.012 * employment + 0.006 * np.minimum(age0 - 21, 30) + 0.42 * z_income
    )
    gamble = np.where(rng.random(n) < 0.15, rng.beta(2.0, 6.0, n), rng.beta(0.6, 30.0, n))
    score_noise = rng.normal(0.0, 45.0, n)
    credit = 655.0 + 38.0 * z_income + 2.5 * employment + 1.0 * (age0 - 40) - 160.0 * gamble
    credit = credit + score_noise
    home_logits = np.stack(
        [
            1.0 - 0.05 * (age0 - 30) - 0.4 * z_income,
            -1.2 + 0.06 * (age0 - 30),
            0.3 + 0.7 * z_income + 0.02 * (age0 - 30),
        ],
        axis=1,
    )
    home = _pick(np.exp(home_logits), rng.random(n))
    region = _pick(np.array([0.22, 0.2, 0.18, 0.18, 0.22]), rng.random(n))
    spend = np.exp(0.6 * np.log(income / 40_000.0) + rng.normal(0.0, 0.35, n))
    activity = rng.gamma(3.0, 1.0 / 3.0, n)
    apply_propensity = rng.gamma(2.0, 0.5, n)
    online_pref = rng.beta(2.0, 3.0, n)
    del rng

    income = np.round(income, -2)
    credit = np.clip(np.round(credit), 300, 850)
    drift_day = config.drift_from_day
    s = config.drift_strength if drift_day is not None else 0.0
    ring = 30
    ring_amount = np.zeros((ring, n))
    ring_gambling = np.zeros((ring, n))
    profiles: list[dict[str, np.ndarray]] = []
    txns: list[dict[str, np.ndarray]] = []
    apps: list[dict[str, np.ndarray]] = []
    next_txn, next_app = 1, 1
    weekday0 = config.start_date.weekday()

    for day in range(last_day + 1):
        drifting = drift_day is not None and day >= drift_day
        ds = s if drifting else 0.0
        base_s = day * _DAY
        # Profiles: initial versions of today's newcomers, then overnight updates.
        r = _rng(seed, day, _S_PROFILES)
        u, z1, z2, z3 = r.random(n), r.standard_normal(n), r.standard_normal(n), r.random(n)
        when = r.integers(0, 6 * 3600, n)
        new = np.flatnonzero(onboard == day)
        if ds and len(new):
            income[new] = np.round(income[new] * math.exp(-0.25 * ds), -2)
            credit[new] = np.clip(credit[new] - round(20 * ds), 300, 850)
        rate = config.profile_update_rate * (1.0 + 2.0 * ds)
        upd = np.flatnonzero((onboard < day) & (u < rate))
        if len(upd):
            job_change = z3[upd] < 0.2
            drift_shift = -0.15 * ds
            growth = np.where(job_change, 0.05 + 0.15 * z1[upd], 0.02 + 0.05 * z1[upd])
            income[upd] = np.round(income[upd] * np.exp(growth + drift_shift), -2)
            employment[upd] = np.where(job_change, np.round(z3[upd] * 2.5, 1), employment[upd])
            credit[upd] = np.clip(np.round(credit[upd] + 12.0 * z2[upd] - 25.0 * ds), 300, 850)
            buys = (home[upd] == 0) & (z3[upd] > 0.95)
            home[upd] = np.where(buys, 2, home[upd])
        who = np.concatenate([new, upd])
        times = np.concatenate([base_s + onboard_s[new], base_s + when[upd]])
        order = np.lexsort((who, times))
        who, times = who[order], times[order]
        profiles.append(
            {
                "customer": who,
                "ts": times,
                "income": income[who].copy(),
                "employment": employment[who].copy(),
                "home": home[who].copy(),
                "region": region[who].copy(),
                "credit": credit[who].astype(np.int64),
            }
        )

        # Transactions.
        r = _rng(seed, day, _S_TRANSACTIONS)
        active = onboard <= day
        weekend = 1.15 if (weekday0 + day) % 7 >= 5 else 1.0
        lam = config.txn_per_customer_per_day * activity * weekend
        counts = np.where(active, r.poisson(lam), 0)
        cust = np.repeat(np.arange(n), counts)
        m = len(cust)
        g = np.minimum(gamble * (1.0 + 1.5 * ds) + 0.02 * ds, 0.9)[cust]
        u_cat, u_base = r.random(m), r.random(m)
        category = np.where(u_cat < g, _GAMBLING, _pick(_CAT_SHARE, u_base))
        z = r.standard_normal(m)
        amount = np.exp(_CAT_MU[category] + _CAT_SIGMA[category] * z) * spend[cust]
        amount = np.maximum(np.round(amount * (1.0 + 0.3 * ds), 2), 1.0)
        u_ch, u_dev = r.random(m), r.random(m)
        online = np.where(category == _GAMBLING, u_ch < 0.85, u_ch < online_pref[cust] * 0.6)
        channel = np.where(category == _CASH, 2, np.where(online, 1, 0))
        online_device = np.where(u_dev < 0.6, 0, np.where(u_dev < 0.9, 1, 2))
        device = np.where(channel == 1, online_device, np.where(channel == 0, 3, 4))
        ts = base_s + 6 * 3600 + r.integers(0, 18 * 3600, m)
        order = np.lexsort((cust, ts))
        cust, category, amount, channel, device, ts = (
            a[order] for a in (cust, category, amount, channel, device, ts)
        )
        txns.append(
            {
                "id": np.arange(next_txn, next_txn + m, dtype=np.int64),
                "customer": cust,
                "amount": amount,
                "category": category,
                "channel": channel,
                "device": device,
                "ts": ts,
            }
        )
        next_txn += m

        # Loan applications, with their outcome drawn now from what is known now.
        r = _rng(seed, day, _S_APPLICATIONS)
        u = r.random(n)
        who = np.flatnonzero(active & (u < config.application_rate * apply_propensity))
        k = len(who)
        purpose = _pick(_PURPOSE_SHARE, r.random(k))
        size = np.exp(_PURPOSE_SIZE[purpose] + r.normal(0.0, 0.5, k))
        loan = np.clip(np.round(income[who] * size / 50.0) * 50.0, 500.0, 100_000.0)
        u_term = r.random(k)
        term_idx = np.clip(
            np.floor(u_term * 3 + np.clip(np.log(loan / 5000.0), -1.0, 2.0)), 0, 4
        ).astype(np.int64)
        term = np.array(TERMS)[term_idx]
        app_channel = _pick(np.array([0.45, 0.35, 0.12, 0.08]), r.random(k))
        applied = base_s + 6 * 3600 + r.integers(0, 18 * 3600, k)
        noise = r.standard_normal(k)
        u_default = r.random(k)
        u_dpd = r.random(k)
        observe_after = r.integers(
            OBSERVATION_DAYS[0] * _DAY, OBSERVATION_DAYS[1] * _DAY + 1, k, dtype=np.int64
        )
        amount_30 = ring_amount[:, who].sum(axis=0)
        gambling_30 = ring_gambling[:, who].sum(axis=0)
        gshare = np.where(amount_30 > 0, gambling_30 / np.maximum(amount_30, 1e-9), 0.0)
        monthly = income[who] / 12.0
        age = age0[who] + day / 365.25
        logit = (
            -2.2
            + 1.2 * (640.0 - credit[who]) / 60.0
            + 1.6 * (loan / income[who] - 0.25)
            - 0.045 * (employment[who] - 5.0)
            + 0.2 * (term - 36) / 12.0
            - 0.018 * (age - 40.0)
            + 3.5 * gshare
            + 0.35 * np.log1p(amount_30 / monthly)
            + 0.6 * ds
            + 0.45 * noise
        )
        defaulted = u_default < _sigmoid(logit)
        dpd = np.where(
            defaulted,
            30 + np.floor(u_dpd * 61),
            np.where(u_dpd < 0.8, 0, np.floor((u_dpd - 0.8) / 0.2 * 29) + 1),
        ).astype(np.int64)
        order = np.lexsort((who, applied))
        cols = {
            "id": np.arange(next_app, next_app + k, dtype=np.int64),
            "customer": who[order],
            "ts": applied[order],
            "loan": loan[order],
            "term": term[order],
            "purpose": purpose[order],
            "app_channel": app_channel[order],
            "defaulted": defaulted[order],
            "dpd": dpd[order],
            "observed": applied[order] + observe_after[order],
        }
        apps.append(cols)
        next_app += k

        slot = day % ring
        ring_amount[slot] = np.bincount(cust, weights=amount, minlength=n)
        gmask = category == _GAMBLING
        ring_gambling[slot] = np.bincount(cust[gmask], weights=amount[gmask], minlength=n)

    i64, f64 = np.dtype(np.int64), np.dtype(np.float64)
    profile_cols = _concat(
        profiles,
        {"customer": i64, "ts": i64, "income": f64, "employment": f64, "home": i64,
         "region": i64, "credit": i64},
    )  # fmt: skip
    txn_cols = _concat(
        txns,
        {"id": i64, "customer": i64, "amount": f64, "category": i64, "channel": i64,
         "device": i64, "ts": i64},
    )  # fmt: skip
    app_cols = _concat(
        apps,
        {"id": i64, "customer": i64, "ts": i64, "loan": f64, "term": i64, "purpose": i64,
         "app_channel": i64, "defaulted": np.dtype(bool), "dpd": i64, "observed": i64},
    )  # fmt: skip
    observed_day = app_cols["observed"] // _DAY
    seen = np.flatnonzero(observed_day <= last_day)
    seen = seen[np.lexsort((app_cols["id"][seen], app_cols["observed"][seen]))]
    repay_cols = {
        "id": app_cols["id"][seen],
        "customer": app_cols["customer"][seen],
        "ts": app_cols["observed"][seen],
        "defaulted": app_cols["defaulted"][seen],
        "dpd": app_cols["dpd"][seen],
    }
    raw = {
        "customers": profile_cols,
        "transactions": txn_cols,
        "loan_applications": app_cols,
        "repayments": repay_cols,
    }
    tables: dict[str, _Table] = {}
    extras: dict[str, _Extras] = {}
    for index, entity in enumerate(ENTITIES):
        cols = raw[entity]
        event_s = cols["ts"]
        event_day = event_s // _DAY
        table = _Table(cols, event_s, event_day, event_day.copy(), np.zeros(len(event_s), bool))
        extras[entity] = _plan_faults(config, entity, index, table, last_day)
        tables[entity] = table
    return _World(config, names, birth, tables, extras)


def _plan_faults(
    config: GeneratorConfig, entity: str, index: int, table: _Table, last_day: int
) -> _Extras:
    """Decide late delivery (in place) and the extra lines of ``entity``, day by day."""
    starts = np.searchsorted(table.event_day, np.arange(last_day + 2))
    parts: list[tuple[np.ndarray, ...]] = []
    csv_entity = LANDING_FORMATS[entity] == "csv"
    for day in range(last_day + 1):
        lo, hi = int(starts[day]), int(starts[day + 1])
        k = hi - lo
        r = _rng(config.seed, day, _S_FAULTS + index)
        u_late, lag = r.random(k), r.integers(1, MAX_LATE_DAYS + 1, k)
        u_dup, dup_after = r.random(k), r.integers(0, 4, k)
        u_key, key_after = r.random(k), r.integers(1, 4, k)
        pos = r.integers(0, _DAY, (2, k))
        key_param = r.random(k)
        n_bad = int(r.binomial(k, config.malformed_rate)) if k else 0
        bad_record = r.integers(0, max(k, 1), n_bad)
        bad_kind = r.integers(0, 3, n_bad)
        bad_param, bad_pos = r.random(n_bad), r.integers(0, _DAY, n_bad)

        if entity in LATE_ENTITIES:
            late = u_late < config.late_rate
            table.late[lo:hi] = late
            table.delivery_day[lo:hi] = day + np.where(late, lag, 0)
        delivery = table.delivery_day[lo:hi]
        records = np.arange(lo, hi)

        dup = u_dup < config.duplicate_rate
        dup_after = np.where(dup_after == 3, 0, dup_after)  # half in the same drop
        dup_target = delivery + dup_after
        same = np.array(
            [config.schema_drifted(entity, int(a)) == config.schema_drifted(entity, int(b))
             for a, b in zip(delivery[dup], dup_target[dup], strict=True)],
            dtype=bool,
        )  # fmt: skip
        dup_target[np.flatnonzero(dup)[~same]] = delivery[dup][~same]
        key = u_key < config.key_duplicate_rate
        key_target = delivery + key_after

        if csv_entity:
            kinds = np.array([_MISSING_COL, _EXTRA_COL, _INVALID])[bad_kind]
        else:
            kinds = np.array([_TRUNCATED, _SYNTAX, _INVALID])[bad_kind]
        parts.append(
            (
                np.concatenate([records[dup], records[key], lo + bad_record]),
                np.concatenate(
                    [np.full(dup.sum(), _EXACT), np.full(key.sum(), _KEY), kinds]
                ).astype(np.int64),
                np.concatenate([dup_target[dup], key_target[key], np.full(n_bad, day)]),
                np.concatenate([pos[0][dup], pos[1][key], bad_pos]),
                np.concatenate([key_param[dup], key_param[key], bad_param]),
                np.concatenate([np.zeros(dup.sum() + key.sum(), np.int64), np.arange(n_bad)]),
            )
        )
    columns = [np.concatenate([p[i] for p in parts]) for i in range(6)] if parts else []
    if not columns:
        empty = np.empty(0, np.int64)
        return _Extras(empty, empty, empty, empty, np.empty(0), empty)
    return _Extras(
        columns[0].astype(np.int64),
        columns[1],
        columns[2].astype(np.int64),
        columns[3].astype(np.int64),
        columns[4],
        columns[5].astype(np.int64),
    )


# --- Rendering -------------------------------------------------------------------------------


def _timestamps(config: GeneratorConfig, seconds: np.ndarray) -> list[str]:
    base = np.datetime64(config.start_date.isoformat(), "s")
    text = np.datetime_as_string(base + seconds.astype("timedelta64[s]"), unit="s")
    return [f"{t}Z" for t in text.tolist()]


def _values(world: _World, entity: str, idx: np.ndarray) -> list[list[Any]]:
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


def _drift_values(world: _World, entity: str, idx: np.ndarray) -> list[str]:
    cols = world.tables[entity].cols
    if entity == "transactions":
        return [DEVICE_TYPES[d] for d in cols["device"][idx].tolist()]
    return [APPLICATION_CHANNELS[c] for c in cols["app_channel"][idx].tolist()]


def _corrected(entity: str, value: Any, param: float) -> Any:
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


def _invalid(entity: str, param: float) -> str:
    choices: tuple[str, ...]
    if entity == "customers":
        choices = _BAD_TIMESTAMPS
    elif entity == "repayments":
        choices = _BAD_BOOLEANS
    else:
        choices = _BAD_NUMBERS
    return choices[int(param * len(choices)) % len(choices)]


def _json_line(names: Sequence[str], values: Sequence[Any]) -> str:
    return json.dumps(
        dict(zip(names, values, strict=True)), separators=(",", ":"), ensure_ascii=False
    )


def _render_file(world: _World, entity: str, day: int) -> tuple[str, EntityReport]:
    """The text of one drop and its counts."""
    config = world.config
    table, extras = world.tables[entity], world.extras[entity]
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
    keys = np.concatenate([table.event_s[clean] - day * _DAY, extras.position[mine]])
    lines: list[str] = []
    corrected_at = RAW_FIELDS[entity].index(CORRECTED_FIELDS[entity])
    invalid_at = RAW_FIELDS[entity].index(INVALID_VALUE_FIELDS[entity])
    counts = dict.fromkeys(("malformed", "invalid", "exact", "key"), 0)
    n_clean = len(clean)
    for i, row in enumerate(values):
        if i >= n_clean:
            j = mine[i - n_clean]
            kind, param = int(extras.kind[j]), float(extras.param[j])
            if kind == _KEY:
                row[corrected_at] = _corrected(entity, row[corrected_at], param)
                counts["key"] += 1
            elif kind == _EXACT:
                counts["exact"] += 1
            else:
                row[0] = f"{_PREFIX[entity]}X{day:04d}{int(extras.serial[j]):06d}"
                if kind == _INVALID:
                    row[invalid_at] = _invalid(entity, param)
                    counts["invalid"] += 1
                else:
                    counts["malformed"] += 1
                lines.append(_bad_line(names, row, kind, param, is_csv))
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


def _bad_line(names: Sequence[str], row: list[Any], kind: int, param: float, is_csv: bool) -> str:
    """A line that does not parse (or, for ``_INVALID``, parses with an unreadable value)."""
    if is_csv:
        tokens = [str(v) for v in row]
        if kind == _MISSING_COL:
            del tokens[1 + int(param * (len(tokens) - 1))]
        elif kind == _EXTRA_COL:
            tokens.append(tokens[-1])
        return ",".join(tokens)
    line = _json_line(names, row)
    if kind == _TRUNCATED:
        return line[: 1 + int(param * (len(line) - 2))]
    if kind == _SYNTAX:
        return line.replace('":', '"=', 1)
    return line


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
    world = _simulate(config, max(chosen))
    reports = {entity: EntityReport(entity) for entity in ENTITIES}
    paths: list[Path] = []
    for day in chosen:
        for entity in ENTITIES:
            text, counts = _render_file(world, entity, day)
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
