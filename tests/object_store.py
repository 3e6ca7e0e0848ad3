"""A real S3-compatible object store for tests: SeaweedFS, storing to a temporary folder.

One ``weed server`` process runs SeaweedFS's master, volume server, filer and S3 gateway, bound
to 127.0.0.1 on free ports chosen once, so a restarted server answers at the same endpoint and
finds the same data on disk. ``.ci/install-seaweedfs`` builds the pinned ``weed`` from the Go
module proxy into a cache folder; :func:`weed_binary` finds it there, on the ``PATH`` or in
``$LAKEHOUSE_WEED``. Tests that need the store skip, naming the binary, when it is absent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The SeaweedFS build ``.ci/install-seaweedfs`` installs (a Go module proxy pseudo-version).
SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
WEED_ENV = "LAKEHOUSE_WEED"
ACCESS_KEY = "lakehouse-test"
SECRET_KEY = "lakehouse-test-secret"


def weed_binary() -> Path | None:
    """``$LAKEHOUSE_WEED``, else ``weed`` on the PATH, else ``.ci/install-seaweedfs``'s build."""
    explicit = os.environ.get(WEED_ENV)
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    found = shutil.which("weed")
    if found:
        return Path(found)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    built = cache / "seaweedfs" / SEAWEEDFS_VERSION / "bin" / "weed"
    return built if built.is_file() else None


def _free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 now.

    SeaweedFS also listens on each gRPC port it is given; they are chosen here too, so nothing
    falls back to a fixed default that another process may hold.
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedFS:
    """One SeaweedFS server with an S3 gateway, its data under ``root``.

    Attributes:
        endpoint: the S3 gateway's URL (``http://127.0.0.1:<port>``).
        access_key, secret_key: the one identity the gateway accepts (an admin).
    """

    _PORTS = (
        "master",
        "master_grpc",
        "volume",
        "volume_grpc",
        "filer",
        "filer_grpc",
        "s3",
        "s3_grpc",
    )

    def __init__(self, weed: Path, root: Path) -> None:
        self.weed = weed
        self.root = root
        self.ports = dict(zip(self._PORTS, _free_ports(len(self._PORTS)), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = root / "weed.log"

    def _command(self) -> list[str]:
        p = self.ports
        return [
            str(self.weed),
            "server",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
            "-master.resumeState=false",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=32",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self._identities()}",
        ]

    def _identities(self) -> Path:
        config = {
            "identities": [
                {
                    "name": "lakehouse",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.root / "s3.json"
        path.write_text(json.dumps(config))
        return path

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until its S3 gateway stores and lists an object."""
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self._command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        probe = f"_ready/{time.time_ns()}"
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"weed server exited:\n{self.log_tail()}")
            try:
                self._wait_gateway()
                client = self.client()
                client.put_object(Bucket="lakehouse-probe", Key=probe, Body=b"ok")
                client.delete_object(Bucket="lakehouse-probe", Key=probe)
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"SeaweedFS not ready in {timeout}s:\n{self.log_tail()}"
                    ) from exc
                time.sleep(0.3)

    def _wait_gateway(self) -> None:
        try:
            urllib.request.urlopen(self.endpoint, timeout=2).close()
        except urllib.error.HTTPError:
            return  # an S3 error answer (403): the gateway is up
        except OSError as exc:
            raise ConnectionError(str(exc)) from exc

    def stop(self, grace: float = 3.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``grace`` seconds; wait for it to exit.

        On SIGTERM the filer keeps retrying to flush its own change log for a quarter of a
        minute once the volume server inside the same process has stopped; that log is not
        object data, so it is not waited for.
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def restart(self) -> None:
        """Stop the server and start it again on the same ports and data folder."""
        self.stop()
        self.start()

    def client(self) -> Any:
        """A boto3 S3 client of the gateway (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 2}, connect_timeout=5
            ),
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (idempotent); return it."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The keys under ``prefix`` in ``bucket``, sorted."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def env(self) -> dict[str, str]:
        """The platform's environment variables that point at this store."""
        return {
            "LAKEHOUSE_S3_ENDPOINT": self.endpoint,
            "LAKEHOUSE_S3_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server logged."""
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_seaweedfs(folder: Path) -> Iterator[SeaweedFS]:
    """A SeaweedFS server storing under ``folder`` for the ``with`` block; the test is skipped,
    naming the binary, where ``weed`` is not installed."""
    import pytest

    weed = weed_binary()
    if weed is None:
        pytest.skip("weed (SeaweedFS) is not installed: run .ci/install-seaweedfs")
    server = SeaweedFS(weed, folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def append_rows(table: str, writer: str, count: int, barrier: Path, writers: list[str]) -> int:
    """Append ``count`` one-row commits ``(writer, n)`` to the Delta table at ``table``.

    Run in a process of its own (``python -m tests.object_store``) with the platform's settings
    from the environment, so each writer is a separate Spark application. Once its session is
    up, a writer leaves ``<barrier>/<writer>`` and waits for every one of ``writers`` to have
    done so, so that all of them append at once. Returns how many commits succeeded; a failed
    one is printed and counted out.
    """
    from lakehouse.platform.settings import load_settings
    from lakehouse.platform.spark import get_spark

    spark = get_spark(load_settings(), app_name=f"append-{writer}", register_tables=False)
    try:
        spark.createDataFrame([(writer, -1)], "writer string, n int").count()  # warm up
        (barrier / writer).touch()
        deadline = time.monotonic() + 300
        while not all((barrier / w).exists() for w in writers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{writer}: the other writers never started")
            time.sleep(0.05)
        done = 0
        for n in range(count):
            rows = spark.createDataFrame([(writer, n)], "writer string, n int")
            try:
                rows.write.format("delta").mode("append").save(table)
                done += 1
            except Exception as exc:  # py4j wraps every JVM error alike
                print(f"commit {n} of {writer} failed: {str(exc).splitlines()[0]}", flush=True)
        return done
    finally:
        spark.stop()


if __name__ == "__main__":
    import sys

    table_arg, count_arg, barrier_arg, writer_arg, *writers_arg = sys.argv[1:]
    ok = append_rows(table_arg, writer_arg, int(count_arg), Path(barrier_arg), writers_arg)
    print(json.dumps({"writer": writer_arg, "committed": ok}), flush=True)
