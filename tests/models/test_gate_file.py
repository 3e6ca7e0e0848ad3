"""A gate a team configures: ``ml_gate.yaml``, its flags, and the exit status of a rejection."""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import lakehouse.cli.commands.train as train_command
from lakehouse.cli import main as cli_main
from lakehouse.models.config import GATE_FILE, GateConfig, default_gate_file, load_gate_config
from lakehouse.models.gate import GateDecision
from lakehouse.platform.session import JobContext
from lakehouse.platform.settings import Settings
from lakehouse.workflows.training import (
    EXIT_STATUS_HELP,
    GATE_REJECTED_EXIT,
    add_train_arguments,
    gate_failure_line,
    gate_from_args,
)
from tests.models.test_training import synthetic_set

REPO = Path(__file__).resolve().parents[2]
#: The flags of ``tests.models.test_training.SMALL``.
SMALL_FLAGS = ["--n-estimators", "10", "--max-depth", "4", "--min-samples-leaf", "3"]
SMALL_FLAGS += ["--seed", "11"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(argv)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- Loading the file ------------------------------------------------------------------------
def test_the_repository_gate_file_holds_the_built_in_defaults() -> None:
    assert load_gate_config(REPO / GATE_FILE) == GateConfig()


def test_the_gate_leaves_the_canary_section_to_the_canary(tmp_path: Path) -> None:
    path = write(tmp_path / "gate.yaml", "tolerance: 0.03\ncanary:\n  max_psi: 0.1\n")
    assert load_gate_config(path) == GateConfig(tolerance=0.03)


def test_load_gate_config_reads_every_field(tmp_path: Path) -> None:
    path = write(
        tmp_path / "gate.yaml",
        "metric: log_loss\nmin_value: 0.55\ntolerance: 0.002\nauto_promote: false\n",
    )
    assert load_gate_config(path) == GateConfig("log_loss", 0.55, 0.002, False)


def test_fields_left_out_keep_their_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "gate.yaml", "min_value: 1  # an integer is a number\n")
    gate = load_gate_config(path)
    assert gate == GateConfig(min_value=1.0)
    assert isinstance(gate.min_value, float)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metric: mse\n", "gate metric must be one of roc_auc, pr_auc"),
        ("min_value: high\n", "min_value must be a number, got 'high'"),
        ("min_value: .nan\n", "min_value must be a finite number"),
        ("tolerance: -0.1\n", "gate tolerance must be >= 0, got -0.1"),
        ("tolerance: true\n", "tolerance must be a number, got True"),
        ("auto_promote: 1\n", "auto_promote must be true or false, got 1"),
        ("metric: 3\n", "metric must be a string, got 3"),
        ("floor: 0.7\n", r"unknown key\(s\) floor \(expected metric, min_value, tolerance"),
        ("", "must be a mapping of metric, min_value, tolerance, auto_promote, got None"),
        ("- roc_auc\n", "must be a mapping of metric"),
        ("metric: [roc_auc\n", "is not valid YAML"),
    ],
)
def test_bad_gate_files_name_the_file_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path / "gate.yaml", text)
    with pytest.raises(ValueError, match=message) as exc:
        load_gate_config(path)
    assert str(exc.value).startswith(f"gate file {path}")
    assert "\n" not in str(exc.value) or "YAML" in str(exc.value)


def test_a_missing_gate_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"gate file {tmp_path}/nope.yaml not found"):
        load_gate_config(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match=f"gate file {tmp_path} cannot be read: Is a directory"):
        load_gate_config(tmp_path)


# --- The file and the flags ------------------------------------------------------------------
def test_without_a_gate_file_the_built_in_defaults_apply(tmp_path: Path) -> None:
    assert default_gate_file(tmp_path) is None
    assert gate_from_args(parse(), cwd=tmp_path) == GateConfig()


def test_the_gate_file_of_the_working_directory_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / GATE_FILE, "min_value: 0.8\nauto_promote: false\n")
    assert default_gate_file(tmp_path) == path
    assert gate_from_args(parse(), cwd=tmp_path) == GateConfig(min_value=0.8, auto_promote=False)


def test_explicit_flags_override_the_gate_file(tmp_path: Path) -> None:
    write(tmp_path / GATE_FILE, "metric: f1\nmin_value: 0.8\ntolerance: 0.05\n")
    other = write(tmp_path / "team.yaml", "metric: pr_auc\nauto_promote: false\n")

    assert gate_from_args(parse("--gate-floor", "0.6"), cwd=tmp_path) == GateConfig(
        "f1", 0.6, 0.05, True
    )
    assert gate_from_args(
        parse("--gate-metric", "brier", "--gate-min-value", "0.3", "--gate-tolerance", "0"),
        cwd=tmp_path,
    ) == GateConfig("brier", 0.3, 0.0, True)
    assert gate_from_args(parse("--no-promote"), cwd=tmp_path).auto_promote is False
    # --gate-file wins over ./ml_gate.yaml; a flag wins over --gate-file.
    assert gate_from_args(parse("--gate-file", str(other)), cwd=tmp_path) == GateConfig(
        "pr_auc", 0.70, 0.01, False
    )
    assert gate_from_args(parse("--gate-file", str(other), "--promote"), cwd=tmp_path) == (
        GateConfig("pr_auc", 0.70, 0.01, True)
    )


def test_help_documents_the_exit_status_and_the_gate_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    out = capsys.readouterr().out
    assert EXIT_STATUS_HELP in out
    assert f"  {GATE_REJECTED_EXIT}  the gate rejected the candidate" in out
    assert "--gate-file PATH" in out and "--sweep-grid FILE" in out


# --- The gate's verdict as an exit status ----------------------------------------------------
def decision(**changes: Any) -> GateDecision:
    values: dict[str, Any] = {
        "model_name": "credit_risk_model",
        "candidate_version": 4,
        "candidate_run_id": "abc",
        "champion_version": 3,
        "metric": "roc_auc",
        "candidate_value": 0.7612,
        "champion_value": 0.7801,
        "floor": 0.7,
        "tolerance": 0.01,
        "passed": False,
        "verdict": "rejected",
        "reason": "",
        "holdout_rows": 80,
        "decided_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    return GateDecision(**{**values, **changes})


def test_gate_failure_line_names_metric_value_threshold_and_champion() -> None:
    assert gate_failure_line(decision()) == (
        "gate rejected credit_risk_model version 4: roc_auc 0.7612 is below the threshold "
        "0.7701 (floor 0.7; champion version 3: 0.7801, tolerance 0.01)"
    )
    assert gate_failure_line(
        decision(candidate_value=0.65, champion_version=None, champion_value=None)
    ) == (
        "gate rejected credit_risk_model version 4: roc_auc 0.6500 is below the threshold "
        "0.7000 (floor 0.7; no champion)"
    )
    lower = decision(metric="log_loss", candidate_value=0.52, champion_value=0.49, floor=0.6)
    assert gate_failure_line(lower) == (
        "gate rejected credit_risk_model version 4: log_loss 0.5200 is above the threshold "
        "0.5000 (ceiling 0.6; champion version 3: 0.4900, tolerance 0.01)"
    )


@pytest.fixture
def no_spark(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[list[str]]:
    """``lakehouse train`` and ``jobs/train.py`` on the synthetic set, without Spark.

    Yields the app names of the (fake) sessions started.
    """
    import lakehouse.features.store as store

    started: list[str] = []

    @contextmanager
    def fake_session(app_name: str, settings_: Settings | None = None) -> Iterator[JobContext]:
        started.append(app_name)
        yield JobContext(settings, None, None)  # type: ignore[arg-type]

    monkeypatch.setattr(train_command, "job_session", fake_session)
    monkeypatch.setattr(store, "build_training_set", lambda *args, **kwargs: synthetic_set())
    monkeypatch.chdir(tmp_path)  # no ./ml_gate.yaml unless a test writes one
    started_ref = started
    yield started_ref


def load_job() -> ModuleType:
    spec = importlib.util.spec_from_file_location("job_train_gate", REPO / "jobs" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.mlflow
def test_a_rejected_candidate_makes_train_exit_3_with_one_line(
    no_spark: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["train", *SMALL_FLAGS]) == 0
    first = capsys.readouterr()
    assert "gate: promoted (" in first.out and "gate rejected" not in first.err

    code = cli_main(["train", *SMALL_FLAGS, "--gate-floor", "0.99"])

    captured = capsys.readouterr()
    assert code == GATE_REJECTED_EXIT == 3
    assert captured.out.splitlines()[0].endswith("credit_risk_model version 2")
    assert "gate: rejected (roc_auc 0.7712 is below the floor 0.99)" in captured.out
    # MLflow says on stderr that it registered the version; the gate's line comes last.
    assert captured.err.splitlines()[-1] == (
        "gate rejected credit_risk_model version 2: roc_auc 0.7712 is below the threshold "
        "0.9900 (floor 0.99; champion version 1: 0.7712, tolerance 0.01)"
    )
    assert no_spark == ["lakehouse-train", "lakehouse-train"]


@pytest.mark.mlflow
def test_the_training_job_exits_3_too_and_reads_the_gate_file(
    no_spark: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    job = load_job()
    monkeypatch.setattr(job, "job_session", train_command.job_session)  # the fake one
    write(tmp_path / GATE_FILE, "min_value: 0.95\n")

    assert job.main(SMALL_FLAGS) == GATE_REJECTED_EXIT

    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "gate rejected credit_risk_model version 1: roc_auc 0.7712 is below the threshold "
        "0.9500 (floor 0.95; no champion)"
    )
    # An explicit flag overrides the file: the same candidate passes.
    assert job.main([*SMALL_FLAGS, "--gate-floor", "0.7"]) == 0


def test_a_bad_gate_file_fails_before_spark_starts(
    no_spark: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path / "bad.yaml", "tolerance: lots\n")

    assert cli_main(["train", "--gate-file", str(bad)]) == 1
    assert capsys.readouterr().err == (
        f"error: gate file {bad}: tolerance must be a number, got 'lots'\n"
    )
    assert cli_main(["train", "--gate-file", str(tmp_path / "none.yaml")]) == 1
    assert capsys.readouterr().err == f"error: gate file {tmp_path}/none.yaml not found\n"
    write(tmp_path / GATE_FILE, "metric: mse\n")
    assert cli_main(["train"]) == 1
    assert "error: gate file " in capsys.readouterr().err
    assert no_spark == []


@pytest.mark.mlflow
def test_train_sweep_registers_the_best_and_prints_the_plot(
    no_spark: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = write(
        tmp_path / "grid.yaml",
        "- {model_type: random_forest, n_estimators: [10, 20], max_depth: 4}\n",
    )

    code = cli_main(["train", *SMALL_FLAGS, "--sweep-grid", str(grid)])

    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].startswith("sweep run ") and out[0].endswith(": 2 runs")
    assert sum(line.startswith("* ") for line in out) == 1
    (plot,) = [line.removeprefix("plot: ") for line in out if line.startswith("plot: ")]
    assert Path(plot).read_bytes().startswith(b"\x89PNG")
    assert any(line.endswith("credit_risk_model version 1") for line in out)

    bad = write(tmp_path / "bad.yaml", "- {max_depth: deep}\n")
    assert cli_main(["train", "--sweep-grid", str(bad)]) == 1
    assert capsys.readouterr().err == f"error: sweep grid {bad}: bad max_depth value 'deep'\n"
    # A sweep whose best child fails the gate exits 3 as well.
    assert cli_main(["train", *SMALL_FLAGS, "--sweep", "--gate-floor", "0.99"]) == 3
