"""The ``lakehouse`` command starts light: building its parser imports no ML library."""

from __future__ import annotations

import json
import subprocess
import sys

import lakehouse.models.config as model_config
import lakehouse.models.gate as gate
import lakehouse.models.training as training

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
