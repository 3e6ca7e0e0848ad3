"""Feast's own CLI, run from the repository without ``LAKEHOUSE_HOME``, uses the default home."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse.features.feast_home import expand_home

REPO = Path(__file__).resolve().parents[1] / "feature_repo"


def test_expand_home_replaces_the_unexpanded_variable_in_place() -> None:
    config = {
        "registry": {"path": "${LAKEHOUSE_HOME}/feast/registry.db"},
        "offline_store": {"spark_conf": {"dir": "$LAKEHOUSE_HOME/warehouse", "n": 4}},
        "list": ["${LAKEHOUSE_HOME}", "$LAKEHOUSE_HOMES"],
    }
    registry = config["registry"]
    assert expand_home(config, "/h") is config
    assert registry == {"path": "/h/feast/registry.db"}
    assert config["offline_store"] == {"spark_conf": {"dir": "/h/warehouse", "n": 4}}
    assert config["list"] == ["/h", "$LAKEHOUSE_HOMES"]


@pytest.mark.slow
def test_feast_apply_without_lakehouse_home_uses_the_default_home(tmp_path: Path) -> None:
    repo = tmp_path / "feature_repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    home = tmp_path / "user"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    env["HOME"] = str(home)
    feast = str(Path(sys.executable).with_name("feast"))
    done = subprocess.run(
        [feast, "apply", "--skip-source-validation"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Deploying infrastructure for customer_profile_fv" in done.stdout
    assert (home / ".lakehouse" / "feast" / "registry.db").is_file()
    assert sorted(p.name for p in repo.iterdir()) == sorted(p.name for p in REPO.iterdir())
