"""The import contracts of ``pyproject.toml`` (``lint-imports``) catch a wrong import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _lint_copy(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` on a copy of the package with ``line`` appended to ``module``."""
    shutil.copytree(REPO / "lakehouse", tmp_path / "lakehouse")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / module).open("a") as f:
        f.write(f"\n{line}\n")
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "line", "message"),
    [
        (
            "lakehouse/platform/settings.py",
            "import lakehouse.cli",
            "lakehouse.platform is not allowed to import lakehouse.cli",
        ),
        (
            "lakehouse/medallion/contracts.py",
            "import lakehouse.scoring",
            "lakehouse.medallion is not allowed to import lakehouse.scoring",
        ),
        (
            "lakehouse/serving/__init__.py",
            "import pyspark.sql",
            "lakehouse.serving is not allowed to import pyspark",
        ),
    ],
)
def test_a_wrong_import_breaks_a_contract(
    tmp_path: Path, module: str, line: str, message: str
) -> None:
    done = _lint_copy(tmp_path, module, line)

    assert done.returncode != 0
    assert message in done.stdout


def test_an_import_cycle_breaks_a_contract(tmp_path: Path) -> None:
    done = _lint_copy(tmp_path, "lakehouse/platform/catalog.py", "import lakehouse.platform.spark")

    assert done.returncode != 0
    assert "No cycles are allowed in lakehouse.platform" in done.stdout
