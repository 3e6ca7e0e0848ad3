import zipfile
from pathlib import Path

import pytest

from lakehouse.platform import jars


def test_jar_paths_follow_maven_layout(tmp_path: Path) -> None:
    assert jars.jar_paths(tmp_path) == [
        tmp_path / "io/delta/delta-spark_4.2_2.13/4.4.0/delta-spark_4.2_2.13-4.4.0.jar",
        tmp_path / "io/delta/delta-storage/4.4.0/delta-storage-4.4.0.jar",
    ]


def test_resolve_is_a_no_op_when_jars_are_present(tmp_path: Path, monkeypatch) -> None:
    for path in jars.jar_paths(tmp_path):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"jar")
    monkeypatch.setattr(jars.shutil, "which", lambda _: None)  # Maven is never called
    assert jars.resolve_jars(tmp_path) == jars.jar_paths(tmp_path)


def test_missing_maven_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(jars.shutil, "which", lambda _: None)
    with pytest.raises(jars.SetupError, match=r"Install Maven .* run `make setup` again"):
        jars.resolve_jars(tmp_path)


def test_failed_resolution_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    # A repository Maven cannot write to: resolution fails for real, offline or not.
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    with pytest.raises(jars.SetupError, match=r"could not resolve io\.delta:delta-spark_4\.2"):
        jars.resolve_jars(blocked)


@pytest.mark.jvm  # runs `java -version`
def test_java_version_is_checked() -> None:
    assert jars.check_java() >= 17


def test_old_java_is_rejected(monkeypatch) -> None:
    monkeypatch.setattr(jars, "java_major_version", lambda: 11)
    with pytest.raises(jars.SetupError, match="Java 11 found, but Spark 4 needs Java 17"):
        jars.check_java()


def test_local_fs_jar_is_built_once(tmp_path: Path, monkeypatch) -> None:
    jar = jars.local_fs_jar(cache=tmp_path)
    assert jar is not None and jar.parent == tmp_path
    with zipfile.ZipFile(jar) as built:
        assert "io/lakehouse/fs/NioRawLocalFileSystem.class" in built.namelist()
    built_at = jar.stat().st_mtime_ns
    monkeypatch.setattr(jars.shutil, "which", lambda _: None)  # javac is never called again
    assert jars.local_fs_jar(cache=tmp_path) == jar
    assert jar.stat().st_mtime_ns == built_at
    assert [p.name for p in tmp_path.iterdir()] == [jar.name]  # no build folder left behind


def test_no_javac_keeps_hadoops_local_fs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(jars.shutil, "which", lambda _: None)
    assert jars.local_fs_jar(cache=tmp_path) is None
    from lakehouse.platform import spark
    from lakehouse.platform.settings import load_settings

    monkeypatch.setattr(spark, "local_fs_jar", lambda: None)
    conf = spark.spark_conf(load_settings("local", env={"LAKEHOUSE_HOME": str(tmp_path)}))
    assert conf["spark.hadoop.fs.file.impl"] == "org.apache.hadoop.fs.RawLocalFileSystem"
    assert "spark.driver.extraClassPath" not in conf


@pytest.mark.parametrize(
    ("master", "launches_jvm", "platform_fs"),
    [("local[2]", True, True), ("local[2]", False, False), ("spark://m:7077", True, False)],
)
def test_only_a_local_jvm_this_process_starts_uses_the_platform_fs(
    tmp_path: Path, master: str, launches_jvm: bool, platform_fs: bool
) -> None:
    """Executors of a cluster and a driver started by spark-submit lack the jar."""
    from lakehouse.platform.settings import load_settings
    from lakehouse.platform.spark import spark_conf

    env = {"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_SPARK_MASTER": master}
    conf = spark_conf(load_settings("local", env=env), launches_jvm=launches_jvm)
    assert (conf["spark.hadoop.fs.file.impl"] == jars.LOCAL_FS_CLASS) is platform_fs
    assert ("spark.driver.extraClassPath" in conf) is platform_fs
