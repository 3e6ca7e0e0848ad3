from pathlib import Path

import pytest

from lakehouse import jars


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


def test_java_version_is_checked() -> None:
    assert jars.check_java() >= 17


def test_old_java_is_rejected(monkeypatch) -> None:
    monkeypatch.setattr(jars, "java_major_version", lambda: 11)
    with pytest.raises(jars.SetupError, match="Java 11 found, but Spark 4 needs Java 17"):
        jars.check_java()
