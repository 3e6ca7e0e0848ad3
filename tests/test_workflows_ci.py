"""The ML CI workflow (``.github/workflows/ml-ci.yml``): its structure, and the workflow itself run.

The fast tests parse the workflow, check its jobs, steps and caches, run ``actionlint`` when it
is installed (``.ci/run`` installs it, so CI never skips that) and check the gate script's
parser against what ``lakehouse train`` prints.

The slow test runs the workflow: every ``run:`` step of every job, in order (jobs in ``needs``
order), in a clean clone of the repository at HEAD, each with ``bash -e -o pipefail`` as GitHub
runs it, and asserts that each exits 0. The ``uses:`` steps are not run; their effect is given
by the machine: checkout is the clone, setup-python is this Python 3.11 on the PATH, setup-java
is Java 17 (``JAVA_HOME``), and the caches restore nothing (a cold run). The steps get the
workflow's ``env:`` (top level, job and step) with ``${{ ... }}`` expressions substituted, and
GitHub's step files (``$GITHUB_OUTPUT``, ``$GITHUB_ENV``, ``$GITHUB_PATH``,
``$GITHUB_STEP_SUMMARY``) work as on a runner. The workflow and its scripts (``.github/``) are
copied from the working tree into the clone, so an uncommitted change to them is what runs.
Each step's output is kept next to its script in the test's ``runner-temp`` folder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
WORKFLOW = WORKFLOWS / "ml-ci.yml"
CD_WORKFLOW = WORKFLOWS / "ml-cd.yml"
SCRIPT = REPO_ROOT / ".github" / "scripts" / "ml_ci.py"

#: The actionlint ``.ci/run`` installs, under ``$XDG_CACHE_HOME/actionlint/<version>/bin``.
ACTIONLINT_CACHE = "actionlint"
#: The longest one step of the workflow may take in the slow test (a cold ``make setup``).
STEP_TIMEOUT_S = 1200


def load_workflow(path: Path = WORKFLOW) -> dict[str, Any]:
    """The workflow as a dict; PyYAML reads the key ``on`` as ``True``, put back as ``"on"``."""
    data = yaml.safe_load(path.read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps_of(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    """The steps of ``job`` that use ``action`` (without its ``@ref``)."""
    return [s for s in steps_of(job) if str(s.get("uses", "")).split("@")[0] == action]


def job_order(jobs: dict[str, Any]) -> list[str]:
    """The job ids in an order that runs every job after the jobs it ``needs``."""
    done: list[str] = []
    pending = list(jobs)
    while pending:
        ready = [j for j in pending if all(n in done for n in _as_list(jobs[j].get("needs", [])))]
        assert ready, f"jobs with unmet or cyclic needs: {pending}"
        done.append(ready[0])
        pending.remove(ready[0])
    return done


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def all_run_text(workflow: dict[str, Any]) -> str:
    return "\n".join(
        str(step.get("run", "")) for job in workflow["jobs"].values() for step in steps_of(job)
    )


def find_actionlint() -> str | None:
    """actionlint on the PATH, or the one ``.ci/run`` built into the cache folder."""
    found = shutil.which("actionlint")
    if found:
        return found
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / ACTIONLINT_CACHE
    built = sorted(cache.glob("*/bin/actionlint"))
    return str(built[-1]) if built else None


def load_script() -> ModuleType:
    """``.github/scripts/ml_ci.py`` as a module."""
    spec = importlib.util.spec_from_file_location("ml_ci_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


# --- The structure (fast, no JVM) ------------------------------------------------------------


def test_workflow_triggers_permissions_and_env() -> None:
    workflow = load_workflow()
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["permissions"] == {"contents": "read"}
    assert "${{ github.workspace }}" in workflow["env"]["LAKEHOUSE_HOME"]


def test_jobs_run_checks_then_the_lifecycle() -> None:
    jobs = load_workflow()["jobs"]
    assert set(jobs) == {"checks", "lifecycle"}
    assert job_order(jobs) == ["checks", "lifecycle"]
    assert jobs["lifecycle"]["needs"] == "checks"
    for job in jobs.values():
        assert str(job["runs-on"]).startswith("ubuntu-")
        assert job["timeout-minutes"] <= 30
        assert uses(job, "actions/checkout") == [steps_of(job)[0]]
        (python,) = uses(job, "actions/setup-python")
        assert python["uses"] == "actions/setup-python@v5"
        assert str(python["with"]["python-version"]) == "3.11"
        for step in steps_of(job):
            assert ("run" in step) != ("uses" in step), step
            assert "name" in step or "uses" in step, step
    (java,) = uses(jobs["lifecycle"], "actions/setup-java")
    assert java["uses"] == "actions/setup-java@v4"
    assert java["with"] == {"distribution": "temurin", "java-version": "17"}
    assert not uses(jobs["checks"], "actions/setup-java")  # the unit tier starts no JVM


def test_the_steps_cover_lint_tests_pipeline_features_training_gate_registration() -> None:
    workflow = load_workflow()
    checks = "\n".join(str(s.get("run", "")) for s in steps_of(workflow["jobs"]["checks"]))
    for command in ("make lint", "make typecheck", "make test-unit"):
        assert command in checks
    lifecycle = [str(s.get("run", "")) for s in steps_of(workflow["jobs"]["lifecycle"])]
    expected = [
        "make setup",
        "lakehouse datagen",
        "lakehouse pipeline run",
        "lakehouse features apply",
        "lakehouse features materialize",
        "lakehouse train",
        "ml_ci.py gate",
        "ml_ci.py registration",
    ]
    positions = [next(i for i, run in enumerate(lifecycle) if c in run) for c in expected]
    assert positions == sorted(positions), "the lifecycle steps are out of order"
    assert "--seed" in next(run for run in lifecycle if "lakehouse datagen" in run)
    for script in re.findall(r"\.github/scripts/\S+", all_run_text(workflow)):
        assert (REPO_ROOT / script.strip("\"'")).is_file(), script


def test_the_venv_and_the_delta_jars_are_cached() -> None:
    jobs = load_workflow()["jobs"]
    for job in jobs.values():
        caches = {str(s["with"]["path"]): s for s in uses(job, "actions/cache")}
        venv = caches[".venv"]
        assert venv["uses"] == "actions/cache@v4"
        assert "hashFiles('pyproject.toml')" in venv["with"]["key"]
        assert "steps.python.outputs.python-version" in venv["with"]["key"]
        trust = [
            s
            for s in steps_of(job)
            if s.get("if") == f"steps.{venv['id']}.outputs.cache-hit == 'true'"
        ]
        assert trust and "touch .venv/.installed" in trust[0]["run"]
    lifecycle = jobs["lifecycle"]
    (m2,) = [s for s in uses(lifecycle, "actions/cache") if "~/.m2" in str(s["with"]["path"])]
    assert "steps.delta.outputs.version" in m2["with"]["key"]
    (delta,) = [s for s in steps_of(lifecycle) if s.get("id") == "delta"]
    assert "lakehouse/platform/jars.py" in delta["run"]
    names = [s.get("id") for s in steps_of(lifecycle)]
    assert names.index("delta") < steps_of(lifecycle).index(m2)


def test_actionlint_passes() -> None:
    actionlint = find_actionlint()
    if actionlint is None:
        pytest.skip("actionlint is not installed (.ci/run installs it)")
    files = sorted(str(p) for p in WORKFLOWS.glob("*.y*ml"))
    done = subprocess.run(
        [actionlint, "-no-color", *files], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_gate_script_reads_what_lakehouse_train_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakehouse.workflows.training import summary_lines

    script = load_script()
    run_id = "0123456789abcdef0123456789abcdef"

    def printed(verdict: str) -> str:
        result = SimpleNamespace(
            run_id=run_id,
            version=3,
            train_rows=120,
            holdout_rows=30,
            table_versions={"gold.labels": 2},
            metrics={"roc_auc": 0.8123, "f1": 0.25, "log_loss": 0.4},
            decision=SimpleNamespace(verdict=verdict, reason="roc_auc 0.8123 >= floor 0.7"),
        )
        settings = SimpleNamespace(model_name="credit_risk_model")
        return "noise before\n" + "\n".join(summary_lines(result, settings)) + "\n"

    summary = script.parse_train_output(printed("promoted"))
    assert (summary.run_id, summary.model, summary.version) == (run_id, "credit_risk_model", 3)
    assert summary.verdict == "promoted"
    assert summary.metrics == {"roc_auc": 0.8123, "f1": 0.25, "log_loss": 0.4}
    assert summary.rows == (120, 30)
    assert summary.inputs == {"gold.labels": 2}

    output, step_summary = tmp_path / "output", tmp_path / "summary"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    monkeypatch.delenv("ML_CI_ACCEPT", raising=False)
    train_txt = tmp_path / "train.txt"
    train_txt.write_text(printed("promoted"))
    assert script.main(["gate", str(train_txt)]) == 0
    assert f"run-id={run_id}\nversion=3\nverdict=promoted\n" in output.read_text()
    assert run_id in step_summary.read_text()

    train_txt.write_text(printed("rejected"))
    assert script.main(["gate", str(train_txt)]) == 1
    monkeypatch.setenv("ML_CI_ACCEPT", "promoted, rejected")
    assert script.main(["gate", str(train_txt)]) == 0
    assert script.main(["gate", str(train_txt), "--train-status", "3"]) == 0
    assert script.main(["gate", str(train_txt), "--train-status", "1"]) == 1
    train_txt.write_text("error: no labels\n")
    assert script.main(["gate", str(train_txt)]) == 1


def test_cd_runs_after_a_green_ci_on_main_and_deploys_through_a_canary() -> None:
    workflow = load_workflow(CD_WORKFLOW)
    run = workflow["on"]["workflow_run"]
    assert run["workflows"] == ["ml-ci"] and run["types"] == ["completed"]
    assert run["branches"] == ["main"] and "workflow_dispatch" in workflow["on"]
    assert workflow["permissions"] == {"contents": "read", "actions": "read"}
    (job,) = workflow["jobs"].values()
    assert "workflow_run.conclusion == 'success'" in job["if"]
    (download,) = uses(job, "actions/download-artifact")
    ci_uploads = [
        s for j in load_workflow()["jobs"].values() for s in uses(j, "actions/upload-artifact")
    ]
    assert download["with"]["name"] in {s["with"]["name"] for s in ci_uploads}
    assert "github.event.workflow_run.id" in download["with"]["run-id"]
    runs = [str(s.get("run", "")) for s in steps_of(job)]
    expected = [
        "make setup",
        "ml_cd.py champion",
        "--no-promote",
        "lakehouse serve",
        "lakehouse endpoint canary",
        "ml_cd.py replay",
        "lakehouse endpoint analyze",
        "ml_cd.py verify",
        "ml_cd.py stop",
    ]
    positions = [next(i for i, text in enumerate(runs) if c in text) for c in expected]
    assert positions == sorted(positions), "the CD steps are out of order"
    (stop,) = [s for s in steps_of(job) if "ml_cd.py stop" in str(s.get("run", ""))]
    assert stop["if"] == "always()"
    for script in re.findall(r"\.github/scripts/\S+", all_run_text(workflow)):
        assert (REPO_ROOT / script.strip("\"'")).is_file(), script


# --- The workflow run (slow) -------------------------------------------------------------------

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


class Runner:
    """Runs the ``run:`` steps of a workflow's jobs in one workspace, as a GitHub runner would."""

    def __init__(
        self,
        workflow: dict[str, Any],
        workspace: Path,
        base_env: dict[str, str],
        event: str = "push",
    ):
        self.workflow = workflow
        self.event = event
        self.workspace = workspace
        self.base_env = base_env
        self.temp = workspace.parent / "runner-temp"
        self.temp.mkdir(exist_ok=True)
        self.log: list[str] = []
        self.summaries: list[str] = []
        self.outputs: dict[str, dict[str, dict[str, str]]] = {}

    def value(self, expr: str, ctx: dict[str, Any]) -> str:
        """The value of a context reference (``github.workspace``, ``steps.x.outputs.y``)."""
        parts = expr.split(".")
        if expr == "github.workspace":
            return str(self.workspace)
        if expr == "runner.os":
            return "Linux"
        if expr == "runner.temp":
            return str(self.temp)
        if expr == "github.event_name":
            return self.event
        if parts[0] == "env" and len(parts) == 2:
            return ctx["env"].get(parts[1], "")
        if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
            return ctx["outputs"].get(parts[1], {}).get(parts[3], "")
        raise AssertionError(f"the test does not evaluate the expression ${{{{ {expr} }}}}")

    def substitute(self, text: str, ctx: dict[str, Any]) -> str:
        return EXPRESSION.sub(lambda m: self.value(m.group(1), ctx), text)

    def condition(self, expr: str, ctx: dict[str, Any]) -> bool:
        """A step's ``if:``: status functions, or one comparison of a reference with a string."""
        expr = EXPRESSION.sub(lambda m: m.group(1), str(expr)).strip()
        if expr in ("always()", "success()"):
            return True
        if expr in ("failure()", "cancelled()"):
            return False
        match = re.fullmatch(r"([\w.\-]+)\s*(==|!=)\s*'([^']*)'", expr)
        assert match, f"the test does not evaluate the condition {expr!r}"
        equal = self.value(match.group(1), ctx) == match.group(3)
        return equal if match.group(2) == "==" else not equal

    def env_block(self, block: dict[str, Any] | None, ctx: dict[str, Any]) -> dict[str, str]:
        return {k: self.substitute(str(v), ctx) for k, v in (block or {}).items()}

    def run_job(self, job_id: str) -> list[tuple[str, float]]:
        """Run the ``run:`` steps of one job; fail on the first that exits non-zero."""
        job = self.workflow["jobs"][job_id]
        ctx: dict[str, Any] = {"env": dict(self.base_env), "outputs": {}}
        self.outputs[job_id] = ctx["outputs"]
        ctx["env"].update(self.env_block(self.workflow.get("env"), ctx))
        ctx["env"].update(self.env_block(job.get("env"), ctx))
        path_prefix: list[str] = []
        timings = []
        for index, step in enumerate(steps_of(job)):
            name = step.get("name") or step.get("uses") or f"step {index}"
            if "if" in step and not self.condition(step["if"], ctx):
                self.log.append(f"[{job_id}] skipped (if: {step['if']}): {name}")
                continue
            if "uses" in step:
                self.log.append(f"[{job_id}] given by the machine: {step['uses']}")
                continue
            files = {
                key: self.temp / f"{job_id}-{index}-{key.lower()}"
                for key in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")
            }
            for file in files.values():
                file.write_text("")
            env = {**ctx["env"], **self.env_block(step.get("env"), ctx)}
            env.update({key: str(file) for key, file in files.items()})
            env["PATH"] = os.pathsep.join([*path_prefix, env["PATH"]])
            script = self.temp / f"{job_id}-{index}.sh"
            script.write_text(self.substitute(str(step["run"]), ctx))
            cwd = self.workspace / step.get("working-directory", ".")
            started = time.monotonic()
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", str(script)],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=STEP_TIMEOUT_S,
            )
            seconds = time.monotonic() - started
            script.with_suffix(".log").write_text(done.stdout)
            timings.append((f"{job_id}: {name}", seconds))
            self.log.append(f"[{job_id}] {name}: exit {done.returncode} ({seconds:.0f} s)")
            assert done.returncode == 0, (
                f"step {name!r} of job {job_id} exited {done.returncode} (log: "
                f"{script.with_suffix('.log')}); its output ends:\n"
                + "\n".join(done.stdout.splitlines()[-80:])
            )
            if "id" in step:
                ctx["outputs"][step["id"]] = parse_step_file(files["GITHUB_OUTPUT"])
            ctx["env"].update(parse_step_file(files["GITHUB_ENV"]))
            added = [p for p in files["GITHUB_PATH"].read_text().splitlines() if p.strip()]
            path_prefix = [*reversed(added), *path_prefix]
            self.summaries.append(files["GITHUB_STEP_SUMMARY"].read_text())
        return timings


def parse_step_file(path: Path) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIM`` blocks, as GitHub reads GITHUB_OUTPUT/ENV."""
    values: dict[str, str] = {}
    lines: Iterator[str] = iter(path.read_text().splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            block = []
            for body in lines:
                if body == delimiter:
                    break
                block.append(body)
            values[key] = "\n".join(block)
        elif "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def runner_env(tools: Path) -> dict[str, str]:
    """A clean environment like a runner's after setup-python and setup-java.

    Nothing of this process's own environment leaks in (its virtual env, ``PYSPARK_PYTHON``
    from the Makefile, the test JVM options) except the tools' locations, ``HOME`` and caches.
    """
    tools.mkdir(parents=True, exist_ok=True)
    python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert python.is_file(), f"no base interpreter at {python}"
    for name in ("python", "python3", python.name):
        (tools / name).symlink_to(python)
    java = shutil.which("java")
    java_home = os.environ.get("JAVA_HOME") or (
        str(Path(java).resolve().parent.parent) if java else ""
    )
    assert java_home, "no Java: the workflow's setup-java gives Java 17"
    venv_bin = str(Path(sys.prefix) / "bin")
    path = [
        p
        for p in os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep)
        if p and p != venv_bin and "lakehouse-no-jvm-" not in p
    ]
    env = {
        "PATH": os.pathsep.join([str(tools), f"{java_home}/bin", *path]),
        "HOME": str(Path.home()),
        "JAVA_HOME": java_home,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "RUNNER_OS": "Linux",
    }
    for name in ("XDG_CACHE_HOME", "M2_REPO", "PIP_CACHE_DIR", "TMPDIR", "PYENV_ROOT"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def clone_head(target: Path) -> Path:
    """A clean clone of this repository at HEAD, with the working tree's ``.github`` copied in."""
    subprocess.run(
        ["git", "clone", "--quiet", str(REPO_ROOT), str(target)],
        check=True,
        capture_output=True,
    )
    shutil.copytree(REPO_ROOT / ".github", target / ".github", dirs_exist_ok=True)
    return target


@pytest.mark.slow
def test_ml_ci_workflow_runs_in_a_clean_clone(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    workspace = clone_head(tmp_path / "workspace")
    workflow = load_workflow(workspace / ".github" / "workflows" / "ml-ci.yml")
    runner = Runner(workflow, workspace, runner_env(tmp_path / "toolcache"))
    runner.base_env["GITHUB_WORKSPACE"] = str(workspace)
    runner.base_env["RUNNER_TEMP"] = str(runner.temp)
    # ml-cd.yml then runs on the state ml-ci left in the workspace (on GitHub: its artifact).
    cd_workflow = load_workflow(workspace / ".github" / "workflows" / "ml-cd.yml")
    cd_runner = Runner(cd_workflow, workspace, runner.base_env, event="workflow_run")
    cd_runner.temp = runner.temp
    timings = []
    started = time.monotonic()
    try:
        for job_id in job_order(workflow["jobs"]):
            timings += runner.run_job(job_id)
        for job_id in job_order(cd_workflow["jobs"]):
            timings += cd_runner.run_job(job_id)
    finally:  # the clone's virtual env is 1.8 GB; the steps' logs stay in runner-temp
        stop_server(workspace / ".lakehouse" / "ci" / "serve.pid")
        shutil.rmtree(workspace / ".venv", ignore_errors=True)
    report = "\n".join(f"{seconds:7.1f} s  {name}" for name, seconds in timings)
    log = runner.log + cd_runner.log
    print(f"\n{report}\n{time.monotonic() - started:7.1f} s  in all\n" + "\n".join(log))

    lifecycle = runner.outputs["lifecycle"]
    jars = (workspace / "lakehouse" / "platform" / "jars.py").read_text()
    assert f'DELTA_VERSION = "{lifecycle["delta"]["version"]}"' in jars
    gate = lifecycle["gate"]
    assert re.fullmatch(r"[0-9a-f]{32}", gate["run-id"]) and int(gate["version"]) >= 1
    assert gate["verdict"] == "promoted"
    summary = "".join(runner.summaries)
    assert f"| credit_risk_model | {gate['version']} | `{gate['run-id']}` |" in summary
    print(summary)

    (cd_job,) = cd_runner.outputs.values()
    candidate = cd_job["candidate"]
    assert candidate["verdict"] == "challenger", candidate
    assert int(candidate["version"]) == int(gate["version"]) + 1
    assert cd_job["analysis"]["outcome"] in ("promoted", "rolled-back")
    cd_summary = "".join(cd_runner.summaries)
    assert f"version {candidate['version']}: **{cd_job['analysis']['outcome']}**" in cd_summary
    print(cd_summary)


def stop_server(pid_file: Path) -> None:
    """Kill a serving process a failed CD run left behind."""
    if pid_file.is_file():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
