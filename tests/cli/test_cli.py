"""The ``lakehouse`` command starts light: building its parser imports no ML library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import lakehouse.models.config as model_config
import lakehouse.models.gate as gate
import lakehouse.models.training as training
from lakehouse.cli import main
from lakehouse.platform.home import EXIT_MOVED, check_home

#: Libraries that take seconds to import and that no command needs to parse its flags.
HEAVY_MODULES = ("mlflow", "sklearn", "scipy")


def _modules_imported_by(code: str) -> list[str]:
    """Which of :data:`HEAVY_MODULES` a fresh interpreter has imported after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    imported: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return imported


def test_building_the_parser_imports_no_ml_library() -> None:
    assert _modules_imported_by("import lakehouse.cli as c; c.build_parser()") == []


def test_training_and_the_gate_use_the_light_configuration() -> None:
    assert training.TrainConfig is model_config.TrainConfig
    assert training.MODEL_TYPES is model_config.MODEL_TYPES
    assert gate.GateConfig is model_config.GateConfig


def test_pipeline_run_help_documents_overlapping_runs_and_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "run", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "exits at once with status 75" in text and "--wait SECONDS" in text
    assert "$LAKEHOUSE_HOME/logs/" in text


def test_a_negative_wait_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "run", "--wait", "-1"])
    assert exc.value.code == 2
    assert "must be 0 or more seconds" in capsys.readouterr().err


def test_a_moved_state_folder_stops_a_command_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before Spark starts: no JVM here."""
    home = tmp_path / "home"
    check_home(home)
    (home / "checkpoints" / "bronze" / "customers").mkdir(parents=True)
    moved = tmp_path / "moved"
    home.rename(moved)
    monkeypatch.setenv("LAKEHOUSE_HOME", str(moved))
    assert main(["tables"]) == EXIT_MOVED == 78
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: lakehouse tables failed: the state folder {moved} was created")
    assert "checkpoints (and the MLflow store) hold absolute paths" in line
    (log_file,) = (moved / "logs").glob("tables-*.log")
    assert line.endswith(f"(details: {log_file})")
    assert "Traceback (most recent call last)" in log_file.read_text()
