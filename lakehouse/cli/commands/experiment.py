"""``lakehouse experiment compare``: training runs side by side, and a plot of them."""

from __future__ import annotations

import argparse
import sys

from lakehouse.models.config import GATE_METRICS, GateConfig
from lakehouse.platform.settings import load_settings
from lakehouse.workflows.training import positive_int

#: How many runs ``compare`` shows when given neither run ids nor ``--last``/``--sweep``.
DEFAULT_LAST = 5


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``experiment`` command and its ``compare`` action."""
    parser = sub.add_parser(
        "experiment",
        help="compare the training runs of the MLflow experiment",
        description="Training runs of the platform's MLflow experiment, side by side.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    compare = actions.add_parser(
        "compare",
        help="print runs side by side: params, metrics, cost, data versions, reproducibility",
        description="Print training runs side by side, one column per run: parameters, "
        "holdout metrics, cost (training_seconds, fit_seconds, peak_memory_mb), the Delta "
        "versions read, the data digest, and whether a `lakehouse train --reproduce` run "
        "reproduced the run exactly (equal metrics and data digest). Without run ids: the "
        f"last {DEFAULT_LAST} training runs, oldest first.",
        epilog="exit status: 0 compared, 1 unknown run or nothing to compare, 2 bad flags",
    )
    which = compare.add_mutually_exclusive_group()
    which.add_argument("run_ids", nargs="*", metavar="RUN_ID", default=[], help="MLflow run ids")
    which.add_argument("--last", type=positive_int, metavar="N", help="the N newest training runs")
    which.add_argument(
        "--sweep", metavar="RUN_ID", help="the child runs of the sweep (parent run) RUN_ID"
    )
    compare.add_argument(
        "--metric",
        choices=GATE_METRICS,
        default=GateConfig().metric,
        help="metric of the plot (default %(default)s)",
    )
    compare.add_argument(
        "--plot", metavar="PATH", help="also write a PNG bar chart of the metric and time"
    )
    compare.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    """Print the runs side by side; write the plot when asked."""
    # Imported here: the experiments module imports MLflow (seconds) through the tracking one.
    from lakehouse.models.experiments import (
        last_runs,
        load_runs,
        render_comparison,
        sweep_children,
        write_comparison_plot,
    )

    settings = load_settings()
    try:
        if args.run_ids:
            runs = load_runs(settings, args.run_ids)
        elif args.sweep:
            runs = sweep_children(settings, args.sweep)
        else:
            runs = last_runs(settings, args.last or DEFAULT_LAST)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not runs:
        print(
            f"error: no training runs in experiment {settings.experiment}; "
            "run `lakehouse train` first",
            file=sys.stderr,
        )
        return 1
    print(render_comparison(runs))
    if args.plot:
        try:
            path = write_comparison_plot(runs, args.metric, args.plot)
        except OSError as exc:
            print(f"error: cannot write the plot: {exc}", file=sys.stderr)
            return 1
        print(f"plot: {path}")
    return 0
