"""``lakehouse cluster start|stop|status``: a Spark standalone cluster on this machine.

See :mod:`lakehouse.platform.cluster`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lakehouse.cli.commands._daemon import EXIT_BUSY, EXIT_NOT_RUNNING, port_number, seconds
from lakehouse.cli.console import format_seconds
from lakehouse.platform.cluster import (
    DEFAULT_CORES,
    DEFAULT_HOST,
    DEFAULT_MEMORY,
    DEFAULT_PORT,
    DEFAULT_WEBUI_PORT,
    DEFAULT_WORKERS,
    MEMORY_PATTERN,
    AppState,
    ClusterError,
    ClusterInfo,
    MasterState,
    master_state,
    pid_path,
    running,
    start,
    stop,
)
from lakehouse.platform.settings import load_settings
from lakehouse.workflows.training import positive_int

EPILOG = f"""\
The master and workers are Spark's own (spark-class of the pyspark wheel), run in the
background. Any job then runs on the cluster with only the master URL changed:

  export LAKEHOUSE_SPARK_MASTER=spark://127.0.0.1:7077
  lakehouse pipeline run        # or: spark-submit --master $LAKEHOUSE_SPARK_MASTER jobs/...

The pid file is $LAKEHOUSE_HOME/run/cluster.pid, the logs $LAKEHOUSE_HOME/logs/cluster-*.log,
the workers' folders (one per application, with the executors' output)
$LAKEHOUSE_HOME/cluster/worker-N/.

Exit status: 0 done; 1 the cluster could not start or stop (one line naming the log file);
{EXIT_BUSY} `start` found a cluster of this state folder running; {EXIT_NOT_RUNNING} `status` found
none.
"""


def _memory(text: str) -> str:
    if not MEMORY_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"not an amount of memory like 1g or 512m: {text!r}")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``cluster`` command group."""
    cluster = sub.add_parser(
        "cluster",
        help="run a Spark standalone master and workers on this machine",
        description="Start, stop or inspect the local Spark cluster of this state folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = cluster.add_subparsers(dest="action", metavar="ACTION", required=True)
    start_ = actions.add_parser(
        "start",
        help="start a master and workers; wait until every worker is registered",
        description=(
            "Start a standalone master and WORKERS workers in the background and wait until the "
            "master lists every worker ALIVE; print the master URL to give jobs."
        ),
    )
    start_.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"number of workers (default {DEFAULT_WORKERS})",
    )
    start_.add_argument(
        "--cores-per-worker",
        type=positive_int,
        default=DEFAULT_CORES,
        metavar="N",
        help=f"cores each worker offers executors (default {DEFAULT_CORES})",
    )
    start_.add_argument(
        "--memory-per-worker",
        type=_memory,
        default=DEFAULT_MEMORY,
        metavar="SIZE",
        help=(
            f"memory each worker offers executors (default {DEFAULT_MEMORY}; an executor asks "
            "for spark.executor.memory, 1g unless set)"
        ),
    )
    start_.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address of the master and workers (default {DEFAULT_HOST}: this machine only)",
    )
    start_.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"master port (default {DEFAULT_PORT})",
    )
    start_.add_argument(
        "--webui-port",
        type=port_number,
        default=DEFAULT_WEBUI_PORT,
        help=f"master web UI port, its JSON at /json/ (default {DEFAULT_WEBUI_PORT})",
    )
    start_.add_argument(
        "--wait",
        type=seconds,
        default=120.0,
        metavar="SECONDS",
        help="wait up to SECONDS for the master, then for the workers (default 120)",
    )
    start_.set_defaults(handler=run_start)
    stop_ = actions.add_parser("stop", help="stop the workers, then the master (SIGTERM, wait)")
    stop_.add_argument(
        "--timeout",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="SIGKILL a process that has not ended after SECONDS (default 60)",
    )
    stop_.set_defaults(handler=run_stop)
    status = actions.add_parser(
        "status",
        help="the master URL, workers, cores, memory and running applications (exit 3: none)",
    )
    status.set_defaults(handler=run_status)


def run_start(args: argparse.Namespace) -> int:
    """Start the cluster and print its master URL and the line that points jobs at it."""
    settings = load_settings()
    try:
        info = start(
            settings,
            workers=args.workers,
            cores=args.cores_per_worker,
            memory=args.memory_per_worker,
            host=args.host,
            port=args.port,
            webui_port=args.webui_port,
            wait=args.wait,
        )
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    cores = args.cores_per_worker
    print(
        f"Spark cluster started: master {info.url} (pid {info.pid}), {len(info.workers)} workers "
        f"of {cores} core{'s' if cores > 1 else ''} and {args.memory_per_worker}; "
        f"web UI {info.webui}"
    )
    print(f"logs: {info.log.removesuffix('-master.log')}-*.log")
    print("Run jobs on it with:")
    print(f"  export LAKEHOUSE_SPARK_MASTER={info.url}")
    return 0


def run_stop(args: argparse.Namespace) -> int:
    """Stop the workers, then the master, if a cluster runs."""
    settings = load_settings()
    try:
        info = stop(settings, timeout=args.timeout)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if info is None:
        print(f"no Spark cluster running for {settings.home}", file=sys.stderr)
    else:
        pids = ", ".join(str(w.pid) for w in info.workers)
        print(f"Spark cluster stopped (master pid {info.pid}; worker pids {pids})")
    return 0


def _app_line(app: AppState) -> str:
    return (
        f"  {app.id}  {app.name}  {app.state}  cores {app.cores}  "
        f"{app.memory_per_executor_mb} MiB per executor  {format_seconds(app.duration_ms / 1000)}"
    )


def run_status(args: argparse.Namespace) -> int:
    """Print the master URL, each worker, and the running applications; exit 3 when none runs."""
    settings = load_settings()
    info = running(settings)
    if info is None:
        print(f"no Spark cluster running for {settings.home}")
        return EXIT_NOT_RUNNING
    if info.pid <= 0:
        print(f"a Spark cluster is starting (no record in {pid_path(settings)} yet)")
        return 0
    state = master_state(info.webui)
    print(f"master:  {info.url} (pid {info.pid}, up {format_seconds(info.uptime())})")
    print(f"web UI:  {info.webui}")
    print(f"log:     {info.log}")
    if state is None:
        print(f"the master does not answer at {info.webui}/json/; see {info.log}")
        return 1
    _print_state(info, state)
    print(f"export LAKEHOUSE_SPARK_MASTER={info.url}")
    return 0


def _print_state(info: ClusterInfo, state: MasterState) -> None:
    alive = state.alive_workers
    cores = sum(w.cores for w in alive)
    memory = sum(w.memory_mb for w in alive)
    print(
        f"status:  {state.status}; {len(alive)} of {len(state.workers)} workers alive, "
        f"{cores} cores, {memory} MiB"
    )
    print("workers:")
    order = {w.port: n for n, w in enumerate(info.workers)}
    for w in sorted(state.workers, key=lambda w: (order.get(w.port, len(order)), w.id)):
        recorded = info.worker_on(w.port)
        name = f"{Path(recorded.folder).name} (pid {recorded.pid})" if recorded else "other"
        print(
            f"  {name}  {w.state}  cores {w.cores_used}/{w.cores} used  "
            f"memory {w.memory_used_mb}/{w.memory_mb} MiB used  {w.id}"
        )
    if state.active_apps:
        print("running applications:")
        for app in state.active_apps:
            print(_app_line(app))
    else:
        print("running applications: none")
