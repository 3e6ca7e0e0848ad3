"""``lakehouse endpoint ...``: serving endpoints, canaries, promotion and the inference log.

Every command but ``analyze`` and ``ingest-log`` only talks to the serving process over HTTP
(``--url``, default ``$LAKEHOUSE_SERVING_URL`` or http://127.0.0.1:8000, token from
``$LAKEHOUSE_SERVING_TOKEN``) and to the model registry: none starts a JVM, and Spark is imported
only by those two.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from tabulate import tabulate

from lakehouse.platform.settings import Settings, load_settings
from lakehouse.scoring.canary import (
    PROMOTE,
    ROLLBACK,
    CanaryThresholds,
    Decision,
    EndpointClient,
    EndpointConfig,
    ServingError,
    create_endpoint,
    delete_endpoint,
    load_thresholds,
    promote_canary,
    rollback_canary,
    start_canary,
)

#: Exit status of ``analyze`` when the verdict is to roll back (as a gate rejection), and when
#: there is not enough traffic for a verdict yet.
EXIT_ROLLBACK = 3
EXIT_WAIT = 4

#: The threshold flags of ``analyze``: field of CanaryThresholds -> (type, help).
_THRESHOLD_FLAGS: dict[str, tuple[Callable[[str], Any], str]] = {
    "min_requests": (int, "requests each side needs before a verdict"),
    "max_error_rate_increase": (float, "how far the canary's 5xx rate may exceed the champion's"),
    "max_p50_ratio": (float, "canary median latency at most this multiple of the champion's"),
    "max_p99_ratio": (float, "the same for the 99th percentile"),
    "latency_slack_ms": (float, "milliseconds added to both latency bounds"),
    "max_psi": (float, "largest population stability index of the scores"),
    "max_ks": (float, "largest Kolmogorov-Smirnov statistic of the scores"),
    "min_labelled": (int, "labelled predictions each side needs to compare outcomes"),
    "max_auc_drop": (float, "how far the canary's ROC AUC may fall below the champion's"),
}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _percent(text: str) -> int:
    value = _positive(text)
    if value > 99:
        raise argparse.ArgumentTypeError(f"expected 1 to 99 (100 is a promotion), got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``endpoint`` command and its sub-commands."""
    parser = sub.add_parser(
        "endpoint",
        help="serving endpoints: create, canary, promote, roll back, analyze, ingest the log",
        description="Manage the endpoints of `lakehouse serve` and their canaries. Every "
        "decision is recorded in gold.serving_decisions.",
    )
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument(
        "--url",
        help="the serving process (default $LAKEHOUSE_SERVING_URL or http://127.0.0.1:8000)",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = actions.add_parser("create", parents=[server], help="create an endpoint")
    create.add_argument("name", help="endpoint name")
    which = create.add_mutually_exclusive_group()
    which.add_argument("--alias", help="follow this registry alias (default champion)")
    which.add_argument("--version", type=_positive, help="serve this model version")
    create.add_argument("--model", help="registered model (default the settings' model)")
    create.set_defaults(handler=run_create)

    listing = actions.add_parser("list", parents=[server], help="list the endpoints")
    listing.set_defaults(handler=run_list)
    get = actions.add_parser("get", parents=[server], help="print one endpoint as JSON")
    get.add_argument("name", help="endpoint name")
    get.set_defaults(handler=run_get)
    delete = actions.add_parser("delete", parents=[server], help="delete an endpoint")
    delete.add_argument("name", help="endpoint name")
    delete.set_defaults(handler=run_delete)

    canary = actions.add_parser(
        "canary",
        parents=[server],
        help="serve a version as canary with a share of the traffic",
        description="Add (or change) the endpoint's canary: VERSION gets the challenger alias "
        "and PERCENT %% of the traffic, the champion the rest.",
    )
    canary.add_argument("name", help="endpoint name")
    canary.add_argument("--version", type=_positive, required=True, help="model version")
    canary.add_argument("--percent", type=_percent, required=True, help="traffic share, 1-99")
    canary.set_defaults(handler=run_canary)

    promote = actions.add_parser(
        "promote", parents=[server], help="make the canary the champion, with all the traffic"
    )
    promote.add_argument("name", help="endpoint name")
    promote.add_argument(
        "--force", action="store_true", help="promote even a version the gate rejected"
    )
    promote.set_defaults(handler=run_promote)

    rollback = actions.add_parser(
        "rollback", parents=[server], help="all the traffic back to the champion"
    )
    rollback.add_argument("name", help="endpoint name")
    rollback.set_defaults(handler=run_rollback)

    analyze = actions.add_parser(
        "analyze",
        parents=[server],
        help="compare the canary with the champion on the inference log",
        description="Ingest the inference log, then compare the canary with the champion: "
        "error rate, latency p50/p99, score distribution (PSI, KS) and outcomes where "
        "gold.labels has them. Exit 0 for promote, 3 for rollback, 4 when there is not "
        "enough traffic yet. Thresholds: the defaults, then the canary section of ./ml_gate.yaml "
        "(or --thresholds FILE), then flags.",
    )
    analyze.add_argument("name", help="endpoint name")
    analyze.add_argument("--apply", action="store_true", help="promote or roll back by verdict")
    analyze.add_argument(
        "--force", action="store_true", help="with --apply, promote even a gate-rejected version"
    )
    analyze.add_argument("--thresholds", metavar="FILE", help="YAML mapping of thresholds")
    for name, (kind, text) in _THRESHOLD_FLAGS.items():
        default = getattr(CanaryThresholds(), name)
        analyze.add_argument(
            f"--{name.replace('_', '-')}", type=kind, help=f"{text} (default {default})"
        )
    analyze.set_defaults(handler=run_analyze)

    ingest = actions.add_parser(
        "ingest-log",
        help="take the serving spools into gold.inference_log and gold.serving_decisions",
    )
    ingest.set_defaults(handler=run_ingest)


def _client(args: argparse.Namespace) -> EndpointClient:
    return EndpointClient.from_env(args.url)


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print the one-line message of an expected failure and exit 1."""

    def handler(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (ServingError, ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    handler.__doc__ = run.__doc__
    return handler


def _recorded(decision: Decision) -> str:
    return (
        f"decision {decision.decision_id} recorded "
        "(in gold.serving_decisions after `lakehouse endpoint ingest-log`)"
    )


def _traffic(config: EndpointConfig) -> str:
    """``champion v3 90%, canary v4 10%``: each routed entity, the version it serves, its share."""
    parts = [
        f"{name} v{config.served.get(name, '?')} {pct}%" for name, pct in config.routes.items()
    ]
    if config.shadow:
        parts.append(
            f"shadow {config.shadow.get('served_entity_name')} {config.shadow.get('percentage')}%"
        )
    return ", ".join(parts)


@_guarded
def run_create(args: argparse.Namespace) -> int:
    """Create an endpoint."""
    settings = load_settings()
    version: int | str = args.version if args.version is not None else args.alias or "champion"
    decision = create_endpoint(_client(args), settings, args.name, version, args.model)
    print(f"endpoint {args.name} created: {decision.reason}")
    print(_recorded(decision))
    return 0


@_guarded
def run_list(args: argparse.Namespace) -> int:
    """Print every endpoint with its traffic."""
    endpoints = _client(args).list()
    if not endpoints:
        print("no endpoints")
        return 0
    client = _client(args)
    rows = []
    for listed in endpoints:
        endpoint = client.get(str(listed["name"]))  # the list leaves the traffic out
        config = EndpointConfig.of(endpoint)
        state = endpoint.get("state") or {}
        rows.append((config.name, state.get("ready", ""), _traffic(config)))
    print(tabulate(rows, headers=["endpoint", "state", "traffic"], tablefmt="simple"))
    return 0


@_guarded
def run_get(args: argparse.Namespace) -> int:
    """Print one endpoint as the server describes it."""
    print(json.dumps(_client(args).get(args.name), indent=2, sort_keys=True))
    return 0


@_guarded
def run_delete(args: argparse.Namespace) -> int:
    """Delete an endpoint."""
    decision = delete_endpoint(_client(args), load_settings(), args.name)
    print(f"endpoint {args.name} deleted")
    print(_recorded(decision))
    return 0


@_guarded
def run_canary(args: argparse.Namespace) -> int:
    """Start or change a canary."""
    decision = start_canary(_client(args), load_settings(), args.name, args.version, args.percent)
    print(f"endpoint {args.name}: {decision.reason}")
    print(_recorded(decision))
    return 0


@_guarded
def run_promote(args: argparse.Namespace) -> int:
    """Promote the canary."""
    decision = promote_canary(_client(args), load_settings(), args.name, force=args.force)
    print(f"endpoint {args.name}: {decision.reason}; it serves all the traffic")
    print(_recorded(decision))
    return 0


@_guarded
def run_rollback(args: argparse.Namespace) -> int:
    """Roll the canary back."""
    decision = rollback_canary(_client(args), load_settings(), args.name)
    print(f"endpoint {args.name}: {decision.reason}")
    print(_recorded(decision))
    return 0


def thresholds_of(args: argparse.Namespace) -> CanaryThresholds:
    """The defaults, then the ``canary`` section of ``./ml_gate.yaml`` (or the ``--thresholds``
    file), then the single flags."""
    from lakehouse.models.config import CANARY_SECTION, default_gate_file

    thresholds = CanaryThresholds()
    gate_file = default_gate_file()
    if args.thresholds:
        thresholds = load_thresholds(args.thresholds, thresholds)
    elif gate_file is not None and CANARY_SECTION in (yaml.safe_load(gate_file.read_text()) or {}):
        thresholds = load_thresholds(gate_file, thresholds)
    return thresholds.override({name: getattr(args, name) for name in _THRESHOLD_FLAGS})


@_guarded
def run_analyze(args: argparse.Namespace) -> int:
    """Compare the canary with the champion; with --apply, act on the verdict."""
    thresholds = thresholds_of(args)
    client = _client(args)
    client.get(args.name)  # an unknown endpoint or a server that is down: before the JVM starts
    settings = load_settings()
    with _spark(settings, "lakehouse-endpoint-analyze") as spark:
        from lakehouse.scoring.inference_log import analyze_canary

        analysis = analyze_canary(
            spark, settings, client, args.name, thresholds, apply=args.apply, force=args.force
        )
    verdict = analysis.verdict
    rows = [
        (
            c.name,
            {True: "pass", False: "FAIL", None: "skipped"}[c.passed],
            "" if c.value is None else f"{c.value:.4f}",
            "" if c.limit is None else f"{c.limit:.4f}",
            c.detail,
        )
        for c in verdict.checks
    ]
    sides = [
        (
            s.entity,
            s.version,
            s.requests,
            f"{s.error_rate:.4f}",
            _ms(s.p50_ms),
            _ms(s.p99_ms),
            len(s.scores),
            len(s.outcomes),
        )
        for s in (verdict.champion, verdict.canary)
    ]
    print(str(analysis.ingest))
    print(
        tabulate(
            sides,
            headers=[
                "entity",
                "version",
                "requests",
                "error rate",
                "p50",
                "p99",
                "scores",
                "labelled",
            ],
            tablefmt="simple",
        )
    )
    print()
    print(
        tabulate(rows, headers=["check", "result", "value", "limit", "detail"], tablefmt="simple")
    )
    print()
    print(f"verdict: {verdict.verdict} ({verdict.reason})")
    decision = analysis.decision
    if decision.applied:
        done = {PROMOTE: "promoted", ROLLBACK: "rolled back"}[decision.action]
        print(f"applied: canary of endpoint {args.name} {done}")
    elif args.apply:
        print("applied: nothing (no verdict yet)")
    print(f"decision {decision.decision_id} recorded in gold.serving_decisions")
    return {PROMOTE: 0, ROLLBACK: EXIT_ROLLBACK}.get(verdict.verdict, EXIT_WAIT)


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} ms"


def run_ingest(args: argparse.Namespace) -> int:
    """Ingest both serving spools and print what each did."""
    settings = load_settings()
    with _spark(settings, "lakehouse-endpoint-ingest-log") as spark:
        from lakehouse.scoring.inference_log import ingest_decisions, ingest_inference_log

        log_report = ingest_inference_log(spark, settings)
        decisions = ingest_decisions(spark, settings)
    print(log_report)
    print(decisions)
    return 0


@contextmanager
def _spark(settings: Settings, app_name: str) -> Iterator[Any]:
    """A Spark session for the two commands that need one, stopped at the end."""
    from lakehouse.platform.spark import get_spark

    spark = get_spark(settings, app_name=app_name)
    try:
        yield spark
    finally:
        spark.stop()
