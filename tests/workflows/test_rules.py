"""The lifecycle's rules that need no JVM: the demo's world and generating it once."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from lakehouse.platform.settings import Settings
from lakehouse.workflows.lifecycle import demo_world, generate_once, landed_drops


@pytest.mark.parametrize(
    "today", [date(2026, 12, 2), date(2026, 12, 6), date(2027, 2, 28), date(2028, 2, 29)]
)
def test_demo_world_starts_on_a_monday_and_ends_within_the_past_week(today: date) -> None:
    config = demo_world(customers=10, days=120, seed=7, today=today)

    assert config.start_date.weekday() == 0
    assert today - timedelta(days=126) < config.start_date <= today - timedelta(days=120)
    assert today - timedelta(days=7) <= config.end_date < today
    assert (config.customers, config.days, config.seed) == (10, 120, 7)


def test_the_same_weekday_gives_the_same_world_a_week_apart() -> None:
    first = demo_world(customers=10, days=30, seed=1, today=date(2026, 12, 2))
    later = demo_world(customers=10, days=30, seed=1, today=date(2026, 12, 9))

    assert later.start_date - first.start_date == timedelta(days=7)


def test_generate_once_writes_only_into_an_empty_landing(settings: Settings) -> None:
    config = demo_world(customers=5, days=3, seed=3, today=date(2026, 12, 2))

    report = generate_once(settings, config)

    assert report is not None
    assert report.total_files == landed_drops(settings) == 12  # 4 entities x 3 days
    assert generate_once(settings, config) is None
    assert landed_drops(settings) == 12
