"""Experiments compared: run cost, ``lakehouse experiment compare``, reproducibility, sweeps."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lakehouse.cli import main as cli_main
from lakehouse.models.config import (
    DEFAULT_SWEEP_GRID,
    GateConfig,
    TrainConfig,
    expand_grid,
    load_sweep_grid,
)
from lakehouse.models.experiments import (
    COST_METRICS,
    REPRODUCES_TAG,
    RunSummary,
    best_index,
    compare_rows,
    last_runs,
    load_runs,
    sweep_children,
)
from lakehouse.models.training import SWEEP_PLOT, TrainResult, sweep, train
from lakehouse.platform.settings import Settings
from lakehouse.workflows.training import artifact_location, sweep_summary_lines
from tests.models.test_training import SMALL, synthetic_frame, synthetic_set

# Logs runs and models to a real MLflow store: outside the unit tier.
pytestmark = pytest.mark.mlflow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: A second configuration, as small as :data:`SMALL`.
OTHER = replace(SMALL, n_estimators=20, max_depth=3)


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The ``lakehouse`` command pointed at the test's settings."""
    monkeypatch.setenv("LAKEHOUSE_HOME", str(settings.home))
    monkeypatch.setenv("LAKEHOUSE_PROFILE", "local")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    return settings


def two_runs(settings: Settings) -> tuple[TrainResult, TrainResult]:
    """Two unregistered runs on the synthetic set: :data:`SMALL`, then :data:`OTHER`."""
    return (
        train(synthetic_set(), SMALL, settings, register=False, run_name="small"),
        train(synthetic_set(), OTHER, settings, register=False, run_name="other"),
    )


def rows_by_label(rows: list[tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    return {row[0]: row[1:] for row in rows}


# --- Cost ------------------------------------------------------------------------------------
def test_training_logs_its_cost_as_metrics(settings: Settings) -> None:
    result = train(synthetic_set(), SMALL, settings, register=False)
    metrics = MlflowClient(tracking_uri=settings.tracking_uri).get_run(result.run_id).data.metrics
    assert set(result.cost) == set(COST_METRICS)
    assert {k: metrics[k] for k in COST_METRICS} == result.cost
    assert 0 < result.cost["fit_seconds"] < result.cost["training_seconds"]
    assert result.cost["peak_memory_mb"] > 50  # a Python process with pandas and sklearn
    assert not set(COST_METRICS) & set(result.metrics)  # cost is not a quality metric


# --- Compare ---------------------------------------------------------------------------------
def test_compare_rows_show_two_runs_side_by_side(settings: Settings) -> None:
    small, other = two_runs(settings)

    rows = compare_rows(load_runs(settings, [small.run_id, other.run_id]))

    labels = [row[0] for row in rows]
    assert labels[:4] == ["run", "name", "started", "parent"]
    by_label = rows_by_label(rows)
    assert by_label["run"] == (small.run_id[:8], other.run_id[:8])
    assert by_label["name"] == ("small", "other")
    assert by_label["parent"] == ("-", "-")
    params = [row for row in rows if row[0].startswith("param ")]
    assert params == [
        ("param model_type", "random_forest", "random_forest"),
        ("param n_estimators", "10", "20"),
        ("param max_depth", "4", "3"),
        ("param learning_rate", "0.1", "0.1"),
        ("param min_samples_leaf", "3", "3"),
        ("param seed", "11", "11"),
        ("param holdout_fraction", "0.2", "0.2"),
        ("param feature_service", "credit_risk_v1", "credit_risk_v1"),
        ("param train_rows", "320", "320"),
        ("param holdout_rows", "80", "80"),
        ("param holdout_start", "2026-02-10 00:00:00", "2026-02-10 00:00:00"),
    ]
    metrics = [row for row in rows if row[0].startswith("metric ")]
    names = ["roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"]
    assert [row[0] for row in metrics] == [f"metric {n}" for n in [*names, "train_roc_auc"]]
    for row, name in zip(metrics, names, strict=False):
        assert row[1:] == (f"{small.metrics[name]:.4f}", f"{other.metrics[name]:.4f}")
    assert by_label["metric roc_auc"][0] == "0.7712"  # SMALL on the synthetic set
    cost = [row for row in rows if row[0].startswith("cost ")]
    assert [row[0] for row in cost] == [f"cost {m}" for m in COST_METRICS]
    for row in cost:
        assert all(re.fullmatch(r"\d+\.\d{1,2}", cell) for cell in row[1:]), row
    assert by_label["data gold.customer_profile_features"] == ("5", "5")
    assert by_label["data gold.labels"] == ("3", "3")
    assert by_label["data_digest"][0] == by_label["data_digest"][1] != "-"
    assert by_label["reproduces"] == ("-", "-")
    assert by_label["reproduced exactly"] == ("never reproduced", "never reproduced")
    assert labels[-2:] == ["reproduces", "reproduced exactly"]


def test_compare_command_prints_a_table_with_a_column_per_run(
    cli_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small, other = two_runs(cli_env)
    plot = tmp_path / "plots" / "compare.png"

    code = cli_main(["experiment", "compare", small.run_id, other.run_id, "--plot", str(plot)])

    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", small.run_id[:8], other.run_id[:8]]
    assert set(lines[1]) == {"-", " "}
    assert ["param", "n_estimators", "10", "20"] in [line.split() for line in lines]
    roc = f"metric roc_auc {small.metrics['roc_auc']:.4f} {other.metrics['roc_auc']:.4f}"
    assert roc.split() in [line.split() for line in lines]
    assert lines[-1] == f"plot: {plot}"
    assert plot.read_bytes().startswith(PNG_MAGIC)


def test_compare_last_n_shows_the_newest_training_runs_oldest_first(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = two_runs(cli_env)
    third = train(synthetic_set(), SMALL, cli_env, register=False, run_name="third")

    assert [r.run_id for r in last_runs(cli_env, 2)] == [second.run_id, third.run_id]
    assert [r.run_id for r in last_runs(cli_env, 10)] == [
        first.run_id,
        second.run_id,
        third.run_id,
    ]
    assert cli_main(["experiment", "compare", "--last", "2"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["run", second.run_id[:8], third.run_id[:8]]


def test_compare_reports_an_unknown_run_in_one_line(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    small = train(synthetic_set(), SMALL, cli_env, register=False)

    assert cli_main(["experiment", "compare", small.run_id, "nosuchrun"]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: no MLflow run 'nosuchrun' in {cli_env.tracking_uri}\n"


def test_compare_without_runs_says_so(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["experiment", "compare"]) == 1
    assert capsys.readouterr().err.startswith("error: no training runs in experiment")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["experiment", "compare", "--last", "0"], "must be a positive integer"),
        (["experiment", "compare", "--last", "x"], "must be a positive integer"),
        (["experiment", "compare", "abc", "--last", "2"], "not allowed with argument"),
        (["experiment", "compare", "--metric", "mse"], "invalid choice: 'mse'"),
        (["experiment", "frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", "--sweep", "--reproduce", "abc"], "not allowed with argument"),
        (["train", "--sweep-grid", "g.yaml", "--reproduce", "abc"], "not allowed with"),
    ],
)
def test_bad_experiment_flags_print_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and message in err


# --- Reproduced exactly ----------------------------------------------------------------------
def test_a_reproduction_with_equal_metrics_and_data_reproduces_exactly(
    settings: Settings,
) -> None:
    original = train(synthetic_set(), SMALL, settings, register=False)
    # What reproduce() does once it has rebuilt the training set at the recorded versions.
    tags = {REPRODUCES_TAG: original.run_id}
    again = train(synthetic_set(), SMALL, settings, register=False, extra_tags=tags)
    moved = synthetic_set(synthetic_frame(seed=8))  # the data moved on: another frame
    other = train(moved, SMALL, settings, register=False)
    differs = train(
        moved, SMALL, settings, register=False, extra_tags={REPRODUCES_TAG: other.run_id}
    )
    differs_data = train(  # same metrics would be a coincidence: data differ is checked below
        synthetic_set(synthetic_frame(seed=9)),
        SMALL,
        settings,
        register=False,
        extra_tags={REPRODUCES_TAG: original.run_id},
    )

    runs = load_runs(settings, [original.run_id, again.run_id, other.run_id])
    by_label = rows_by_label(compare_rows(runs))

    assert by_label["reproduces"] == ("-", original.run_id[:8], "-")
    assert by_label["reproduced exactly"][0] == f"yes (run {again.run_id[:8]})"
    assert by_label["reproduced exactly"][1] == "never reproduced"
    assert [r.run_id for r in runs[0].reproductions] == [again.run_id, differs_data.run_id]
    assert runs[0].reproduced_by() is not None
    # ``other`` was "reproduced" by a run on the same data: equal, hence exact.
    assert by_label["reproduced exactly"][2] == f"yes (run {differs.run_id[:8]})"


def _summary(metrics: dict[str, float], digest: str, run_id: str = "r" * 32) -> RunSummary:
    return RunSummary(
        run_id=run_id,
        run_name="",
        started=datetime(2026, 1, 1, tzinfo=UTC),
        params={"data_digest": digest},
        metrics=metrics,
    )


def test_reproduction_status_needs_equal_metrics_and_equal_data() -> None:
    original = {"roc_auc": 0.8, "training_seconds": 3.0}
    same_cost_aside = _summary({"roc_auc": 0.8, "training_seconds": 9.0}, "d1", "a" * 32)
    other_metrics = _summary({"roc_auc": 0.81, "training_seconds": 3.0}, "d1", "b" * 32)
    other_data = _summary({"roc_auc": 0.8, "training_seconds": 3.0}, "d2", "c" * 32)

    def status(*reproductions: RunSummary) -> str:
        return replace(_summary(original, "d1"), reproductions=reproductions).reproduction_status()

    assert status() == "never reproduced"
    assert status(same_cost_aside) == "yes (run aaaaaaaa)"
    assert status(other_metrics) == "no (run bbbbbbbb: metrics differ)"
    assert status(other_data) == "no (run cccccccc: data differ)"
    assert status(other_metrics, same_cost_aside) == "yes (run aaaaaaaa)"


# --- Sweep -----------------------------------------------------------------------------------
SWEEP_CONFIGS = [
    SMALL,
    OTHER,
    TrainConfig("hist_gradient_boosting", 10, 3, 0.1, 5, 11),
]


def test_sweep_trains_children_of_one_parent_and_registers_only_the_best(
    settings: Settings,
) -> None:
    result = sweep(synthetic_set(), SWEEP_CONFIGS, settings)

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["lakehouse.sweep"] == "true"
    assert parent.data.params["sweep_size"] == "3"
    assert len(result.children) == 3
    children = [client.get_run(c.run_id) for c in result.children]
    assert [c.data.tags["mlflow.parentRunId"] for c in children] == [result.parent_run_id] * 3
    assert [c.info.run_name for c in children] == [
        "1-random_forest",
        "2-random_forest",
        "3-hist_gradient_boosting",
    ]
    assert [c.data.params["n_estimators"] for c in children] == ["10", "20", "10"]
    # The same holdout for every child.
    assert {c.data.params["holdout_start"] for c in children} == {"2026-02-10 00:00:00"}
    assert {c.data.params["holdout_rows"] for c in children} == {"80"}
    for child, run in zip(result.children, children, strict=True):
        assert {k: run.data.metrics[k] for k in child.metrics} == child.metrics
        assert set(COST_METRICS) <= set(run.data.metrics)

    aucs = [c.metrics["roc_auc"] for c in result.children]
    best = result.children[aucs.index(max(aucs))]
    assert result.best.run_id == best.run_id
    assert parent.data.tags["lakehouse.sweep.best_run_id"] == best.run_id
    assert parent.data.metrics["best_roc_auc"] == max(aucs)
    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", best.run_id)]
    assert result.best.version == 1
    assert result.best.decision is not None and result.best.decision.verdict == "promoted"
    assert [c.data.tags.get("lakehouse.gate_verdict") for c in children] == [
        "promoted" if c.info.run_id == best.run_id else None for c in children
    ]
    assert parent.data.tags["lakehouse.gate_verdict"] == "promoted"

    artifacts = [a.path for a in client.list_artifacts(result.parent_run_id, "sweep")]
    assert SWEEP_PLOT in artifacts
    plot = Path(artifact_location(result.plot_uri))
    assert plot.is_file() and plot.read_bytes().startswith(PNG_MAGIC)

    assert [r.run_id for r in sweep_children(settings, result.parent_run_id)] == [
        c.run_id for c in result.children
    ]
    # A sweep's parent fitted nothing: --last skips it.
    assert result.parent_run_id not in {r.run_id for r in last_runs(settings, 10)}
    lines = sweep_summary_lines(result, settings)
    assert lines[0] == f"sweep run {result.parent_run_id}: 3 runs"
    assert sum(line.startswith("* ") for line in lines) == 1
    assert (
        f"best: run {best.run_id} (roc_auc {max(aucs):.4f}): credit_risk_model version 1" in lines
    )
    assert f"plot: {plot}" in lines
    assert lines[-1].startswith("gate: promoted (")


def test_sweep_picks_the_lowest_of_a_lower_is_better_metric(settings: Settings) -> None:
    gate = GateConfig(metric="log_loss", min_value=5.0)
    result = sweep(synthetic_set(), SWEEP_CONFIGS[:2], settings, gate=gate, register=False)
    losses = [c.metrics["log_loss"] for c in result.children]
    assert result.best.run_id == result.children[losses.index(min(losses))].run_id
    assert result.best.version is None
    assert MlflowClient(tracking_uri=settings.tracking_uri).search_registered_models() == []


def test_sweep_children_of_an_unknown_or_plain_run_are_an_error(settings: Settings) -> None:
    plain = train(synthetic_set(), SMALL, settings, register=False)
    with pytest.raises(ValueError, match="no MLflow run 'nope'"):
        sweep_children(settings, "nope")
    with pytest.raises(ValueError, match="has no child runs"):
        sweep_children(settings, plain.run_id)


def test_sweep_refuses_configs_with_different_holdouts(settings: Settings) -> None:
    configs = [SMALL, replace(SMALL, holdout_fraction=0.3)]
    with pytest.raises(ValueError, match="share one holdout"):
        sweep(synthetic_set(), configs, settings)
    with pytest.raises(ValueError, match="at least one configuration"):
        sweep(synthetic_set(), [], settings)


def test_best_index_follows_the_metric_direction() -> None:
    assert best_index([0.7, 0.9, 0.9], "roc_auc") == 1  # the first of equals
    assert best_index([0.5, 0.3, 0.4], "log_loss") == 1
    assert best_index([0.2, 0.1], "brier") == 1


# --- Sweep grids -----------------------------------------------------------------------------
def test_expand_grid_takes_every_combination_over_the_base() -> None:
    base = TrainConfig(n_estimators=7, seed=3)
    configs = expand_grid(
        [
            {"model_type": "random_forest", "max_depth": [4, None]},
            {"model_type": "hist_gradient_boosting", "learning_rate": [0.05, 1]},
            {"model_type": "random_forest", "max_depth": 4},  # a duplicate, dropped
        ],
        base,
    )
    assert [(c.model_type, c.max_depth, c.learning_rate) for c in configs] == [
        ("random_forest", 4, 0.1),
        ("random_forest", None, 0.1),
        ("hist_gradient_boosting", 8, 0.05),
        ("hist_gradient_boosting", 8, 1.0),
    ]
    assert {(c.n_estimators, c.seed) for c in configs} == {(7, 3)}
    assert len(expand_grid(DEFAULT_SWEEP_GRID)) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {model_type: svm}", "model_type must be one of"),
        ("- {n_trees: [1, 2]}", r"unknown parameter\(s\) n_trees"),
        ("- {holdout_fraction: [0.1, 0.2]}", "the holdout is --holdout-fraction"),
        ("- {n_estimators: ten}", "bad n_estimators value 'ten'"),
        ("- {max_depth: []}", "max_depth has no values"),
        ("- {max_depth: 0}", "max_depth must be >= 1"),
        ("[]", "must be a mapping, or a list of mappings"),
        ("- [1, 2]", "must be a mapping, or a list of mappings"),
        ("{model_type: [", "is not valid YAML"),
    ],
)
def test_bad_sweep_grids_name_the_file_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as exc:
        load_sweep_grid(path)
    assert str(path) in str(exc.value)


def test_a_missing_sweep_grid_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"sweep grid .*nope\.yaml not found"):
        load_sweep_grid(tmp_path / "nope.yaml")
