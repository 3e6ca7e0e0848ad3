"""``lakehouse serve``: model serving endpoints over HTTP, without a JVM."""

from __future__ import annotations

import argparse
import sys

from lakehouse.cli.commands._daemon import port_number


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command."""
    parser = sub.add_parser(
        "serve",
        help="serve registered models over HTTP (Databricks Model Serving's REST shape)",
        description=(
            "Host model serving endpoints: create them with POST /api/2.0/serving-endpoints, "
            "score with POST /serving-endpoints/NAME/invocations; Prometheus metrics on "
            "/metrics. Endpoints persist under $LAKEHOUSE_HOME/serving/endpoints; every request "
            "is spooled to $LAKEHOUSE_HOME/landing/inference_log for gold.inference_log."
        ),
        epilog=(
            "environment: LAKEHOUSE_SERVING_TOKEN requires Authorization: Bearer <token> on "
            "every route; LAKEHOUSE_SERVING_INFERENCE_LOG=off answers without spooling any "
            "record (default on); LAKEHOUSE_SERVING_MAX_BODY_BYTES caps a request body "
            "(default 16 MiB, larger gets 413); LAKEHOUSE_SERVING_ALIAS_POLL_SECONDS is how "
            "often endpoints that follow an alias read the registry (default 5); "
            "LAKEHOUSE_SERVING_SPOOL_ROLL_SECONDS how long a spool file stays open (default 5)."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    from lakehouse.serving.server import build_app, serve

    try:
        app = build_app()
    except ValueError as exc:  # a serving variable of the environment it cannot take
        print(f"lakehouse serve: error: {exc}", file=sys.stderr)
        return 2
    print(f"serving on http://{args.host}:{args.port} (Ctrl-C to stop)", file=sys.stderr)
    serve(args.host, args.port, app=app)
    return 0
