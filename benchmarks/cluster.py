"""Cluster benchmark: the pipeline on a standalone cluster, and with its tables on object storage.

    .venv/bin/python benchmarks/cluster.py [--customers 300] [--days 30] [--repeats 3]
        [--warmup 0] [--shuffle-partitions 4] [--skip-cluster] [--skip-object-store]

It generates one world's landing files, then measures two figures, each against a baseline
run in the same benchmark, on the same landing files:

* the medallion pipeline (bronze, silver, gold) as a cluster application on a Spark standalone
  master with two one-core workers on this machine (``lakehouse.platform.cluster.start``, on
  free ports) against the same pipeline on ``local[2]`` (two cores either way);
* the pipeline on ``local[2]`` with its tables on an S3-compatible object store (a SeaweedFS
  ``weed server`` on free ports, storing under the benchmark's temporary folder, reached
  through ``s3a://``) against the same with its tables on local disk.

Every run is one ``lakehouse pipeline run`` process over a fresh state folder holding a copy of
the landing files (and, on the object store, a fresh prefix of its bucket), the environment
choosing the master and the tables' root, as a user's job is pointed at a cluster or a store.
A run's time is the process's wall time, from its start to its exit: the interpreter, the
session's start (on the cluster, the executors' launch on the workers) and its stop are in
both sides of each figure. The pipeline's own time, which the command prints, is shown beside
it, for information.

The two sides of a figure run in pairs, seconds apart, the one going first changing every
pair, after ``--warmup`` untimed runs of each; a figure is the median of the pairs' ratios, so
that a shared machine's load, which drifts over minutes, weighs on both runs of a pair alike.
Every run of a figure must ingest the same number of rows, else the benchmark stops. The
cluster and the store are started once, before their figure's runs, and stopped after them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import timed, verdict

from lakehouse.platform import cluster
from lakehouse.platform.daemon import free_port
from lakehouse.platform.settings import load_settings
from lakehouse.simulation.generator import GeneratorConfig, generate

REPO = Path(__file__).resolve().parent.parent
LAKEHOUSE = str(Path(sys.executable).with_name("lakehouse"))
CLUSTER_RATIO_TARGET = 1.3
OBJECT_STORE_RATIO_TARGET = 1.5
BUCKET = "lakehouse-bench"
ACCESS_KEY = "lakehouse-bench"
SECRET_KEY = "lakehouse-bench-secret"
#: Variables of this shell a run does not inherit: each side sets those it needs itself.
RUN_ENV_DROPPED = (
    "LAKEHOUSE_PROFILE",
    "LAKEHOUSE_SPARK_MASTER",
    "LAKEHOUSE_SPARK_REMOTE",
    "LAKEHOUSE_TABLES_URI",
    "LAKEHOUSE_S3_ENDPOINT",
    "LAKEHOUSE_S3_PATH_STYLE",
    "LAKEHOUSE_S3_REGION",
    "LAKEHOUSE_S3_CONDITIONAL_WRITES",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "PYSPARK_GATEWAY_PORT",
)
#: The line ``lakehouse pipeline run`` ends with: ``pipeline <id>: <n> rows ingested in <time>``.
DONE_LINE = re.compile(r"pipeline \S+: (\d+) rows ingested in (?:(\d+)m(\d+)s|([\d.]+)s)")


@dataclass(frozen=True)
class Run:
    """One ``lakehouse pipeline run`` process: its wall time, the pipeline's own, its rows."""

    wall_s: float
    pipeline_s: float
    rows: int


@dataclass
class Side:
    """One side of a figure: its name and how a run's environment differs from the default."""

    name: str
    env: Callable[[Path, int], dict[str, str]]
    check: Callable[[int], None] | None = None  # given the run's number once it is done
    runs: list[Run] = field(default_factory=list)


def run_pipeline(landing: Path, home: Path, env: dict[str, str]) -> Run:
    """``lakehouse pipeline run`` over a fresh state folder ``home`` holding a copy of ``landing``.

    The copy is made before the clock starts; the process's wall time is measured.
    """
    shutil.copytree(landing, home / "landing")
    done, wall_s = timed(
        lambda: subprocess.run(
            [LAKEHOUSE, "pipeline", "run"],
            env={**env, "LAKEHOUSE_HOME": str(home)},
            cwd=home,
            capture_output=True,
            text=True,
            check=False,
        )
    )
    if done.returncode != 0:
        raise SystemExit(
            f"lakehouse pipeline run exited {done.returncode} in {home}:\n{done.stderr[-3000:]}"
        )
    match = DONE_LINE.search(done.stdout)
    if match is None:
        raise SystemExit(f"no summary line in the output of the run in {home}:\n{done.stdout}")
    rows, minutes, seconds, plain = match.groups()
    pipeline_s = float(plain) if plain else int(minutes) * 60 + int(seconds)
    return Run(wall_s, pipeline_s, int(rows))


def compare(
    root: Path, landing: Path, baseline: Side, candidate: Side, pairs: int, warmup: int
) -> float:
    """Run both sides in ``pairs`` pairs after ``warmup`` runs each; print and return the figure.

    The figure is the median of the pairs' candidate / baseline wall-time ratios. Each run's
    state folder is removed once it is done, so the disk holds one run at a time.
    """
    count = iter(range(10**6))

    def one(side: Side) -> Run:
        n = next(count)
        # Letters and digits only: Hadoop reads ``[2]`` in a path as a glob's character class.
        home = root / f"{re.sub(r'[^a-z0-9]+', '-', side.name.lower()).strip('-')}-{n}"
        try:
            run = run_pipeline(landing, home, side.env(home, n))
            if side.check is not None:
                side.check(n)
            return run
        finally:
            shutil.rmtree(home, ignore_errors=True)

    for _ in range(warmup):
        for side in (baseline, candidate):
            one(side)
    order = [baseline, candidate]
    for _ in range(pairs):
        for side in order:
            side.runs.append(one(side))
        order.reverse()
    rows = {r.rows for side in (baseline, candidate) for r in side.runs}
    if len(rows) != 1:
        raise SystemExit(f"the runs ingested different numbers of rows: {sorted(rows)}")
    for side in (baseline, candidate):
        walls = ", ".join(f"{r.wall_s:.1f}s" for r in side.runs)
        alone = ", ".join(f"{r.pipeline_s:.1f}s" for r in side.runs)
        print(f"  {side.name:<22} runs {walls} (pipeline alone {alone})")
    ratios = [c.wall_s / b.wall_s for b, c in zip(baseline.runs, candidate.runs, strict=True)]
    inner_ratios = [
        c.pipeline_s / b.pipeline_s for b, c in zip(baseline.runs, candidate.runs, strict=True)
    ]
    median = {s.name: statistics.median(r.wall_s for r in s.runs) for s in (baseline, candidate)}
    inner = {s.name: statistics.median(r.pipeline_s for r in s.runs) for s in (baseline, candidate)}
    print(
        f"  medians: {candidate.name} {median[candidate.name]:.1f}s, "
        f"{baseline.name} {median[baseline.name]:.1f}s "
        f"(pipeline alone {inner[candidate.name]:.1f}s, {inner[baseline.name]:.1f}s); "
        f"{rows.pop()} rows ingested each run"
    )
    print(f"  {candidate.name} / {baseline.name} per pair: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(
        f"  the same, pipeline alone (information): {statistics.median(inner_ratios):.2f} "
        f"({', '.join(f'{r:.2f}' for r in inner_ratios)})"
    )
    return statistics.median(ratios)


def base_env(shuffle_partitions: int) -> dict[str, str]:
    """This process's environment for a run: the ``local`` profile, no service of this shell."""
    env = {k: v for k, v in os.environ.items() if k not in RUN_ENV_DROPPED}
    env.update(
        {
            "LAKEHOUSE_PROFILE": "local",
            "LAKEHOUSE_SHUFFLE_PARTITIONS": str(shuffle_partitions),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
        }
    )
    return env


@contextmanager
def standalone_cluster(home: Path, workers: int) -> Iterator[cluster.ClusterInfo]:
    """A master and ``workers`` one-core workers on free ports; yields its record."""
    settings = load_settings("local", env={"LAKEHOUSE_HOME": str(home)})
    info = cluster.start(
        settings, workers=workers, cores=1, port=free_port(), webui_port=free_port()
    )
    try:
        yield info
    finally:
        cluster.stop(settings)


def weed_binary() -> Path:
    """``$LAKEHOUSE_WEED``, else the build of ``.ci/install-seaweedfs`` (built once if absent)."""
    explicit = os.environ.get("LAKEHOUSE_WEED")
    if explicit:
        return Path(explicit)
    done = subprocess.run(
        [str(REPO / ".ci" / "install-seaweedfs")], capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip().splitlines()[-1])


@contextmanager
def seaweedfs(root: Path, timeout: float = 120.0) -> Iterator[tuple[str, Any]]:
    """A SeaweedFS server (master, volume, filer, S3 gateway) storing under ``root``.

    Started as the object-store tests start it: bound to 127.0.0.1, every port (gRPC ones
    included) chosen free, one identity with admin rights. Yields the S3 endpoint once the
    bucket :data:`BUCKET` exists, with a boto3 client of it; the server is stopped (its process
    group) afterwards.
    """
    import boto3
    from botocore.config import Config

    # Every port is chosen, the gRPC ones too: none falls back to a default another holds.
    flags = [
        f"{server}.port{kind}"
        for server in ("master", "volume", "filer", "s3")
        for kind in ("", ".grpc")
    ]
    ports = {flag: free_port() for flag in flags}
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    identities = root / "s3.json"
    root.mkdir(parents=True, exist_ok=True)
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "bench",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    command = [
        str(weed_binary()),
        "server",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.volumeSizeLimitMB=64",
        "-master.telemetry=false",
        "-master.resumeState=false",
        "-volume.max=32",
        "-volume.preStopSeconds=0",
        "-filer",
        "-s3",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={identities}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    (root / "data").mkdir(exist_ok=True)
    log_path = root / "weed.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise SystemExit(f"weed server exited; see {log_path}")
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
            except urllib.error.HTTPError:
                pass  # an S3 error answer: the gateway is up
            except OSError:
                pass
            with suppress(Exception):
                with suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=BUCKET)
                client.put_object(Bucket=BUCKET, Key="_ready", Body=b"ok")
                client.delete_object(Bucket=BUCKET, Key="_ready")
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"SeaweedFS not ready within {timeout:.0f}s; see {log_path}")
            time.sleep(0.5)
        yield endpoint, client
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    """Generate the landing files, measure both figures and print them against their targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs per figure")
    parser.add_argument("--warmup", type=int, default=0, help="untimed runs of each side first")
    parser.add_argument(
        "--shuffle-partitions", type=int, default=4, help="the same on every run (default 4)"
    )
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--skip-object-store", action="store_true")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="lakehouse-bench-cluster-"))
    lines = ["", "Figures"]
    try:
        landing = root / "landing"
        report = generate(landing, GeneratorConfig(customers=args.customers, days=args.days))
        print(
            f"world: {args.customers} customers x {args.days} days, "
            f"{report.entities['transactions'].lines} transaction lines; "
            f"{args.repeats} pairs per figure after {args.warmup} warm-up run(s) of each side; "
            "times are whole `lakehouse pipeline run` processes (session start and stop included)"
        )
        env = base_env(args.shuffle_partitions)
        local = Side("local[2]", lambda home, n: {**env, "LAKEHOUSE_SPARK_MASTER": "local[2]"})
        if not args.skip_cluster:
            with standalone_cluster(root / "cluster-home", workers=2) as info:
                print(f"standalone cluster: master + 2 workers x 1 core at {info.url}")
                finished: list[int] = []

                def on_cluster(n: int) -> None:
                    """The master lists one more finished application: the run was its own."""
                    deadline = time.monotonic() + 30
                    while True:
                        state = cluster.master_state(info.webui)
                        done = len(state.completed_apps) if state else 0
                        if done > len(finished) or time.monotonic() > deadline:
                            break
                        time.sleep(0.5)
                    if done != len(finished) + 1:
                        raise SystemExit(f"the master lists {done} finished applications")
                    finished.append(n)

                remote = Side(
                    "standalone 2x1 core",
                    lambda home, n: {**env, "LAKEHOUSE_SPARK_MASTER": info.url},
                    check=on_cluster,
                )
                ratio = compare(root, landing, local, remote, args.repeats, args.warmup)
            lines.append(
                verdict("standalone 2 x 1 core / local[2] (x)", ratio, CLUSTER_RATIO_TARGET)
            )
        if not args.skip_object_store:
            with seaweedfs(root / "seaweedfs") as (endpoint, client):

                def on_store(n: int) -> None:
                    """The run's Delta logs are in the bucket: its tables were on the store."""
                    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=f"run-{n}/tables/")
                    keys = [o["Key"] for o in listing.get("Contents", [])]
                    if not any("/_delta_log/" in key for key in keys):
                        raise SystemExit(f"run {n} wrote no Delta log under s3a://{BUCKET}/run-{n}")

                print(f"object store: SeaweedFS S3 gateway at {endpoint}, bucket {BUCKET}")
                store_env = {
                    **env,
                    "LAKEHOUSE_SPARK_MASTER": "local[2]",
                    "LAKEHOUSE_S3_ENDPOINT": endpoint,
                    "LAKEHOUSE_S3_PATH_STYLE": "true",
                    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                }
                disk = Side(
                    "local disk", lambda home, n: {**env, "LAKEHOUSE_SPARK_MASTER": "local[2]"}
                )
                s3 = Side(
                    "s3a (SeaweedFS)",
                    lambda home, n: {
                        **store_env,
                        "LAKEHOUSE_TABLES_URI": f"s3a://{BUCKET}/run-{n}/tables",
                    },
                    check=on_store,
                )
                ratio = compare(root, landing, disk, s3, args.repeats, args.warmup)
            lines.append(
                verdict("object store / local disk, local[2] (x)", ratio, OBJECT_STORE_RATIO_TARGET)
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lines.append(f"(benchmark took {time.perf_counter() - started:.0f}s)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
