"""What the commands of background servers share (``connect``, ``sql-server``, ``cluster``):
argument types and exit statuses. Not a command itself (its name starts with ``_``)."""

from __future__ import annotations

import argparse

from lakehouse.platform.daemon import EXIT_NOT_RUNNING
from lakehouse.platform.locks import EXIT_BUSY

__all__ = ["EXIT_BUSY", "EXIT_NOT_RUNNING", "port_number", "seconds"]


def port_number(text: str) -> int:
    """``--port``: a TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, got {value}")
    return value


def seconds(text: str) -> float:
    """A duration in seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value
