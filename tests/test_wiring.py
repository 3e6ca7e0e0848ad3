"""Wiring smoke tests: every job and command answers --help; bad flags get a usage message."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from lakehouse.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent
JOBS = sorted((REPO / "jobs").glob("*.py"))


def _load_job(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"job_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.stem)
def test_job_help_exits_zero(job: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = _load_job(job)
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.stem)
def test_job_imports_the_library_never_the_cli(job: Path) -> None:
    tree = ast.parse(job.read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert [name for name in imported if name and name.startswith("lakehouse.cli")] == []


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.stem)
def test_job_docstring_has_spark_submit_line(job: Path) -> None:
    module = _load_job(job)
    assert f'spark-submit --jars "$(lakehouse jars)" jobs/{job.name}' in (module.__doc__ or "")


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.stem)
def test_job_bad_flag_prints_usage(job: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = _load_job(job)
    with pytest.raises(SystemExit) as exc:
        module.main(["--no-such-flag"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "--no-such-flag" in err


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[arg-type]


def test_cli_lists_the_core_commands() -> None:
    assert {"demo", "pipeline", "sql", "tables", "history", "jars"} <= set(_commands())


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: lakehouse {command}" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_history_rejects_a_bad_table_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "customers"]) == 2
    assert "table name must be" in capsys.readouterr().err


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("lakehouse")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lakehouse 0.1.0"


@pytest.mark.jvm  # checks the Java version first
def test_jars_command_prints_existing_jar_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jars"]) == 0
    paths = capsys.readouterr().out.strip().split(",")
    names = [Path(p).name for p in paths]
    assert names[:2] == ["delta-spark_4.2_2.13-4.4.0.jar", "delta-storage-4.4.0.jar"]
    # The persistent catalog's jar follows, built with javac (which set-up needs here).
    assert len(names) == 3 and names[2].startswith("lakehouse-catalog-"), names
    assert all(Path(p).is_file() for p in paths)


def test_compose_file_defines_the_cluster_and_services() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"spark-master", "spark-worker-1", "spark-worker-2", "jupyter"} <= set(services)
    assert {"redis", "feast", "postgres", "mlflow", "seaweedfs"} <= set(services)
    for name in ("spark-master", "spark-worker-1", "spark-worker-2", "jupyter", "feast", "mlflow"):
        service = services[name]
        assert service["image"] == "lakehouse:latest", name
        # The volume keeps landing files and checkpoints; the tables are on the object store.
        assert "lakehouse-data:/data" in service["volumes"], name
        assert service["environment"]["LAKEHOUSE_TABLES_URI"].startswith("s3a://"), name
    worker_cmd = services["spark-worker-2"]["command"]
    assert worker_cmd[-1] == "spark://spark-master:7077"
    assert (REPO / services["spark-master"]["build"]["dockerfile"]).is_file()
    assert {"serving", "prometheus", "grafana"} <= set(services)
    assert set(compose["volumes"]) == {
        "lakehouse-data",
        "seaweedfs-data",
        "redis-data",
        "postgres-data",
        "prometheus-data",
        "grafana-data",
    }
    for name, service in services.items():  # every named volume a service mounts is declared
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], (name, volume)
            else:
                assert (REPO / source).exists(), (name, volume)
