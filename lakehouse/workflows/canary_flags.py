"""The canary a monitoring refresh may start, and the flags that ask for it.

``lakehouse monitor refresh`` and ``jobs/monitor.py`` take the same ``--canary-endpoint`` and
``--canary-percent``. This module imports neither Spark nor MLflow, so the command's parser
stays quick to build.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class CanaryRequest:
    """Serve a challenger that passed the gate as the canary of ``endpoint`` with ``percent``
    % of its traffic, through the server at ``url`` (None: ``$LAKEHOUSE_SERVING_URL`` or the
    default, token from ``$LAKEHOUSE_SERVING_TOKEN``)."""

    endpoint: str
    percent: int = 10
    url: str | None = None

    def __post_init__(self) -> None:
        if not self.endpoint:
            raise ValueError("the canary needs an endpoint name")
        if not 1 <= self.percent <= 99:
            raise ValueError(f"the canary's percent must be between 1 and 99, got {self.percent}")


def add_canary_flags(parser: argparse.ArgumentParser) -> None:
    """``--canary-endpoint`` and ``--canary-percent``."""
    parser.add_argument(
        "--canary-endpoint",
        metavar="NAME",
        help="with --act: serve a retrained challenger that passes the gate as the canary of "
        "this endpoint of the running server ($LAKEHOUSE_SERVING_URL, token from "
        "$LAKEHOUSE_SERVING_TOKEN)",
    )
    parser.add_argument(
        "--canary-percent",
        type=int,
        default=10,
        metavar="P",
        help="the canary's share of the endpoint's traffic, 1-99 (default 10)",
    )


def canary_request(args: argparse.Namespace) -> CanaryRequest | None:
    """The canary the flags ask for (``args.act`` says whether actions run); ValueError for
    flags that do not go together or a share out of range."""
    if args.canary_endpoint is None:
        return None
    if not args.act:
        raise ValueError("--canary-endpoint needs --act (it serves the retrained challenger)")
    return CanaryRequest(args.canary_endpoint, args.canary_percent)
