"""``python -m lakehouse.serving [--host H] [--port P]``: the serving process alone."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lakehouse.serving.server import DEFAULT_HOST, DEFAULT_PORT, build_app, serve


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags and serve."""
    parser = argparse.ArgumentParser(prog="python -m lakehouse.serving")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    try:
        app = build_app()
    except ValueError as exc:  # a serving variable of the environment it cannot take
        parser.error(str(exc))
    serve(args.host, args.port, app=app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
