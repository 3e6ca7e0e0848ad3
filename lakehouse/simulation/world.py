"""The clean world of the generator, simulated day by day as columnar arrays (no text yet).

Customers are drawn once (:func:`population`); then each day adds profile versions
(:func:`profiles_of_day`), card transactions (:func:`transactions_of_day`) and loan applications
with their outcome (:func:`applications_of_day`), each from its own random stream, so a day
depends on nothing after it. Repayments are the outcomes observed by the last simulated day
(:func:`repayments`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from lakehouse.medallion.contracts import GAMBLING, MERCHANT_CATEGORIES, SECONDS_PER_DAY, TERMS
from lakehouse.platform.catalog import ENTITIES
from lakehouse.simulation.config import GeneratorConfig

#: Outcomes are observed this many days after the application (inclusive bounds).
OBSERVATION_DAYS: tuple[int, int] = (28, 70)

DAY = SECONDS_PER_DAY

# Random stream purposes: world streams per day (fault streams: lakehouse.simulation.faults).
S_STATIC, S_PROFILES, S_TRANSACTIONS, S_APPLICATIONS = 0, 1, 2, 3

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

# Merchant categories: base share, log-mean amount, log-sd (GAMBLING is added per customer).
_CAT_SHARE = np.array([0.30, 0.16, 0.11, 0.07, 0.05, 0.09, 0.04, 0.03, 0.15, 0.0])
_CAT_MU = np.log(np.array([42.0, 30.0, 55.0, 95.0, 60.0, 35.0, 260.0, 320.0, 80.0, 55.0]))
_CAT_SIGMA = np.array([0.55, 0.5, 0.35, 0.4, 0.6, 0.6, 0.7, 0.7, 0.6, 0.8])
_CASH = MERCHANT_CATEGORIES.index("CASH")
_GAMBLING = MERCHANT_CATEGORIES.index(GAMBLING)
_PURPOSE_SHARE = np.array([0.25, 0.2, 0.3, 0.1, 0.15])
_PURPOSE_SIZE = np.log(np.array([0.35, 0.3, 0.25, 0.2, 0.12]))
#: Days of spending the default risk of an application looks back on.
_SPENDING_DAYS = 30

_I64, _F64 = np.dtype(np.int64), np.dtype(np.float64)
_PROFILE_COLUMNS = {
    "customer": _I64, "ts": _I64, "income": _F64, "employment": _F64, "home": _I64,
    "region": _I64, "credit": _I64,
}  # fmt: skip
_TRANSACTION_COLUMNS = {
    "id": _I64, "customer": _I64, "amount": _F64, "category": _I64, "channel": _I64,
    "device": _I64, "ts": _I64,
}  # fmt: skip
_APPLICATION_COLUMNS = {
    "id": _I64, "customer": _I64, "ts": _I64, "loan": _F64, "term": _I64, "purpose": _I64,
    "app_channel": _I64, "defaulted": np.dtype(bool), "dpd": _I64, "observed": _I64,
}  # fmt: skip

Columns = dict[str, np.ndarray]


def rng(seed: int, *keys: int) -> np.random.Generator:
    """The random stream of ``(seed, *keys)``: the same keys always give the same draws."""
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


@dataclass
class Table:
    """Columnar records of one entity over the simulated days, in event order."""

    cols: Columns
    event_s: np.ndarray  # event time, seconds since the start of day 0
    event_day: np.ndarray
    delivery_day: np.ndarray
    late: np.ndarray

    @classmethod
    def on_time(cls, cols: Columns) -> Table:
        """The records of ``cols``, each delivered on its event day (faults may change that)."""
        event_s = cols["ts"]
        event_day = event_s // DAY
        return cls(cols, event_s, event_day, event_day.copy(), np.zeros(len(event_s), bool))

    @property
    def size(self) -> int:
        return len(self.event_s)


@dataclass
class World:
    """The simulated records of every entity, and the customers' fixed names and birth dates."""

    config: GeneratorConfig
    names: list[str]
    birth: list[str]
    tables: dict[str, Table]


@dataclass
class Population:
    """Every customer's traits; the profile fields change in place as the days are simulated."""

    age0: np.ndarray
    names: list[str]
    birth: list[str]
    onboard: np.ndarray  # the day index a customer joins
    onboard_s: np.ndarray  # seconds into that day
    employment: np.ndarray
    income: np.ndarray
    credit: np.ndarray
    home: np.ndarray
    region: np.ndarray
    gamble: np.ndarray  # propensity to spend in GAMBLING
    spend: np.ndarray
    activity: np.ndarray
    apply_propensity: np.ndarray
    online_pref: np.ndarray

    @property
    def size(self) -> int:
        return len(self.age0)


def population(config: GeneratorConfig) -> Population:
    """Draw the customers from the static stream (the order of the draws is the contract)."""
    n = config.customers
    r = rng(config.seed, S_STATIC)
    age0 = 21.0 + 54.0 * r.beta(2.0, 3.2, n)
    birth_offset = np.floor(age0 * 365.25).astype(np.int64) + r.integers(0, 365, n)
    start_ord = config.start_date.toordinal()
    birth = [date.fromordinal(start_ord - int(b)).isoformat() for b in birth_offset]
    first = r.integers(0, len(_FIRST_NAMES), n)
    last = r.integers(0, len(_LAST_NAMES), n)
    names = [f"{_FIRST_NAMES[a]} {_LAST_NAMES[b]}" for a, b in zip(first, last, strict=True)]
    joins_later = r.random(n) >= 0.75
    onboard = np.where(joins_later, r.integers(1, 61, n), 0)
    onboard_s = r.integers(0, 6 * 3600, n)
    employment = np.round(np.minimum(age0 - 18.0, r.gamma(1.6, 4.5, n)), 1)
    z_income = r.standard_normal(n)
    income = np.exp(
        np.log(40_000.0) + 0.012 * employment + 0.006 * np.minimum(age0 - 21, 30) + 0.42 * z_income
    )
    gamble = np.where(r.random(n) < 0.15, r.beta(2.0, 6.0, n), r.beta(0.6, 30.0, n))
    score_noise = r.normal(0.0, 45.0, n)
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
    home = _pick(np.exp(home_logits), r.random(n))
    region = _pick(np.array([0.22, 0.2, 0.18, 0.18, 0.22]), r.random(n))
    spend = np.exp(0.6 * np.log(income / 40_000.0) + r.normal(0.0, 0.35, n))
    activity = r.gamma(3.0, 1.0 / 3.0, n)
    apply_propensity = r.gamma(2.0, 0.5, n)
    online_pref = r.beta(2.0, 3.0, n)
    return Population(
        age0=age0,
        names=names,
        birth=birth,
        onboard=onboard,
        onboard_s=onboard_s,
        employment=employment,
        income=np.round(income, -2),
        credit=np.clip(np.round(credit), 300, 850),
        home=home,
        region=region,
        gamble=gamble,
        spend=spend,
        activity=activity,
        apply_propensity=apply_propensity,
        online_pref=online_pref,
    )


class RecentSpending:
    """Each customer's spending (all, and in GAMBLING) over the last :data:`_SPENDING_DAYS`
    days: what the default risk of an application sees."""

    def __init__(self, customers: int) -> None:
        self.amount = np.zeros((_SPENDING_DAYS, customers))
        self.gambling = np.zeros((_SPENDING_DAYS, customers))

    def add_day(self, day: int, transactions: Columns) -> None:
        """Record the transactions of ``day`` (replacing the day that leaves the window)."""
        n = self.amount.shape[1]
        cust, amount = transactions["customer"], transactions["amount"]
        slot = day % _SPENDING_DAYS
        self.amount[slot] = np.bincount(cust, weights=amount, minlength=n)
        gmask = transactions["category"] == _GAMBLING
        self.gambling[slot] = np.bincount(cust[gmask], weights=amount[gmask], minlength=n)

    def of(self, who: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(amount, gambling amount) of customers ``who`` over the window."""
        return self.amount[:, who].sum(axis=0), self.gambling[:, who].sum(axis=0)


def profiles_of_day(config: GeneratorConfig, people: Population, day: int, ds: float) -> Columns:
    """Initial profile versions of the day's newcomers, then overnight updates (in place)."""
    n, base_s = people.size, day * DAY
    income, credit, employment, home = people.income, people.credit, people.employment, people.home
    r = rng(config.seed, day, S_PROFILES)
    u, z1, z2, z3 = r.random(n), r.standard_normal(n), r.standard_normal(n), r.random(n)
    when = r.integers(0, 6 * 3600, n)
    new = np.flatnonzero(people.onboard == day)
    if ds and len(new):
        income[new] = np.round(income[new] * math.exp(-0.25 * ds), -2)
        credit[new] = np.clip(credit[new] - round(20 * ds), 300, 850)
    rate = config.profile_update_rate * (1.0 + 2.0 * ds)
    upd = np.flatnonzero((people.onboard < day) & (u < rate))
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
    times = np.concatenate([base_s + people.onboard_s[new], base_s + when[upd]])
    order = np.lexsort((who, times))
    who, times = who[order], times[order]
    return {
        "customer": who,
        "ts": times,
        "income": income[who].copy(),
        "employment": employment[who].copy(),
        "home": home[who].copy(),
        "region": people.region[who].copy(),
        "credit": credit[who].astype(np.int64),
    }


def transactions_of_day(
    config: GeneratorConfig, people: Population, day: int, ds: float, first_id: int
) -> Columns:
    """The card transactions of the active customers on ``day``, ids from ``first_id``."""
    n, base_s = people.size, day * DAY
    r = rng(config.seed, day, S_TRANSACTIONS)
    active = people.onboard <= day
    weekend = 1.15 if (config.start_date.weekday() + day) % 7 >= 5 else 1.0
    lam = config.txn_per_customer_per_day * people.activity * weekend
    counts = np.where(active, r.poisson(lam), 0)
    cust = np.repeat(np.arange(n), counts)
    m = len(cust)
    g = np.minimum(people.gamble * (1.0 + 1.5 * ds) + 0.02 * ds, 0.9)[cust]
    u_cat, u_base = r.random(m), r.random(m)
    category = np.where(u_cat < g, _GAMBLING, _pick(_CAT_SHARE, u_base))
    z = r.standard_normal(m)
    amount = np.exp(_CAT_MU[category] + _CAT_SIGMA[category] * z) * people.spend[cust]
    amount = np.maximum(np.round(amount * (1.0 + 0.3 * ds), 2), 1.0)
    u_ch, u_dev = r.random(m), r.random(m)
    online = np.where(category == _GAMBLING, u_ch < 0.85, u_ch < people.online_pref[cust] * 0.6)
    channel = np.where(category == _CASH, 2, np.where(online, 1, 0))
    online_device = np.where(u_dev < 0.6, 0, np.where(u_dev < 0.9, 1, 2))
    device = np.where(channel == 1, online_device, np.where(channel == 0, 3, 4))
    ts = base_s + 6 * 3600 + r.integers(0, 18 * 3600, m)
    order = np.lexsort((cust, ts))
    cust, category, amount, channel, device, ts = (
        a[order] for a in (cust, category, amount, channel, device, ts)
    )
    return {
        "id": np.arange(first_id, first_id + m, dtype=np.int64),
        "customer": cust,
        "amount": amount,
        "category": category,
        "channel": channel,
        "device": device,
        "ts": ts,
    }


def applications_of_day(
    config: GeneratorConfig,
    people: Population,
    spending: RecentSpending,
    day: int,
    ds: float,
    first_id: int,
) -> Columns:
    """The loan applications of ``day``, ids from ``first_id``, with their outcome drawn now
    from what is known now (the profile and the spending of the days before)."""
    n, base_s = people.size, day * DAY
    income, credit = people.income, people.credit
    r = rng(config.seed, day, S_APPLICATIONS)
    u = r.random(n)
    active = people.onboard <= day
    who = np.flatnonzero(active & (u < config.application_rate * people.apply_propensity))
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
        OBSERVATION_DAYS[0] * DAY, OBSERVATION_DAYS[1] * DAY + 1, k, dtype=np.int64
    )
    amount_30, gambling_30 = spending.of(who)
    gshare = np.where(amount_30 > 0, gambling_30 / np.maximum(amount_30, 1e-9), 0.0)
    monthly = income[who] / 12.0
    age = people.age0[who] + day / 365.25
    logit = (
        -2.2
        + 1.2 * (640.0 - credit[who]) / 60.0
        + 1.6 * (loan / income[who] - 0.25)
        - 0.045 * (people.employment[who] - 5.0)
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
    return {
        "id": np.arange(first_id, first_id + k, dtype=np.int64),
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


def repayments(applications: Columns, last_day: int) -> Columns:
    """The outcomes of ``applications`` observed by ``last_day``, in observation order."""
    observed_day = applications["observed"] // DAY
    seen = np.flatnonzero(observed_day <= last_day)
    seen = seen[np.lexsort((applications["id"][seen], applications["observed"][seen]))]
    return {
        "id": applications["id"][seen],
        "customer": applications["customer"][seen],
        "ts": applications["observed"][seen],
        "defaulted": applications["defaulted"][seen],
        "dpd": applications["dpd"][seen],
    }


def _concat(parts: list[Columns], template: dict[str, np.dtype]) -> dict[str, Any]:
    if not parts:
        return {k: np.empty(0, dtype=t) for k, t in template.items()}
    return {k: np.concatenate([p[k] for p in parts]) for k in template}


def _drift(config: GeneratorConfig, day: int) -> float:
    """The strength of the distribution drift on ``day`` (0 before it starts)."""
    start = config.drift_from_day
    return config.drift_strength if start is not None and day >= start else 0.0


def simulate(config: GeneratorConfig, last_day: int) -> World:
    """Simulate days ``0 .. last_day`` of the world (cheap arrays, no text)."""
    people = population(config)
    spending = RecentSpending(people.size)
    profiles: list[Columns] = []
    txns: list[Columns] = []
    apps: list[Columns] = []
    next_txn, next_app = 1, 1
    for day in range(last_day + 1):
        ds = _drift(config, day)
        profiles.append(profiles_of_day(config, people, day, ds))
        day_txns = transactions_of_day(config, people, day, ds, next_txn)
        txns.append(day_txns)
        next_txn += len(day_txns["id"])
        day_apps = applications_of_day(config, people, spending, day, ds, next_app)
        apps.append(day_apps)
        next_app += len(day_apps["id"])
        spending.add_day(day, day_txns)

    app_cols = _concat(apps, _APPLICATION_COLUMNS)
    raw = {
        "customers": _concat(profiles, _PROFILE_COLUMNS),
        "transactions": _concat(txns, _TRANSACTION_COLUMNS),
        "loan_applications": app_cols,
        "repayments": repayments(app_cols, last_day),
    }
    tables = {entity: Table.on_time(raw[entity]) for entity in ENTITIES}
    return World(config, people.names, people.birth, tables)
