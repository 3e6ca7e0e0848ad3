"""The ML CI's checks after ``lakehouse train``: the threshold gate and the registration.

``gate TRAIN_TXT [--train-status N]`` reads what ``lakehouse train`` printed (its run id,
registered version, metrics and the gate's verdict) and fails unless the verdict is one
``$ML_CI_ACCEPT`` names (comma-separated, default ``promoted``), or when ``lakehouse train``
exited with another status than 0 or 3 (3: the gate rejected the candidate). It writes
``run-id``, ``version`` and ``verdict`` to ``$GITHUB_OUTPUT`` when set.

``registration --run-id ID --version N`` asks the platform's model registry for version ``N``
and fails unless it was registered from run ``ID`` and carries the gate's verdict (and, when
promoted, the ``champion`` alias). It writes the run, the version and the metrics to
``$GITHUB_STEP_SUMMARY`` when set.

Both print what they found; ``::error::`` lines make GitHub show a failure on the step.
Run with the project's virtual env (``.venv/bin/python``), from the repository's root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

RUN_LINE = re.compile(r"^run (?P<run_id>[0-9a-f]{32}): (?P<model>\S+) version (?P<version>\d+)$")
GATE_LINE = re.compile(r"^gate: (?P<verdict>\w+) \((?P<reason>.*)\)$")
METRIC_LINE = re.compile(r"^\s+(?P<name>[a-z][a-z0-9_]*)\s+(?P<value>-?\d+\.\d+)$")
ROWS_LINE = re.compile(r"^rows: (?P<train>\d+) training, (?P<holdout>\d+) holdout$")
INPUTS_LINE = re.compile(r"^inputs: (?P<json>\{.*\})$")


@dataclass
class TrainSummary:
    """What one ``lakehouse train`` printed."""

    run_id: str
    model: str
    version: int
    verdict: str | None = None
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    rows: tuple[int, int] | None = None
    inputs: dict[str, int] = field(default_factory=dict)


def say(line: str) -> None:
    """One line to stdout (the step's log)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(message: str) -> int:
    """Report an error as GitHub annotates it; return the exit status."""
    say(f"::error::{message}")
    return 1


def parse_train_output(text: str) -> TrainSummary:
    """The :class:`TrainSummary` in ``text``; ``ValueError`` when it has no run line."""
    summary: TrainSummary | None = None
    for line in text.splitlines():
        if match := RUN_LINE.match(line):
            summary = TrainSummary(match["run_id"], match["model"], int(match["version"]))
        elif summary is None:
            continue
        elif match := GATE_LINE.match(line):
            summary.verdict, summary.reason = match["verdict"], match["reason"]
        elif match := ROWS_LINE.match(line):
            summary.rows = (int(match["train"]), int(match["holdout"]))
        elif match := INPUTS_LINE.match(line):
            summary.inputs = json.loads(match["json"])
        elif match := METRIC_LINE.match(line):
            summary.metrics[match["name"]] = float(match["value"])
    if summary is None:
        raise ValueError("no 'run <id>: <model> version <n>' line: did `lakehouse train` run?")
    return summary


def append(variable: str, text: str) -> None:
    """Append ``text`` to the file ``$variable`` names (GitHub's step files), if set."""
    path = os.environ.get(variable)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(text)


def accepted_verdicts() -> set[str]:
    """The verdicts ``$ML_CI_ACCEPT`` names (default ``promoted``)."""
    raw = os.environ.get("ML_CI_ACCEPT") or "promoted"
    return {v.strip() for v in raw.split(",") if v.strip()}


def gate(train_txt: Path, train_status: int = 0) -> int:
    """Fail unless the training run's gate verdict is accepted; record run id and version.

    ``train_status`` is the exit status of ``lakehouse train``: 0, or 3 when the gate rejected
    the candidate (the verdict then says why); anything else is a failed training.
    """
    if train_status not in (0, 3):
        return fail(f"`lakehouse train` exited {train_status}")
    try:
        summary = parse_train_output(train_txt.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return fail(f"{train_txt}: {exc}")
    say(f"run {summary.run_id}: {summary.model} version {summary.version}")
    for name, value in summary.metrics.items():
        say(f"  {name:<10} {value:.4f}")
    append(
        "GITHUB_OUTPUT",
        f"run-id={summary.run_id}\nversion={summary.version}\nverdict={summary.verdict or ''}\n",
    )
    rows = f"{summary.rows[0]} training, {summary.rows[1]} holdout" if summary.rows else "?"
    append(
        "GITHUB_STEP_SUMMARY",
        f"### ML CI: training run `{summary.run_id}`\n\n"
        f"{summary.model} version {summary.version}; {rows} rows; gate: "
        f"**{summary.verdict or 'none'}** ({summary.reason})\n\n"
        "| metric | value |\n|---|---|\n"
        + "".join(f"| {name} | {value:.4f} |\n" for name, value in summary.metrics.items())
        + "\ninputs (Delta table versions): "
        + ", ".join(f"`{table}@{v}`" for table, v in sorted(summary.inputs.items()))
        + "\n\n",
    )
    if summary.verdict is None:
        return fail("the training run printed no gate verdict")
    accepted = accepted_verdicts()
    say(f"gate: {summary.verdict} ({summary.reason}); accepted: {', '.join(sorted(accepted))}")
    if summary.verdict not in accepted:
        return fail(
            f"gate verdict {summary.verdict!r} ({summary.reason}) is not one of "
            f"{sorted(accepted)}: the model does not meet the threshold"
        )
    return 0


def registration(run_id: str, version: int) -> int:
    """Fail unless model version ``version`` is registered from ``run_id`` with its verdict."""
    from lakehouse.models.registry import CHAMPION, PROMOTED, history
    from lakehouse.platform.settings import load_settings

    settings = load_settings()
    records = {r.version: r for r in history(settings)}
    record = records.get(version)
    if record is None:
        return fail(f"{settings.model_name} has no version {version} (has {sorted(records)})")
    say(
        f"{settings.model_name} version {record.version}: run {record.run_id}, "
        f"aliases [{', '.join(record.aliases)}], stage {record.stage}, verdict {record.verdict}"
    )
    errors = []
    if record.run_id != run_id:
        errors.append(f"version {version} was registered from run {record.run_id!r}, not {run_id}")
    if not record.verdict:
        errors.append(f"version {version} carries no gate verdict")
    if record.verdict == PROMOTED and CHAMPION not in record.aliases:
        errors.append(f"version {version} was promoted but is not the {CHAMPION}")
    metric = "" if record.metric_value is None else f"{record.metric_value:.4f}"
    append(
        "GITHUB_STEP_SUMMARY",
        "### ML CI: registered model\n\n"
        "| model | version | run | aliases | stage | gate metric | verdict | reason |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {settings.model_name} | {record.version} | `{record.run_id}` "
        f"| {', '.join(record.aliases)} | {record.stage} | {metric} | {record.verdict} "
        f"| {record.reason} |\n\n",
    )
    for error in errors:
        fail(error)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gate_cmd = sub.add_parser("gate", help="check the gate verdict in `lakehouse train` output")
    gate_cmd.add_argument("train_txt", type=Path, help="what `lakehouse train` printed")
    gate_cmd.add_argument(
        "--train-status", type=int, default=0, help="the exit status of `lakehouse train`"
    )
    reg = sub.add_parser("registration", help="check the registered version's run")
    reg.add_argument("--run-id", required=True)
    reg.add_argument("--version", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "gate":
        return gate(args.train_txt, args.train_status)
    return registration(args.run_id, args.version)


if __name__ == "__main__":
    raise SystemExit(main())
