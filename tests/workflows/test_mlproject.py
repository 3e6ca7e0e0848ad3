"""The repository's MLproject under `mlflow run`: ingest, then train, as tracked project runs.

Both run as `mlflow run <repo> -e ... --env-manager local` in processes of their own, against
a SQLite tracking store under the test's folder, on a small seeded world. The run that
`mlflow run` creates for `train` must be the training run itself: it holds the training's
params, metrics and model, and the registered version points at it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse.models.tracking import env_vars
from lakehouse.platform.settings import Settings
from lakehouse.simulation.generator import GeneratorConfig, generate
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

#: The smallest seeded world found whose holdout (the newest 20% of the 77 observed outcomes,
#: outcomes land 28-70 days after an application) holds defaults.
WORLD = GeneratorConfig(seed=1, customers=250, days=75).without_faults()
BIN = Path(sys.executable).parent


def _mlflow_run(
    entry_point: str, params: dict[str, str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "mlflow"), "run", str(REPO_ROOT), "-e", entry_point]
    command += [arg for key, value in params.items() for arg in ("-P", f"{key}={value}")]
    command += ["--env-manager", "local"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=cwd)


def test_ingest_then_train_as_project_runs(
    settings: Settings, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    generate(settings.landing_dir, WORLD)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in subprocess_env.items() if not k.startswith("MLFLOW_")}
    # As after `eval "$(lakehouse env)"` with the env active: the env's python and mlflow first.
    env |= env_vars(settings) | {"MLFLOW_TRACKING_URI": tracking_uri}
    env |= {"MLFLOW_REGISTRY_URI": tracking_uri, "PATH": f"{BIN}{os.pathsep}{env['PATH']}"}
    # conftest's JDK_JAVA_OPTIONS (or the caller's own) reaches every JVM of the project runs.
    assert env["JDK_JAVA_OPTIONS"] == os.environ["JDK_JAVA_OPTIONS"]

    ingest = _mlflow_run("ingest", {}, env, tmp_path)
    assert ingest.returncode == 0, ingest.stderr[-4000:]
    assert "feature views applied: customer_profile_fv, customer_transactions_fv" in ingest.stdout
    # A floor of 0 (over ml_gate.yaml's) so that the verdict does not hang on a tiny holdout.
    train = _mlflow_run(
        "train", {"model_type": "hist_gradient_boosting", "gate_floor": "0.0"}, env, tmp_path
    )
    assert train.returncode == 0, train.stderr[-4000:]

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    assert experiment is not None
    runs = {
        run.data.tags["mlflow.project.entryPoint"]: run
        for run in client.search_runs([experiment.experiment_id])
    }
    # Two runs in all: the training resumed the project run rather than starting its own.
    assert sorted(runs) == ["ingest", "train"]
    assert len(client.search_runs([experiment.experiment_id])) == 2
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.source.type"] == "PROJECT"
        assert run.data.tags["mlflow.source.git.commit"] == commit

    ingested = runs["ingest"].data
    assert ingested.params == {"stage": "all"}
    assert ingested.tags["lakehouse.stages"] == "bronze,silver,gold"
    assert ingested.metrics["rows_ingested"] > 0

    trained = runs["train"]
    params = trained.data.params
    assert params["model_type"] == "hist_gradient_boosting"
    # The MLproject defaults, as the project run logged them and the training logged them too.
    assert {k: params[k] for k in ("n_estimators", "max_depth", "learning_rate", "seed")} == {
        "n_estimators": "200",
        "max_depth": "8",
        "learning_rate": "0.1",
        "seed": "42",
    }
    assert (params["gate_floor"], params["gate_metric"]) == ("0.0", "none")  # none: the file's
    assert "table_versions" in params and "feature_service" in params  # the training's own
    assert {"roc_auc", "pr_auc", "train_roc_auc"} <= set(trained.data.metrics)
    assert trained.data.tags["lakehouse.gate_verdict"] == "promoted"
    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", trained.info.run_id)]
    assert str(client.get_model_version_by_alias(settings.model_name, "champion").version) == "1"
    assert f"run {trained.info.run_id}: {settings.model_name} version 1" in train.stdout
