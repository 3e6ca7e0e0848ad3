"""Training runs side by side: parameters, metrics, cost, data versions and reproducibility.

:func:`load_runs` (given run ids), :func:`last_runs` (the newest training runs) and
:func:`sweep_children` (the child runs of a sweep) read runs of the MLflow experiment as
:class:`RunSummary` values; :func:`compare_rows` lays them out as rows of a table whose columns
are the runs (``lakehouse experiment compare`` prints it) and :func:`comparison_figure` draws
the gate metric and the training time of each (the sweep logs it; ``--plot`` writes it).

A run counts as *reproduced exactly* when a run tagged ``lakehouse.reproduces=<its id>``
(:func:`lakehouse.models.training.reproduce`) has the same quality metrics and the same
``data_digest`` param. Cost metrics (:data:`COST_METRICS`) differ between two runs of the same
fit and are left out of that comparison.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse.models.config import GATE_METRICS, LOWER_IS_BETTER, TrainConfig
from lakehouse.models.tracking import experiment_id, mlflow_client
from lakehouse.platform.settings import Settings

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow.entities import Run

#: Run tag of a reproduction, naming the run it reproduces.
REPRODUCES_TAG = "lakehouse.reproduces"
#: Run tag of a sweep's parent run.
SWEEP_TAG = "lakehouse.sweep"
#: Run tag of a sweep's parent naming the best child.
SWEEP_BEST_TAG = "lakehouse.sweep.best_run_id"
#: MLflow's tag on a nested run naming its parent.
PARENT_TAG = "mlflow.parentRunId"

#: What a run cost: wall time of the whole run and of the fit, peak RSS of the process.
COST_METRICS: tuple[str, ...] = ("training_seconds", "fit_seconds", "peak_memory_mb")
#: Metrics logged besides those of the holdout.
EXTRA_METRICS: tuple[str, ...] = ("train_roc_auc",)
#: Params of a training run shown besides the model configuration, in this order.
RUN_PARAMS: tuple[str, ...] = ("feature_service", "train_rows", "holdout_rows", "holdout_start")

NOT_REPRODUCED = "never reproduced"


@dataclass(frozen=True)
class RunSummary:
    """What ``compare`` shows of one run."""

    run_id: str
    run_name: str
    started: datetime
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)
    reproductions: tuple[RunSummary, ...] = ()

    @property
    def table_versions(self) -> dict[str, int]:
        """The Delta versions the run read (its ``table_versions`` param)."""
        raw = self.params.get("table_versions")
        return {str(k): int(v) for k, v in json.loads(raw).items()} if raw else {}

    @property
    def quality_metrics(self) -> dict[str, float]:
        """The metrics that depend on the model and data alone (no cost metric)."""
        return {k: v for k, v in self.metrics.items() if k not in COST_METRICS}

    @property
    def reproduces(self) -> str | None:
        """The id of the run this run reproduces, if it is a reproduction."""
        return self.tags.get(REPRODUCES_TAG)

    def reproduced_by(self) -> RunSummary | None:
        """The first reproduction with equal quality metrics and data digest, if any."""
        for other in self.reproductions:
            if (
                other.quality_metrics == self.quality_metrics
                and other.params.get("data_digest") == self.params.get("data_digest")
                and "data_digest" in self.params
            ):
                return other
        return None

    def reproduction_status(self) -> str:
        """``yes (run <id>)``, ``no (run <id>: metrics differ)`` or ``never reproduced``."""
        exact = self.reproduced_by()
        if exact is not None:
            return f"yes (run {exact.run_id[:8]})"
        if not self.reproductions:
            return NOT_REPRODUCED
        other = self.reproductions[0]
        what = "metrics differ" if other.quality_metrics != self.quality_metrics else "data differ"
        return f"no (run {other.run_id[:8]}: {what})"


def _summary(run: Run, reproductions: Iterable[Run] = ()) -> RunSummary:
    return RunSummary(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        started=datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
        reproductions=tuple(_summary(r) for r in reproductions),
    )


def _search(settings: Settings, filter_string: str, max_results: int = 1000) -> list[Run]:
    """Runs of the settings' experiment matching ``filter_string``, oldest first."""
    client = mlflow_client(settings)
    runs = client.search_runs(
        [experiment_id(settings)],
        filter_string=filter_string,
        max_results=max_results,
        order_by=["attributes.start_time ASC"],
    )
    return list(runs)


def _with_reproductions(settings: Settings, runs: Sequence[Run]) -> list[RunSummary]:
    summaries = []
    for run in runs:
        found = _search(settings, f"tags.`{REPRODUCES_TAG}` = '{run.info.run_id}'")
        summaries.append(_summary(run, found))
    return summaries


def load_runs(settings: Settings, run_ids: Sequence[str]) -> list[RunSummary]:
    """The runs ``run_ids``, in that order, with their reproductions.

    Raises:
        ValueError: a run id is not in the settings' tracking store (the message names it).
    """
    from mlflow.exceptions import MlflowException  # MLflow imports pyspark: on first use

    client = mlflow_client(settings)
    runs = []
    for run_id in run_ids:
        try:
            runs.append(client.get_run(run_id))
        except MlflowException:
            raise ValueError(f"no MLflow run {run_id!r} in {settings.tracking_uri}") from None
    return _with_reproductions(settings, runs)


def is_training_run(run: Run) -> bool:
    """Whether ``run`` fitted a model (a sweep's parent did not)."""
    params = run.data.params
    return "table_versions" in params and "model_type" in params


def last_runs(settings: Settings, n: int) -> list[RunSummary]:
    """The ``n`` newest training runs of the experiment, oldest first."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    client = mlflow_client(settings)
    found: list[Run] = []
    token = None
    while len(found) < n:
        page = client.search_runs(
            [experiment_id(settings)],
            max_results=max(50, n),
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        found += [r for r in page if is_training_run(r)]
        token = page.token
        if not token:
            break
    return _with_reproductions(settings, list(reversed(found[:n])))


def sweep_children(settings: Settings, parent_run_id: str) -> list[RunSummary]:
    """The child runs of the sweep ``parent_run_id``, in the order they ran.

    Raises:
        ValueError: no such run, or it has no child runs.
    """
    load_runs(settings, [parent_run_id])  # an unknown id is a ValueError
    children = _search(settings, f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
    if not children:
        raise ValueError(f"run {parent_run_id} has no child runs (not a sweep)")
    return _with_reproductions(settings, children)


# --- The table -------------------------------------------------------------------------------
def _ordered(names: Iterable[str], first: Sequence[str]) -> list[str]:
    names = set(names)
    return [n for n in first if n in names] + sorted(names - set(first))


def _format_metric(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name == "peak_memory_mb":
        return f"{value:.1f}"
    if name.endswith("_seconds"):
        return f"{value:.2f}"
    return f"{value:.4f}"


def compare_rows(runs: Sequence[RunSummary]) -> list[tuple[str, ...]]:
    """One row per parameter, metric, cost, table version and status; one column per run.

    Rows, in order: ``run`` (the first 8 characters of each id), ``name``, ``started``,
    ``parent`` (a sweep's child names its parent run); the
    model configuration then the other params (``param <name>``); the quality metrics, the
    gate metrics first (``metric <name>``); the cost (``cost <name>``); the Delta version of
    each table read (``data <table>``) and the ``data_digest``; ``reproduces`` (the run a
    reproduction reproduces) and ``reproduced exactly``. A value a run lacks shows as ``-``.
    """
    rows: list[tuple[str, ...]] = [
        ("run", *(r.run_id[:8] for r in runs)),
        ("name", *(r.run_name for r in runs)),
        ("started", *(f"{r.started:%Y-%m-%d %H:%M:%S}" for r in runs)),
        ("parent", *(r.tags.get(PARENT_TAG, "-")[:8] for r in runs)),
    ]
    config_params = tuple(TrainConfig.__dataclass_fields__)
    shown = (*config_params, *RUN_PARAMS)
    params = _ordered((p for r in runs for p in r.params if p in shown), shown)
    rows += [(f"param {p}", *(r.params.get(p, "-") for r in runs)) for p in params]
    quality = _ordered(
        (m for r in runs for m in r.quality_metrics), (*GATE_METRICS, *EXTRA_METRICS)
    )
    rows += [(f"metric {m}", *(_format_metric(m, r.metrics.get(m)) for r in runs)) for m in quality]
    cost = [m for m in COST_METRICS if any(m in r.metrics for r in runs)]
    rows += [(f"cost {m}", *(_format_metric(m, r.metrics.get(m)) for r in runs)) for m in cost]
    tables = sorted({t for r in runs for t in r.table_versions})
    rows += [(f"data {t}", *(str(r.table_versions.get(t, "-")) for r in runs)) for t in tables]
    rows.append(("data_digest", *(r.params.get("data_digest", "-") for r in runs)))
    rows.append(("reproduces", *((r.reproduces or "-")[:8] for r in runs)))
    rows.append(("reproduced exactly", *(r.reproduction_status() for r in runs)))
    return rows


def render_comparison(runs: Sequence[RunSummary]) -> str:
    """:func:`compare_rows` as a plain-text table, the labels in the first column."""
    rows = compare_rows(runs)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- The plot --------------------------------------------------------------------------------
def best_index(values: Sequence[float], metric: str) -> int:
    """The index of the best of ``values`` of ``metric`` (the first of equals)."""
    if not values:
        raise ValueError("no values to choose from")
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    return max(range(len(values)), key=lambda i: (sign * values[i], -i))


def comparison_figure(
    labels: Sequence[str],
    metric: str,
    values: Sequence[float | None],
    seconds: Sequence[float | None] | None = None,
) -> Figure:
    """Bars of ``metric`` per run (the best highlighted) and, given, of training time."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    panels = 2 if seconds is not None else 1
    figure = Figure(figsize=(max(6.0, 1.2 * len(labels) + 2), 3.6 * panels))
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    known = [(i, v) for i, v in enumerate(values) if v is not None]
    best = known[best_index([v for _, v in known], metric)][0] if known else -1
    colors = ["tab:green" if i == best else "tab:blue" for i in range(len(labels))]
    heights = [v if v is not None else 0.0 for v in values]
    axes[0].bar(range(len(labels)), heights, color=colors)
    direction = "lower" if metric in LOWER_IS_BETTER else "higher"
    axes[0].set_title(f"{metric} on the holdout ({direction} is better; best in green)")
    axes[0].set_ylabel(metric)
    for i, v in enumerate(values):
        if v is not None:
            axes[0].annotate(f"{v:.4f}", (i, v), ha="center", va="bottom", fontsize=8)
    if seconds is not None:
        axes[1].bar(range(len(labels)), [s or 0.0 for s in seconds], color="tab:gray")
        axes[1].set_title("training time")
        axes[1].set_ylabel("seconds")
    for ax in axes:
        ax.set_xticks(range(len(labels)), list(labels), rotation=20, ha="right", fontsize=8)
    figure.tight_layout()
    return figure


def write_comparison_plot(runs: Sequence[RunSummary], metric: str, path: str | Path) -> Path:
    """Draw :func:`comparison_figure` of ``runs`` and save it as PNG at ``path``."""
    if metric not in GATE_METRICS:
        raise ValueError(f"metric must be one of {', '.join(GATE_METRICS)}, got {metric!r}")
    labels = [f"{r.run_name or r.run_id[:8]}\n{r.run_id[:8]}" for r in runs]
    figure = comparison_figure(
        labels,
        metric,
        [r.metrics.get(metric) for r in runs],
        [r.metrics.get("training_seconds") for r in runs],
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path
