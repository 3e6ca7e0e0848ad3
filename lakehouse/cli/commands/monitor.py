"""``lakehouse monitor create|refresh|show|list|delete|report``: monitors on Delta tables."""

from __future__ import annotations

import argparse
import json
import sys

from lakehouse.monitoring.alerts import RULES_FILE, load_rules
from lakehouse.monitoring.baseline import (
    CHAMPION_BASELINE,
    baseline_table_name,
    build_champion_baseline,
)
from lakehouse.monitoring.definition import (
    PROBLEM_TYPES,
    PROFILE_TYPES,
    Granularity,
    MonitorError,
    MonitorInferenceLog,
    MonitorInfo,
    MonitorSnapshot,
    MonitorTimeSeries,
    delete_monitor,
    list_monitors,
    load_monitor,
    save_monitor,
)
from lakehouse.monitoring.metrics import profiled_columns
from lakehouse.monitoring.refresh import check_columns
from lakehouse.platform.catalog import split_name
from lakehouse.platform.settings import load_settings
from lakehouse.platform.spark import get_spark, table_catalog
from lakehouse.workflows.canary_flags import add_canary_flags, canary_request


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``monitor`` command group."""
    monitor = sub.add_parser(
        "monitor",
        help="monitors on Delta tables: profile and drift metrics tables",
        description="Monitors in the shape of Databricks Lakehouse Monitoring. Each writes "
        "<schema>.<table>_profile_metrics and <schema>.<table>_drift_metrics.",
    )
    actions = monitor.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create (or with --replace, redefine) a monitor")
    create.add_argument("table", help="the monitored table, for example gold.prediction_outcomes")
    create.add_argument("--profile", choices=PROFILE_TYPES, required=True)
    create.add_argument("--timestamp-col", help="inference and time-series: the time column")
    create.add_argument(
        "--granularity",
        action="append",
        dest="granularities",
        help="window length, repeatable (default: '1 day' and '1 week')",
    )
    create.add_argument("--model-id-col", help="inference: the model version column")
    create.add_argument("--prediction-col", help="inference: the prediction (or probability)")
    create.add_argument("--prediction-proba-col", help="inference: the probability, if apart")
    create.add_argument("--label-col", help="inference: the observed label")
    create.add_argument(
        "--problem-type",
        choices=["classification", "regression"],
        default="classification",
    )
    create.add_argument(
        "--baseline",
        help="baseline table for BASELINE drift, or 'champion': the champion's training rows, "
        "rebuilt from the Delta versions its run read (into <table>_baseline)",
    )
    create.add_argument(
        "--slice",
        action="append",
        dest="slices",
        default=[],
        help="slicing expression, repeatable (for example purpose, or 'loan_amount > 10000')",
    )
    create.add_argument(
        "--column",
        action="append",
        dest="columns",
        default=[],
        help="profile only these columns (repeatable; default: all)",
    )
    create.add_argument(
        "--output-schema", help="schema of the metrics tables (default: the monitored table's)"
    )
    create.add_argument("--replace", action="store_true", help="redefine an existing monitor")
    create.set_defaults(handler=create_command)

    refresh_parser = actions.add_parser(
        "refresh",
        help="recompute the windows that changed, MERGE them, evaluate the alert rules",
    )
    refresh_parser.add_argument("table", help="the monitored table")
    refresh_parser.add_argument(
        "--act", action="store_true", help="run the actions (retrain) of new alerts"
    )
    refresh_parser.add_argument(
        "--rules", help=f"alert rules file (default ./{RULES_FILE} if present, else built-in)"
    )
    add_canary_flags(refresh_parser)
    refresh_parser.set_defaults(handler=refresh_command)
    report = actions.add_parser(
        "report", help="an HTML report: drift per feature, scores and quality over time"
    )
    report.add_argument("table", help="the monitored table")
    report.add_argument("--out", default="report.html", help="the HTML file (default report.html)")
    report.add_argument(
        "--granularity", default="1 day", help="the windows to plot (default '1 day')"
    )
    report.set_defaults(handler=report_command)

    for name, help_text, handler in (
        ("show", "print a monitor's definition", show_command),
        ("delete", "delete a monitor (its metrics tables stay)", delete_command),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("table", help="the monitored table")
        action.set_defaults(handler=handler)
    listing = actions.add_parser("list", help="list the monitors")
    listing.set_defaults(handler=list_command)


def build_monitor(args: argparse.Namespace) -> MonitorInfo:
    """The definition the ``create`` flags describe; :class:`MonitorError` naming a bad flag."""
    schema, _ = split_name(args.table)
    champion_baseline = args.baseline == CHAMPION_BASELINE
    granularities = args.granularities or ["1 day", "1 week"]
    for text in granularities:
        Granularity.parse(text)
    inference = time_series = snapshot = None
    if args.profile in ("inference", "time-series") and not args.timestamp_col:
        raise MonitorError(f"--profile {args.profile} needs --timestamp-col")
    if args.profile == "inference":
        missing = [
            f"--{n.replace('_', '-')}"
            for n in ("model_id_col", "prediction_col")
            if not getattr(args, n)
        ]
        if missing:
            raise MonitorError(f"--profile inference needs {' and '.join(missing)}")
        problem = PROBLEM_TYPES[0 if args.problem_type == "classification" else 1]
        inference = MonitorInferenceLog(
            timestamp_col=args.timestamp_col,
            granularities=granularities,
            model_id_col=args.model_id_col,
            prediction_col=args.prediction_col,
            problem_type=problem,
            label_col=args.label_col,
            prediction_proba_col=args.prediction_proba_col,
        )
    elif args.profile == "time-series":
        time_series = MonitorTimeSeries(args.timestamp_col, granularities)
    else:
        snapshot = MonitorSnapshot()
    return MonitorInfo(
        table_name=args.table,
        output_schema_name=args.output_schema or schema,
        inference_log=inference,
        time_series=time_series,
        snapshot=snapshot,
        baseline_table_name=baseline_table_name(args.table) if champion_baseline else args.baseline,
        baseline_source=CHAMPION_BASELINE if champion_baseline else None,
        slicing_exprs=args.slices,
        columns=args.columns,
    )


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def create_command(args: argparse.Namespace) -> int:
    """Validate and save a monitor definition."""
    try:
        info = build_monitor(args)
    except ValueError as exc:
        return _fail(str(exc))
    settings = load_settings()
    spark = get_spark(settings, app_name="lakehouse-monitor")
    try:
        catalog = table_catalog(settings)
        given = (info.table_name, None if info.baseline_source else info.baseline_table_name)
        for name in filter(None, given):
            if not catalog.exists(spark, name):
                return _fail(f"no table {name} under {catalog.root}")
        try:
            load_monitor(spark, catalog, info.table_name)
            if not args.replace:
                return _fail(f"{info.table_name} already has a monitor (--replace redefines it)")
        except MonitorError:
            pass
        source = catalog.read(spark, info.table_name)
        try:
            check_columns(info, source.columns)
            profiled_columns(info, source.schema)
            for expr in info.slicing_exprs:
                source.selectExpr(expr).schema  # noqa: B018  (analysis checks the expression)
        except Exception as exc:  # an unknown column or a bad expression
            return _fail(str(exc).splitlines()[0])
        if info.baseline_source and info.baseline_table_name:
            try:
                print(
                    build_champion_baseline(
                        spark, settings, catalog, info.baseline_table_name
                    ).summary()
                )
            except ValueError as exc:
                return _fail(str(exc))
        path = save_monitor(spark, catalog, info)
        print(f"monitor on {info.table_name} saved to {path}")
        print(f"metrics tables: {info.profile_metrics_table_name}, {info.drift_metrics_table_name}")
        return 0
    finally:
        spark.stop()


def refresh_command(args: argparse.Namespace) -> int:
    """Refresh one monitor, evaluate the rules, act when asked; print what happened."""
    try:
        rules = load_rules(args.rules)
        canary = canary_request(args)
    except ValueError as exc:
        return _fail(str(exc))
    settings = load_settings()
    spark = get_spark(settings, app_name="lakehouse-monitor")
    try:
        from lakehouse.workflows.monitoring import refresh_and_evaluate

        try:
            outcome = refresh_and_evaluate(
                spark,
                settings,
                table_catalog(settings),
                args.table,
                act=args.act,
                rules=rules,
                canary=canary,
            )
        except (ValueError, FileNotFoundError) as exc:
            return _fail(str(exc))
        print("\n".join(outcome.lines()))
        for error in outcome.errors:
            print(f"error: {error}", file=sys.stderr)
        return 1 if outcome.errors else 0
    finally:
        spark.stop()


def report_command(args: argparse.Namespace) -> int:
    """Write the HTML report of one monitor."""
    try:
        Granularity.parse(args.granularity)
    except ValueError as exc:
        return _fail(str(exc))
    settings = load_settings()
    spark = get_spark(settings, app_name="lakehouse-monitor")
    try:
        from lakehouse.monitoring.report import write_report

        try:
            path = write_report(
                spark, table_catalog(settings), args.table, args.out, granularity=args.granularity
            )
        except (ValueError, FileNotFoundError) as exc:
            return _fail(str(exc))
        print(f"report on {args.table} written to {path}")
        return 0
    finally:
        spark.stop()


def show_command(args: argparse.Namespace) -> int:
    """Print a monitor's definition as JSON."""
    settings = load_settings()
    spark = get_spark(settings, app_name="lakehouse-monitor", register_tables=False)
    try:
        try:
            info = load_monitor(spark, table_catalog(settings), args.table)
        except ValueError as exc:
            return _fail(str(exc))
        body = info.as_dict()
        body["profile_metrics_table_name"] = info.profile_metrics_table_name
        body["drift_metrics_table_name"] = info.drift_metrics_table_name
        print(json.dumps(body, indent=2, sort_keys=True))
        return 0
    finally:
        spark.stop()


def list_command(args: argparse.Namespace) -> int:
    """Print every monitor, one line each."""
    settings = load_settings()
    spark = get_spark(settings, app_name="lakehouse-monitor", register_tables=False)
    try:
        monitors = list_monitors(spark, table_catalog(settings))
        if not monitors:
            print("no monitors; create one with `lakehouse monitor create`")
        for info in monitors:
            print(
                f"{info.table_name}  {info.profile_type}  {','.join(info.granularities)}  "
                f"-> {info.profile_metrics_table_name}, {info.drift_metrics_table_name}"
            )
        return 0
    finally:
        spark.stop()


def delete_command(args: argparse.Namespace) -> int:
    """Delete a monitor's definition."""
    settings = load_settings()
    spark = get_spark(settings, app_name="lakehouse-monitor", register_tables=False)
    try:
        try:
            delete_monitor(spark, table_catalog(settings), args.table)
        except ValueError as exc:
            return _fail(str(exc))
        print(f"monitor on {args.table} deleted (its metrics tables stay)")
        return 0
    finally:
        spark.stop()
