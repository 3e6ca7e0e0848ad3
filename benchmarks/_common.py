"""Shared helpers of the benchmark scripts: timing, peak memory, target lines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TypeVar

import psutil

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` and return its result and wall time in seconds."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


@contextmanager
def peak_rss(pid: int, interval: float = 0.2) -> Iterator[dict[str, int]]:
    """Track the peak resident memory of ``pid`` and all its children (the JVM included)."""
    peak = {"bytes": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    with suppress(psutil.Error):
                        total += p.memory_info().rss
                peak["bytes"] = max(peak["bytes"], total)
            except psutil.Error:
                return
            stop.wait(interval)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def verdict(
    name: str, value: float, target: float, unit: str = "", higher_is_better: bool = False
) -> str:
    """One line: the figure, its target and whether it is met."""
    ok = value >= target if higher_is_better else value <= target
    op = ">=" if higher_is_better else "<="
    status = "MET" if ok else "MISSED"
    return f"{name:<52} {value:>9.2f}{unit:<4} target {op} {target:g}{unit:<4} {status}"
