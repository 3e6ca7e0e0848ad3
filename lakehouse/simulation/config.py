"""What world the generator simulates and which faults it injects (:class:`GeneratorConfig`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np

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
