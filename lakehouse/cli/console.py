"""Rendering results for people: tables in the terminal, durations."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pyspark.sql import DataFrame
from tabulate import tabulate


def render_rows(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table with a header line."""
    return tabulate([list(r) for r in rows], headers=list(headers), tablefmt="simple")


def render_df(df: DataFrame, limit: int = 50) -> str:
    """The first ``limit`` rows of ``df`` as a plain-text table, with a count line."""
    rows = df.limit(limit + 1).collect()
    shown = rows[:limit]
    text = render_rows(df.columns, [[_cell(v) for v in r] for r in shown])
    more = f"\n(showing first {limit} rows)" if len(rows) > limit else ""
    return f"{text}\n({len(shown)} row{'s' if len(shown) != 1 else ''}){more}"


def _cell(value: Any) -> Any:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    if isinstance(value, float):
        return round(value, 6)
    return value


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``1m15s``; ``4.25`` -> ``4.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"
