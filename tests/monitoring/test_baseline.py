"""The champion baseline's warm-up rule: which training rows it leaves out or nulls."""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd
import pytest

from lakehouse.monitoring.baseline import WarmUp, drop_warm_up, feature_windows

DATA_START = date(2026, 1, 5)
WINDOWS = {"txn_count_7d": 7, "txn_amount_sum_30d": 30, "txn_count_90d": 90}


def _frame(days: int) -> pd.DataFrame:
    """One application a day from the first day of data, at 10:00."""
    return pd.DataFrame(
        {
            "application_id": [f"A{i:03d}" for i in range(days)],
            "application_timestamp": pd.date_range("2026-01-05 10:00", periods=days, freq="D"),
            "txn_count_7d": np.arange(days, dtype="int64"),
            "txn_amount_sum_30d": np.ones(days),
            "txn_count_90d": np.arange(days, dtype="int64"),
        }
    )


def test_rolling_features_are_named_by_their_window() -> None:
    columns = ["age", "term_months", "loan_amount", *WINDOWS, "txn_amount_max_30d", "x_0d"]
    assert feature_windows(columns) == {**WINDOWS, "txn_amount_max_30d": 30}


def test_rows_within_the_longest_window_are_left_out_when_enough_remain() -> None:
    kept, warm_up = drop_warm_up(_frame(100), WINDOWS, DATA_START, min_rows=10)
    assert warm_up == WarmUp(DATA_START, horizon_days=90, excluded=90)
    assert kept["application_id"].tolist() == [f"A{i:03d}" for i in range(90, 100)]
    assert kept["txn_count_90d"].notna().all()


def test_too_few_rows_past_a_window_give_it_up_and_null_its_features() -> None:
    kept, warm_up = drop_warm_up(_frame(100), WINDOWS, DATA_START, min_rows=20)
    # Days 30..99 stay; the 90-day count is unknown on days 30..89, known from day 90.
    assert (warm_up.horizon_days, warm_up.excluded, warm_up.nulled) == (
        30,
        30,
        {"txn_count_90d": 60},
    )
    assert kept["application_id"].iloc[0] == "A030" and len(kept) == 70
    assert kept["txn_count_90d"].isna().tolist() == [True] * 60 + [False] * 10
    assert kept["txn_count_90d"].iloc[-1] == 99 and kept["txn_amount_sum_30d"].notna().all()
    assert "30 warm-up rows left out" in warm_up.summary()


def test_a_small_world_keeps_every_row_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    frame = _frame(12)
    with caplog.at_level(logging.WARNING, logger="lakehouse.monitoring.baseline"):
        kept, warm_up = drop_warm_up(frame, WINDOWS, DATA_START, min_rows=10)
    assert kept is frame and warm_up.kept_all and warm_up.excluded == 0
    assert len(caplog.records) == 1 and "keeps every row" in caplog.records[0].getMessage()


def test_without_transaction_data_nothing_is_left_out() -> None:
    frame = _frame(5)
    kept, warm_up = drop_warm_up(frame, WINDOWS, None)
    assert kept is frame and warm_up == WarmUp(None)
