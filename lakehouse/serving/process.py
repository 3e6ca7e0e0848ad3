"""Start a serving process on a free port and wait until it answers (tests, benchmarks, notebooks).

::

    with ServerProcess(env={"LAKEHOUSE_HOME": str(home)}) as server:
        requests.post(f"{server.url}/serving-endpoints/credit/invocations", json=...)

The process is ``lakehouse serve`` (the console script of the running interpreter's
environment) on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(host: str, port: int) -> list[str]:
    """``lakehouse serve --host H --port P`` through this interpreter's environment."""
    script = Path(sys.executable).with_name("lakehouse")
    if script.is_file():
        return [str(script), "serve", "--host", host, "--port", str(port)]
    return [sys.executable, "-m", "lakehouse.serving", "--host", host, "--port", str(port)]


class ServerProcess:
    """A ``lakehouse serve`` child process.

    Args:
        env: environment variables added to this process's (``LAKEHOUSE_HOME`` at least).
        port: the port; a free one by default.
        token: the bearer token the helper's requests send (the server reads its own from
            ``LAKEHOUSE_SERVING_TOKEN`` in ``env``).
        log_path: where the server's output goes (default: discarded).
        timeout: seconds to wait for ``/health``.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        token: str | None = None,
        log_path: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.env = {**os.environ, **(env or {})}
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.token = token if token is not None else self.env.get("LAKEHOUSE_SERVING_TOKEN")
        self.log_path = log_path
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerProcess:
        """Start the process and wait until ``/health`` answers 200."""
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        out = self._log if self._log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(
            serve_command(self.host, self.port), env=self.env, stdout=out, stderr=out
        )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with code {self.process.returncode} before answering"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            try:
                status, _ = self.request("GET", "/health", timeout=1.0)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"the server did not answer /health within {self.timeout} s")

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 30.0
    ) -> tuple[int, Any]:
        """One request (JSON in and out, text for Prometheus); ``(status, decoded body)``."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw, kind = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, raw, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        if "json" in kind:
            return status, json.loads(raw)
        return status, raw.decode()

    def wait_ready(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until endpoint ``name`` is ready and not updating; its JSON."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            status, last = self.request("GET", f"/api/2.0/serving-endpoints/{name}")
            if status == 200:
                state = last["state"]
                if state["config_update"] == "UPDATE_FAILED":
                    raise RuntimeError(f"endpoint {name} failed to load: {last}")
                if state["ready"] == "READY" and state["config_update"] == "NOT_UPDATING":
                    return dict(last)
            time.sleep(0.05)
        raise TimeoutError(f"endpoint {name} not ready after {timeout} s: {last}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then wait (SIGKILL after ``timeout``); the exit code."""
        code = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        elif self.process is not None:
            code = self.process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
