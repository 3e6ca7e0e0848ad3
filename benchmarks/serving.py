"""Serving benchmark: our endpoint against in-process ``predict`` and ``mlflow models serve``.

    .venv/bin/python benchmarks/serving.py [--home DIR] [--requests 4000] [--rounds 3]

Without ``--home`` (or when its registry has no champion) it builds a small world in a
temporary home (generator, pipeline, Feast apply and materialize, ``lakehouse train``). Then,
in one run, on the same champion version and the same application:

* in process: ``mlflow.pyfunc.load_model(...).predict`` of a one-row pandas frame (the
  signature's types), called ``--requests`` times in a loop (the baseline of latency);
* ``mlflow models serve`` (``--env-manager local``), POST ``/invocations`` with the full row;
* our endpoint with every model input in the request;
* our endpoint with only the application's fields (features looked up in the online store);
* our endpoint with features in the request and the inference log off
  (``LAKEHOUSE_SERVING_INFERENCE_LOG=off``), for the cost of logging.

The HTTP load comes from Debian's ``hey`` (one process, keep-alive) at concurrency 1 and 16,
``--requests`` requests a run after a warm-up; latencies are hey's per-request response times
and throughput is requests over the span from the first request to the last answer. ``mlflow
models serve`` runs alone first. Then the in-process loop and our two servers (log on, log
off; side by side, idle but for the run being measured) take turns over ``--rounds`` rounds,
each figure being the median of its rounds, so a shared machine's load falls on all alike.
The benchmark's endpoint and its spool files are removed from the home afterwards.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import quiet, verdict

from lakehouse.models.config import REQUEST_COLUMNS
from lakehouse.platform.settings import Settings, load_settings
from lakehouse.serving.process import ServerProcess, free_port
from lakehouse.serving.spool import SpoolWriter, record, spool_dir

ENDPOINT = "bench"
API = "/api/2.0/serving-endpoints"
CONCURRENCY = (1, 16)
IN_PROCESS = "in-process pyfunc predict (1 row)"
MLFLOW = "mlflow models serve, features in request"
FEATURES = "ours, features in request"
LOOKUP = "ours, online feature lookup"
LOG_OFF = "ours, features in request, log off"


@dataclass
class Load:
    """Figures of one load run (or the medians of several)."""

    name: str
    concurrency: int
    p50_ms: float
    p99_ms: float
    rps: float
    errors: int

    def line(self) -> str:
        return (
            f"{self.name:<44} c={self.concurrency:<3} p50 {self.p50_ms:7.2f} ms  "
            f"p99 {self.p99_ms:7.2f} ms  {self.rps:8.0f} req/s  errors {self.errors}"
        )


def median(loads: list[Load]) -> Load:
    """The median of each figure over runs of the same load (errors summed)."""
    return Load(
        loads[0].name,
        loads[0].concurrency,
        statistics.median(x.p50_ms for x in loads),
        statistics.median(x.p99_ms for x in loads),
        statistics.median(x.rps for x in loads),
        sum(x.errors for x in loads),
    )


def report(load: Load) -> Load:
    print(load.line(), flush=True)
    return load


def run(cmd: list[str], env: dict[str, str]) -> None:
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)


def lakehouse_env(home: Path) -> dict[str, str]:
    """This environment for ``home``, with this interpreter's scripts first on ``PATH``
    (``mlflow models serve`` starts ``uvicorn`` by name)."""
    env = dict(os.environ)
    env.update({"LAKEHOUSE_HOME": str(home), "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"})
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "LAKEHOUSE_SERVING_TOKEN"):
        env.pop(key, None)
    return env


def build_home(home: Path, customers: int, days: int) -> None:
    """A small world with a champion, through the platform's own commands."""
    cli = str(Path(sys.executable).with_name("lakehouse"))
    env = lakehouse_env(home)
    started = time.perf_counter()
    run([cli, "datagen", "--customers", str(customers), "--days", str(days), "--seed", "7"], env)
    run([cli, "pipeline", "run"], env)
    run([cli, "features", "apply"], env)
    run([cli, "features", "materialize"], env)
    run([cli, "train", "--seed", "7"], env)
    print(
        f"world: {customers} customers x {days} days, built in {time.perf_counter() - started:.0f}s"
    )


def champion(settings: Settings) -> int | None:
    from lakehouse.models.registry import champion_version

    return champion_version(settings)


def sample_application(settings: Settings) -> dict[str, Any]:
    """One application of the world with the fields a client sends (from the landing files)."""
    folder = settings.landing_dir / "loan_applications"
    for path in sorted(folder.rglob("*.json")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("customer_id") and all(row.get(c) is not None for c in REQUEST_COLUMNS):
                return {"customer_id": row["customer_id"], **{c: row[c] for c in REQUEST_COLUMNS}}
    raise SystemExit(f"no complete application under {folder}")


def full_row(settings: Settings, model: Any, application: dict[str, Any]) -> dict[str, Any]:
    """Every model input of ``application``: its own fields and its customer's online features,
    cast to the signature's types as batch scoring casts them (MLflow refuses an int where the
    signature says double)."""
    from lakehouse.features.store import FEATURE_SERVICE
    from lakehouse.serving.features import FeatureLookup

    features = FeatureLookup(settings, FEATURE_SERVICE).get([application["customer_id"]])
    values = {**features[application["customer_id"]], **application}
    row: dict[str, Any] = {}
    for spec in model.metadata.get_input_schema().inputs:
        value = values.get(spec.name)
        kind = getattr(spec.type, "name", str(spec.type))
        if value is not None and kind in ("double", "float"):
            value = float(value)
        row[spec.name] = value
    return row


def in_process(model: Any, row: dict[str, Any], n: int) -> Load:
    import pandas as pd

    frame = pd.DataFrame([row])
    for _ in range(50):
        model.predict(frame)
    times = np.empty(n)
    for i in range(n):
        started = time.perf_counter()
        model.predict(frame)
        times[i] = time.perf_counter() - started
    return Load(
        IN_PROCESS,
        1,
        float(np.percentile(times, 50) * 1e3),
        float(np.percentile(times, 99) * 1e3),
        float(n / times.sum()),
        0,
    )


def hey(name: str, url: str, body: dict[str, Any], n: int, c: int) -> Load:
    """``hey`` POSTing ``body`` to ``url`` ``n`` times at concurrency ``c`` (after a warm-up)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(body, f)
    try:
        base = ["hey", "-c", str(c), "-m", "POST", "-T", "application/json", "-D", f.name]
        warm = max(c * 10, n // 10)
        subprocess.run([*base, "-n", str(warm), url], capture_output=True, check=True)
        out = subprocess.run(
            [*base, "-n", str(n), "-o", "csv", url], capture_output=True, text=True, check=True
        ).stdout
    finally:
        os.unlink(f.name)
    rows = list(csv.DictReader(io.StringIO(out)))
    latency = np.array([float(r["response-time"]) for r in rows])
    starts = np.array([float(r["offset"]) for r in rows])
    ends = starts + latency
    # hey sends n // c requests on each of its c connections.
    errors = sum(1 for r in rows if not r["status-code"].startswith("2")) + (n // c) * c - len(rows)
    return Load(
        name,
        c,
        float(np.percentile(latency, 50) * 1e3),
        float(np.percentile(latency, 99) * 1e3),
        float(len(rows) / (ends.max() - starts.min())),
        errors,
    )


def wait_http(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


def mlflow_serve(settings: Settings, version: int, row: dict[str, Any], n: int) -> list[Load]:
    port = free_port()
    env = lakehouse_env(settings.home)
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    env["MLFLOW_REGISTRY_URI"] = settings.registry_uri
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    uri = f"models:/{settings.model_name}/{version}"
    cmd = [mlflow, "models", "serve", "-m", uri, "-p", str(port), "--env-manager", "local"]
    process = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping")
        url = f"http://127.0.0.1:{port}/invocations"
        return [report(hey(MLFLOW, url, {"dataframe_records": [row]}, n, c)) for c in CONCURRENCY]
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


@contextmanager
def our_server(settings: Settings, version: int, log: bool) -> Iterator[str]:
    """A ``lakehouse serve`` process with the benchmark's endpoint ready; its invocations URL."""
    env = lakehouse_env(settings.home)
    if not log:
        env["LAKEHOUSE_SERVING_INFERENCE_LOG"] = "off"
    with ServerProcess(env=env) as server:
        entity = {
            "name": "champion",
            "entity_name": settings.model_name,
            "entity_version": str(version),
        }
        # Endpoints persist in the home: the other server may have created it already.
        status, body = server.request(
            "POST", API, {"name": ENDPOINT, "config": {"served_entities": [entity]}}
        )
        if status not in (200, 409):
            raise SystemExit(f"creating the endpoint failed: {status} {body}")
        server.wait_ready(ENDPOINT, timeout=300)
        try:
            yield f"{server.url}/serving-endpoints/{ENDPOINT}/invocations"
        finally:
            server.request("DELETE", f"{API}/{ENDPOINT}")


def ours(
    settings: Settings,
    model: Any,
    version: int,
    row: dict[str, Any],
    app: dict[str, Any],
    n: int,
    rounds: int,
) -> list[Load]:
    """In-process predict and our endpoint (log on and log off side by side), taking turns;
    the medians of ``rounds``."""
    full = {"dataframe_records": [row]}
    lookup = {"dataframe_records": [app]}
    runs: dict[tuple[str, int], list[Load]] = {}
    try:
        with ExitStack() as stack:
            logged = stack.enter_context(our_server(settings, version, log=True))
            unlogged = stack.enter_context(our_server(settings, version, log=False))
            for r in range(rounds):
                turns: list[Callable[[], Load]] = [lambda: in_process(model, row, n)]
                for c in CONCURRENCY:
                    pair = [
                        lambda c=c: hey(FEATURES, logged, full, n, c),
                        lambda c=c: hey(LOG_OFF, unlogged, full, n, c),
                    ]
                    # The log-on and log-off runs swap places every round.
                    turns += [*(pair if r % 2 == 0 else pair[::-1])]
                    turns.append(lambda c=c: hey(LOOKUP, logged, lookup, n, c))
                for turn in turns:
                    load = turn()
                    runs.setdefault((load.name, load.concurrency), []).append(load)
                    print(f"  round {r + 1}: {load.line()}", flush=True)
    finally:
        # The benchmark's requests are no inference log of the home's.
        for path in spool_dir(settings.landing_dir).glob(f"{ENDPOINT}-*.jsonl"):
            path.unlink()
    return [report(median(loads)) for loads in runs.values()]


def logging_seconds(row: dict[str, Any], rounds: int = 20_000) -> float:
    """CPU seconds the server spends logging one request with ``row``: building its record and
    appending it to a spool file (in a temporary folder)."""
    request = json.dumps({"dataframe_records": [row]})
    response = json.dumps({"predictions": [0.1234567890123]})
    with tempfile.TemporaryDirectory() as folder:
        writer = SpoolWriter(Path(folder), ENDPOINT, roll_after=3600)
        started = time.process_time()
        for i in range(rounds):
            writer.write(
                record(
                    request_id=str(uuid.uuid4()),
                    client_request_id=None,
                    timestamp_ms=1_767_225_600_000 + i,
                    status_code=200,
                    execution_duration_ms=1.25,
                    request=request,
                    response=response,
                    endpoint_name=ENDPOINT,
                    served_entity_name="champion",
                    model_name="model",
                    model_version=1,
                )
            )
        spent = time.process_time() - started
        writer.seal()
    return spent / rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, help="a platform home with a champion to reuse")
    parser.add_argument("--requests", type=int, default=4000, help="requests per load run")
    parser.add_argument("--rounds", type=int, default=3, help="turns of our two servers")
    parser.add_argument("--customers", type=int, default=600)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args(argv)
    if shutil.which("hey") is None:
        parser.error("needs Debian's hey (apt-get install hey)")
    if args.requests < 100 or args.rounds < 1:
        parser.error("--requests must be >= 100 and --rounds >= 1")
    quiet()
    temp = None
    home = args.home
    if home is None:
        temp = Path(tempfile.mkdtemp(prefix="lakehouse-bench-serving-"))
        home = temp
    os.environ.update(lakehouse_env(home))
    settings = load_settings().with_home(home)
    try:
        version = champion(settings)
        if version is None:
            build_home(home, args.customers, args.days)
            version = champion(settings)
        assert version is not None, "training registered no champion"
        import mlflow.pyfunc

        from lakehouse.models.tracking import mlflow_client

        mlflow_client(settings)
        model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{version}")
        app = sample_application(settings)
        row = full_row(settings, model, app)
        print(
            f"model {settings.model_name} version {version}; {args.requests} requests per run, "
            f"{args.rounds} round(s) of our servers",
            flush=True,
        )
        results = mlflow_serve(settings, version, row, args.requests)
        results += ours(settings, model, version, row, app, args.requests, args.rounds)
        by = {(r.name, r.concurrency): r for r in results}
        base = by[(IN_PROCESS, 1)]
        feat1, look1 = by[(FEATURES, 1)], by[(LOOKUP, 1)]
        feat16, off16, mlf16 = by[(FEATURES, 16)], by[(LOG_OFF, 16)], by[(MLFLOW, 16)]
        print()
        for line in (
            verdict(
                "p50 above in-process (features in request)", feat1.p50_ms - base.p50_ms, 1.5, " ms"
            ),
            verdict(
                "p99 above in-process (features in request)", feat1.p99_ms - base.p99_ms, 10, " ms"
            ),
            verdict("p50 added by the online lookup", look1.p50_ms - feat1.p50_ms, 2, " ms"),
            verdict("throughput c=16 / mlflow models serve", feat16.rps / mlf16.rps, 3, "x", True),
            verdict(
                "throughput lost to logging, c=16", 100 * (1 - feat16.rps / off16.rps), 5, " %"
            ),
        ):
            print(line)
        # The A/B figure above moves with the machine's load by more than logging costs; the
        # direct cost, against the CPU time a request takes at c=16, is steadier.
        per_request = logging_seconds(row)
        print(
            f"{'logging work per request (record + spool write)':<52} "
            f"{per_request * 1e6:>9.1f} us = {100 * per_request * off16.rps:.2f} % of a request's "
            "time at c=16 (log off)"
        )
        errors = sum(r.errors for r in results)
        if errors:
            print(f"{errors} requests failed")
            return 1
        return 0
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
