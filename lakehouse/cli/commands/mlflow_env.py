"""``lakehouse ui`` (the MLflow UI on this platform's store) and ``lakehouse env``."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from lakehouse.models.tracking import env_vars, is_local_store
from lakehouse.platform.settings import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``ui`` and ``env`` commands."""
    ui = sub.add_parser(
        "ui",
        help="run the MLflow UI on the platform's tracking store",
        description="Run `mlflow ui` on 127.0.0.1 against settings.tracking_uri.",
    )
    ui.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    ui.set_defaults(handler=run_ui)
    env = sub.add_parser(
        "env",
        help="print export lines that point a shell at this platform",
        description=(
            'Use as: eval "$(lakehouse env)". Points MLflow at the platform\'s tracking store,'
            " registry and experiment, allows loading the store's models, and puts the"
            " platform's start-up folder first on PYTHONPATH so that mlflow.sklearn saves"
            " models with cloudpickle, as on Databricks."
        ),
    )
    env.set_defaults(handler=run_env)


def ui_command(port: int) -> list[str]:
    """The ``mlflow ui`` command line for the settings in effect."""
    settings = load_settings()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        settings.tracking_uri,
        "--registry-store-uri",
        settings.registry_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if is_local_store(settings.tracking_uri):
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    return command


def run_ui(args: argparse.Namespace) -> int:
    """Replace this process with the MLflow UI, so that signals reach it directly."""
    command = ui_command(args.port)
    print(f"MLflow UI on http://127.0.0.1:{args.port} (Ctrl-C to stop)", file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os.execv(command[0], command)
    return 0  # not reached


def run_env(args: argparse.Namespace) -> int:
    """Print ``export K=V`` lines (:func:`lakehouse.models.tracking.env_vars`)."""
    for key, value in env_vars(load_settings()).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0
