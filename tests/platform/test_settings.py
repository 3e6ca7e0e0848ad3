from pathlib import Path

import pytest

from lakehouse.platform.settings import load_settings


def test_defaults_put_everything_under_home(tmp_path: Path) -> None:
    s = load_settings("local", env={"LAKEHOUSE_HOME": str(tmp_path)})
    assert s.profile == "local"
    assert s.home == tmp_path.resolve()
    assert s.tables_root == str(tmp_path.resolve() / "tables")
    assert s.landing_dir == tmp_path.resolve() / "landing"
    assert s.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert s.registry_uri == s.tracking_uri
    assert s.online_store == "sqlite"


def test_env_overrides_profile(tmp_path: Path) -> None:
    env = {
        "LAKEHOUSE_HOME": str(tmp_path),
        "LAKEHOUSE_SPARK_MASTER": "spark://m:7077",
        "LAKEHOUSE_SHUFFLE_PARTITIONS": "8",
        "MLFLOW_TRACKING_URI": "http://localhost:5000",
        "LAKEHOUSE_ONLINE_STORE": "redis",
    }
    s = load_settings("local", env=env)
    assert (s.spark_master, s.shuffle_partitions) == ("spark://m:7077", 8)
    assert s.tracking_uri == "http://localhost:5000"
    assert s.online_store == "redis"


def test_cluster_profile_selected_by_env() -> None:
    s = load_settings(env={"LAKEHOUSE_PROFILE": "cluster"})
    assert s.profile == "cluster"
    assert s.spark_master == "spark://spark-master:7077"
    assert s.online_store == "redis"


def test_unknown_profile_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown profile 'nope'.*cluster, local"):
        load_settings("nope", env={})


def test_feast_sqlite_selects_feasts_own_store_on_the_same_file() -> None:
    s = load_settings("local", env={"LAKEHOUSE_ONLINE_STORE": "feast-sqlite"})
    assert s.online_store == "feast-sqlite"
    assert s.sqlite_online_store
    assert not load_settings("local", env={"LAKEHOUSE_ONLINE_STORE": "redis"}).sqlite_online_store


@pytest.mark.parametrize("name", ["run[2]", "a*b", "x{1,2}", "why?"])
def test_a_state_folder_spark_would_read_as_a_pattern_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"reads as a file pattern"):
        load_settings("local", env={"LAKEHOUSE_HOME": str(tmp_path / name)})
    assert load_settings("local", env={"LAKEHOUSE_HOME": str(tmp_path / "run-2")}).home.name == (
        "run-2"
    )


def test_bad_online_store_is_rejected() -> None:
    with pytest.raises(ValueError, match="online_store must be"):
        load_settings("local", env={"LAKEHOUSE_ONLINE_STORE": "memcached"})


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings("local", env={"LAKEHOUSE_HOME": str(tmp_path)})
    with pytest.raises(AttributeError):
        s.home = Path("/")  # type: ignore[misc]


def test_connect_is_exported_lazily(tmp_path: Path) -> None:
    import mlflow

    import lakehouse

    s = load_settings("local", env={"LAKEHOUSE_HOME": str(tmp_path)})
    assert lakehouse.connect(s) == s.tracking_uri
    assert mlflow.get_tracking_uri() == s.tracking_uri
    assert mlflow.get_experiment_by_name("credit_risk_model") is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = lakehouse.nope  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("master", "driver_listing"), [("local[2]", True), ("spark://m:7077", False)]
)
def test_a_local_master_lists_a_batchs_files_on_the_driver(
    tmp_path: Path, master: str, driver_listing: bool
) -> None:
    from lakehouse.platform.spark import spark_conf

    env = {"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_SPARK_MASTER": master}
    conf = spark_conf(load_settings("local", env=env))
    threshold = conf.get("spark.sql.sources.parallelPartitionDiscovery.threshold")
    # A stream's batch of 90 daily files is listed without a Spark job only locally.
    assert (threshold is not None and int(threshold) >= 90) is driver_listing
