"""Run the serving process: uvicorn (httptools, uvloop) around :class:`ServingApp`."""

from __future__ import annotations

import logging

from lakehouse.platform.settings import Settings, load_settings
from lakehouse.serving.app import ServingApp
from lakehouse.serving.endpoints import ServingState
from lakehouse.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def build_app(settings: Settings | None = None) -> ServingApp:
    """The ASGI application of a server on ``settings`` (default: the environment's)."""
    settings = settings or load_settings()
    return ServingApp(ServingState(settings, ServingMetrics()))


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    settings: Settings | None = None,
    app: ServingApp | None = None,
) -> None:
    """Serve ``app`` (default: :func:`build_app` of ``settings``) until SIGINT or SIGTERM; the
    inference log is sealed on the way out."""
    import uvicorn

    app = app or build_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=60,
        backlog=2048,
    )
    log.info("serving on http://%s:%d", host, port)
    uvicorn.Server(config).run()
