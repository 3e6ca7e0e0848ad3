"""The ML CD's steps around the canary (``.github/workflows/ml-cd.yml``).

``champion``   exit 0 when the registry has a champion (prints its version), else 1.
``wait``       wait until ``lakehouse serve`` at ``$LAKEHOUSE_SERVING_URL`` answers ``/health``.
``replay``     send ``--requests`` requests of applications from the landing files
               (``customer_id`` and the application's own fields; the server looks the features
               up), one per request with the application id as ``client_request_id``, from 8
               threads, each application again when there are fewer than requests; fails on
               any 5xx answer, or when more than 2% are refused with a 4xx (the source
               system's malformed rows are refused by name, as a client would see them, and
               reported).
``verify``     the registry and the endpoint agree with the analysis's outcome: promoted, the
               candidate is champion (Production) and serves 100%; rolled back, the champion is
               unchanged and the canary is gone. Writes a summary to ``$GITHUB_STEP_SUMMARY``.
``stop``       stop the server whose pid ``$LAKEHOUSE_HOME/ci/serve.pid`` holds (SIGTERM seals
               its inference log).

Run with the project's virtual env, from the repository's root.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

#: The share of replayed requests that may be refused with a 4xx: the landing files hold the
#: generator's injected faults, which a server must refuse, not score.
MAX_REFUSED_SHARE = 0.02


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(message: str) -> int:
    say(f"::error::{message}")
    return 1


def append(variable: str, text: str) -> None:
    path = os.environ.get(variable)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)


def base_url() -> str:
    return os.environ.get("LAKEHOUSE_SERVING_URL", "http://127.0.0.1:8000").rstrip("/")


def call(method: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url() + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    token = os.environ.get("LAKEHOUSE_SERVING_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def champion() -> int:
    from lakehouse.models.registry import champion_version
    from lakehouse.platform.settings import load_settings

    version = champion_version(load_settings())
    if version is None:
        say("no champion yet")
        return 1
    say(f"champion: version {version}")
    return 0


def wait(timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _ = call("GET", "/health", timeout=2)
            if status == 200:
                say(f"serving at {base_url()}")
                return 0
        except OSError:
            pass
        time.sleep(0.5)
    return fail(f"no answer from {base_url()}/health within {timeout:.0f} s")


def applications(landing: Path) -> Iterator[dict[str, Any]]:
    """Applications with every field a client sends, oldest file first."""
    from lakehouse.models.config import REQUEST_COLUMNS

    for path in sorted((landing / "loan_applications").rglob("*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict) or not row.get("application_id"):
                continue
            if any(row.get(c) is None for c in ("customer_id", *REQUEST_COLUMNS)):
                continue
            yield {k: row[k] for k in ("application_id", "customer_id", *REQUEST_COLUMNS)}


def replay(endpoint: str, requests: int) -> int:
    from lakehouse.platform.settings import load_settings

    rows = []
    seen = set()
    for row in applications(load_settings().landing_dir):
        if row["application_id"] not in seen:
            seen.add(row["application_id"])
            rows.append(row)
        if len(rows) == requests:
            break
    if not rows:
        return fail("no applications in the landing folder")
    # A small world has fewer applications than the canary needs requests: each goes again,
    # under the same client_request_id, so routing keeps it on the side it took first.
    unique = len(rows)
    rows = [dict(rows[i % unique]) for i in range(requests)]

    def send(row: dict[str, Any]) -> tuple[int, str]:
        app_id = row.pop("application_id")
        status, body = call(
            "POST",
            f"/serving-endpoints/{endpoint}/invocations",
            {"dataframe_records": [row], "client_request_id": app_id},
        )
        return status, json.dumps(body)[:200] if status != 200 else ""

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, rows))
    statuses = Counter(status for status, _ in answers)
    say(
        f"{len(rows)} requests of {unique} applications replayed: "
        + ", ".join(f"{n} x {s}" for s, n in statuses.items())
    )
    broken = [(s, body) for s, body in answers if s >= 500]
    if broken:
        return fail(f"{len(broken)} requests failed, e.g. {broken[0][0]}: {broken[0][1]}")
    refused = [(s, body) for s, body in answers if s != 200]
    if refused:
        say(f"refused (malformed rows of the source): {refused[0][0]}: {refused[0][1]}")
    if len(refused) > MAX_REFUSED_SHARE * len(rows):
        return fail(f"{len(refused)} of {len(rows)} requests refused, more than the share allowed")
    status, metrics = call("GET", f"/serving-endpoints/{endpoint}/metrics")
    if status == 200:
        lines = [
            line
            for line in str(metrics).splitlines()
            if line.startswith("lakehouse_serving_requests_total")
        ]
        say("\n".join(lines))
    return 0


def verify(endpoint: str, version: int, outcome: str) -> int:
    from lakehouse.models.registry import CHAMPION, history
    from lakehouse.platform.settings import load_settings

    settings = load_settings()
    records = {r.version: r for r in history(settings)}
    candidate = records.get(version)
    if candidate is None:
        return fail(f"{settings.model_name} has no version {version}")
    status, state = call("GET", f"/api/2.0/serving-endpoints/{endpoint}")
    if status != 200:
        return fail(f"endpoint {endpoint}: HTTP {status} {state}")
    config = state.get("config", {})
    entities = {e["name"]: e for e in config.get("served_entities", [])}
    routes = {
        r["served_entity_name"]: r["traffic_percentage"]
        for r in config.get("traffic_config", {}).get("routes", [])
    }
    serving = {str(e.get("entity_version")) for e in entities.values()}
    say(f"endpoint {endpoint}: entities {sorted(entities)}, routes {routes}, versions {serving}")
    say(f"version {version}: aliases [{', '.join(candidate.aliases)}], stage {candidate.stage}")
    errors = []
    if list(routes.values()) != [100]:
        errors.append(f"one served entity should take all the traffic, got {routes}")
    if outcome == "promoted":
        if CHAMPION not in candidate.aliases:
            errors.append(f"version {version} was promoted but is not the {CHAMPION}")
        if candidate.stage != "Production":
            errors.append(f"version {version} was promoted but its stage is {candidate.stage}")
        if serving != {str(version)}:
            errors.append(f"the endpoint serves {serving}, not version {version}")
    elif outcome == "rolled-back":
        if CHAMPION in candidate.aliases:
            errors.append(f"version {version} was rolled back but is the {CHAMPION}")
        if str(version) in serving:
            errors.append(f"the endpoint still serves the rolled-back version {version}")
    else:
        errors.append(f"unknown outcome {outcome!r}")
    append(
        "GITHUB_STEP_SUMMARY",
        f"### ML CD: canary of {settings.model_name} version {version}: **{outcome}**\n\n"
        f"endpoint `{endpoint}` serves version(s) {', '.join(sorted(serving))} "
        f"({', '.join(f'{k} {v}%' for k, v in routes.items())})\n\n",
    )
    for error in errors:
        fail(error)
    return 1 if errors else 0


def stop() -> int:
    from lakehouse.platform.settings import load_settings

    pid_file = load_settings().home / "ci" / "serve.pid"
    if not pid_file.is_file():
        say("no serving process to stop")
        return 0
    pid = int(pid_file.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        say(f"serving process {pid} had already stopped")
    else:
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        say(f"stopped serving process {pid}")
    pid_file.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("champion")
    sub.add_parser("wait")
    replay_p = sub.add_parser("replay")
    replay_p.add_argument("--endpoint", required=True)
    replay_p.add_argument("--requests", type=int, required=True)
    verify_p = sub.add_parser("verify")
    verify_p.add_argument("--endpoint", required=True)
    verify_p.add_argument("--version", type=int, required=True)
    verify_p.add_argument("--outcome", required=True)
    sub.add_parser("stop")
    args = parser.parse_args(argv)
    if args.command == "champion":
        return champion()
    if args.command == "wait":
        return wait()
    if args.command == "replay":
        return replay(args.endpoint, args.requests)
    if args.command == "verify":
        return verify(args.endpoint, args.version, args.outcome)
    return stop()


if __name__ == "__main__":
    raise SystemExit(main())
