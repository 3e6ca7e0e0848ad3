"""``lakehouse cluster``: a real standalone master and two workers, started by the command.

One cluster for the module, over a temporary state folder; the tests run in file order on it:
its status, a second start, an application of another process on it, a worker SIGKILLed in the
middle of a job, and last the stop. Every job is a separate driver process given only
``LAKEHOUSE_SPARK_MASTER``, as a user's job would be.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lakehouse.platform.cluster import ClusterInfo, master_state, spark_class
from lakehouse.platform.locks import EXIT_BUSY
from lakehouse.serving.process import free_port
from tests.conftest import platform_env

pytestmark = [pytest.mark.slow, pytest.mark.service, pytest.mark.cluster]

LAKEHOUSE = str(Path(sys.executable).with_name("lakehouse"))

#: A job of eight partitions, each squaring its numbers slowly. Each task attempt leaves a mark
#: named after its partition and attempt, holding its working directory (the executor's folder
#: under the worker that ran it), and a ``.done`` mark when it finished.
SLOW_JOB = """
import json, os, sys, time
from pathlib import Path

from pyspark import TaskContext

from lakehouse.platform.spark import get_spark

marks = Path(sys.argv[1])


def slow(rows):
    ctx = TaskContext.get()
    mark = marks / f"p{ctx.partitionId()}-a{ctx.attemptNumber()}"
    mark.write_text(os.getcwd())
    time.sleep(3)
    squares = [x * x for x in rows]
    mark.with_name(mark.name + ".done").write_text(os.getcwd())
    return squares


spark = get_spark(app_name="lakehouse-slow-squares", register_tables=False)
try:
    total = spark.sparkContext.parallelize(range(1000), 8).mapPartitions(slow).sum()
    print(json.dumps({"sum": total, "app": spark.sparkContext.applicationId}))
finally:
    spark.stop()
"""
SUM_OF_SQUARES = sum(x * x for x in range(1000))


@dataclass(frozen=True)
class Cluster:
    home: Path
    env: dict[str, str]
    port: int
    webui_port: int
    started: subprocess.CompletedProcess[str]

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def info(self) -> ClusterInfo:
        record = json.loads((self.home / "run" / "cluster.pid").read_text())
        return ClusterInfo.from_json(**record)

    def job_env(self) -> dict[str, str]:
        """The environment of a driver that runs on the cluster."""
        return {**self.env, "LAKEHOUSE_SPARK_MASTER": self.url}


def lakehouse(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``lakehouse ARGS`` in ``env``."""
    return subprocess.run(
        [LAKEHOUSE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def home_env(home: Path) -> dict[str, str]:
    env = platform_env(
        LAKEHOUSE_HOME=str(home),
        LAKEHOUSE_SHUFFLE_PARTITIONS="2",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
    )
    for name in ("LAKEHOUSE_SPARK_MASTER", "LAKEHOUSE_SPARK_REMOTE", "SPARK_LOCAL_IP"):
        env.pop(name, None)
    return env


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path("/proc") / str(pid) / "stat"
    return not stat.exists() or stat.read_text().split(") ", 1)[1][:1] != "Z"


def processes_in(folder: Path) -> list[int]:
    """This user's processes whose working directory is ``folder`` or below it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if Path(cwd) == folder or Path(cwd).is_relative_to(folder):
            found.append(int(proc.name))
    return found


def worker_lines(status: str) -> list[str]:
    lines = status.splitlines()
    start = lines.index("workers:") + 1
    return [line.strip() for line in lines[start:] if line.startswith("  ")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not spark_class().is_file():
        pytest.skip(f"spark-class is not installed: {spark_class()}")
    home = tmp_path_factory.mktemp("local-cluster") / "home"
    env = home_env(home)
    port, webui_port = free_port(), free_port()
    started = lakehouse(
        env, "cluster", "start", "--workers", "2",
        "--port", str(port), "--webui-port", str(webui_port),
    )  # fmt: skip
    running = Cluster(home, env, port, webui_port, started)
    try:
        assert started.returncode == 0, started.stderr
        yield running
    finally:
        lakehouse(env, "cluster", "stop")


def test_start_prints_the_master_url_and_the_line_for_jobs(cluster: Cluster) -> None:
    out = cluster.started.stdout
    assert f"Spark cluster started: master {cluster.url} (pid {cluster.info.pid}), 2 workers" in out
    assert f"  export LAKEHOUSE_SPARK_MASTER={cluster.url}\n" in out
    assert [w.folder for w in cluster.info.workers] == [
        str(cluster.home / "cluster" / "worker-1"),
        str(cluster.home / "cluster" / "worker-2"),
    ]


def test_status_shows_the_master_and_two_alive_workers(cluster: Cluster) -> None:
    status = lakehouse(cluster.env, "cluster", "status")

    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith(f"master:  {cluster.url} (pid {cluster.info.pid}, up ")
    assert f"web UI:  http://127.0.0.1:{cluster.webui_port}" in lines
    assert "status:  ALIVE; 2 of 2 workers alive, 2 cores, 2048 MiB" in lines
    workers = worker_lines(status.stdout)
    for n, worker in enumerate(cluster.info.workers, start=1):
        line = f"worker-{n} (pid {worker.pid})  ALIVE  cores 0/1 used  memory 0/1024 MiB used"
        assert any(w.startswith(line) for w in workers), workers
    assert "running applications: none" in lines
    assert lines[-1] == f"export LAKEHOUSE_SPARK_MASTER={cluster.url}"


def test_a_second_start_exits_75_naming_the_running_master(cluster: Cluster) -> None:
    again = lakehouse(
        cluster.env, "cluster", "start", "--port", str(free_port()),
        "--webui-port", str(free_port()),
    )  # fmt: skip

    assert again.returncode == EXIT_BUSY
    assert f"master pid {cluster.info.pid} at {cluster.url}" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_lakehouse_sql_runs_as_an_application_of_the_cluster(cluster: Cluster) -> None:
    query = "SELECT id % 3 AS k, count(*) AS n FROM range(0, 3000, 1, 4) GROUP BY k ORDER BY k"

    done = lakehouse(cluster.job_env(), "sql", query)

    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [r for r in rows if len(r) == 2 and r[0].isdigit()] == [
        ["0", "1000"],
        ["1", "1000"],
        ["2", "1000"],
    ]
    state = master_state(cluster.info.webui)
    assert state is not None
    apps = [a for a in state.completed_apps if a.name == "lakehouse-sql"]
    assert [a.state for a in apps] == ["FINISHED"]
    # Both workers ran executors of it: each keeps a folder for the application.
    for worker in cluster.info.workers:
        assert (Path(worker.folder) / apps[0].id).is_dir(), worker.folder


def test_a_job_survives_a_worker_killed_mid_job(cluster: Cluster, tmp_path: Path) -> None:
    """The issue's fault: the tasks of the SIGKILLed worker run again on the other one."""
    victim, survivor = cluster.info.workers
    marks = tmp_path / "marks"
    marks.mkdir()
    job = subprocess.Popen(
        [sys.executable, "-c", SLOW_JOB, str(marks)],
        env=cluster.job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        killed = None
        during = None
        deadline = time.monotonic() + 240
        while killed is None and time.monotonic() < deadline and job.poll() is None:
            if during is None and any(marks.iterdir()):  # the job's first task runs
                during = lakehouse(cluster.env, "cluster", "status").stdout
            for mark in marks.glob("p*-a*[0-9]"):
                running_on_victim = mark.read_text().startswith(victim.folder + os.sep)
                if running_on_victim and not mark.with_name(mark.name + ".done").exists():
                    os.kill(victim.pid, signal.SIGKILL)
                    killed = mark.name
                    break
            time.sleep(0.1)
        out, err = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()

    assert killed is not None, f"no task ran on {victim.folder}; job said: {err[-3000:]}"
    assert job.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["sum"] == SUM_OF_SQUARES
    assert during is not None
    running = during.split("running applications:\n", 1)[1].splitlines()
    assert running[0].startswith(f"  {result['app']}  lakehouse-slow-squares  RUNNING"), during
    partition = killed.split("-")[0]
    finished = {m.name.removesuffix(".done"): m.read_text() for m in marks.glob("*.done")}
    assert killed not in finished  # the attempt on the killed worker never finished
    retried = [name for name in finished if name.startswith(partition + "-")]
    assert retried, finished
    assert all(finished[name].startswith(survivor.folder + os.sep) for name in retried)
    assert sorted({name.split("-")[0] for name in finished}) == [f"p{i}" for i in range(8)]
    # The master saw the worker go.
    status = lakehouse(cluster.env, "cluster", "status")
    assert status.returncode == 0, status.stderr
    workers = worker_lines(status.stdout)
    assert any(w.startswith(f"worker-1 (pid {victim.pid})  DEAD") for w in workers), workers
    assert any(w.startswith(f"worker-2 (pid {survivor.pid})  ALIVE") for w in workers), workers
    assert "status:  ALIVE; 1 of 2 workers alive, 1 cores, 1024 MiB" in status.stdout


def test_stop_ends_every_process_and_status_then_says_none_runs(cluster: Cluster) -> None:
    """Last in the module: the other tests use the running cluster."""
    info = cluster.info
    pids = [info.pid, *(w.pid for w in info.workers)]

    stopped = lakehouse(cluster.env, "cluster", "stop")

    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith(f"Spark cluster stopped (master pid {info.pid}; ")
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert processes_in(cluster.home / "cluster") == []
    assert not (cluster.home / "run" / "cluster.pid").exists()
    status = lakehouse(cluster.env, "cluster", "status")
    assert status.returncode == 3
    assert status.stdout.strip() == f"no Spark cluster running for {cluster.home}"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", cluster.port), timeout=2).close()
    assert lakehouse(cluster.env, "cluster", "stop").returncode == 0  # nothing to stop


def test_start_on_a_port_in_use_fails_in_one_line(tmp_path: Path) -> None:
    env = home_env(tmp_path / "home")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = lakehouse(
            env, "cluster", "start", "--port", str(port), "--webui-port", str(free_port())
        )

    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: port {port} on 127.0.0.1 is in use by another process (--port)"
    )
    assert lakehouse(env, "cluster", "status").returncode == 3


def test_a_master_that_cannot_start_fails_naming_its_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**home_env(home), "JAVA_HOME": str(tmp_path / "no-java")}

    done = lakehouse(
        env, "cluster", "start", "--port", str(free_port()), "--webui-port", str(free_port())
    )

    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: the master exited with code 1 before answering; see ")
    log = Path(line.rsplit("see ", 1)[1])
    assert log.parent == home / "logs"
    assert str(tmp_path / "no-java" / "bin" / "java") in log.read_text()
    assert not (home / "run" / "cluster.pid").exists()
    assert lakehouse(env, "cluster", "status").returncode == 3


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["cluster", "start", "--workers", "two"],
            "lakehouse cluster start: error: argument --workers: "
            "must be a positive integer, got 'two'",
        ),
        (
            ["cluster", "start", "--memory-per-worker", "1024"],
            "lakehouse cluster start: error: argument --memory-per-worker: "
            "not an amount of memory like 1g or 512m: '1024'",
        ),
        (
            ["cluster", "start", "--webui-port", "0"],
            "lakehouse cluster start: error: argument --webui-port: "
            "port must be between 1 and 65535, got 0",
        ),
        (
            ["cluster", "start", "--no-such-flag"],
            "lakehouse: error: unrecognized arguments: --no-such-flag",
        ),
        (
            ["cluster", "stop", "--timeout", "soon"],
            "lakehouse cluster stop: error: argument --timeout: not a number of seconds: 'soon'",
        ),
        (["cluster"], "lakehouse cluster: error: the following arguments are required: ACTION"),
    ],
)
def test_a_wrong_flag_prints_usage_not_a_traceback(
    args: list[str], error: str, tmp_path: Path
) -> None:
    done = lakehouse(home_env(tmp_path / "home"), *args)

    assert done.returncode == 2
    assert done.stderr.startswith("usage: lakehouse")
    assert done.stderr.strip().splitlines()[-1] == error
