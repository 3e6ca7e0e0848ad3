"""The JVM side: Delta Lake's jars from Maven Central, and the platform's own JVM classes.

``python -m lakehouse.platform.jars`` (run by ``make setup``) checks Java, resolves Delta's jars
and those of the ``s3a://`` connector (:data:`OBJECT_STORE_ARTIFACTS`) with Maven when they are
missing, builds the jars of the local file system and of the persistent catalog when they are
missing (see :func:`local_fs_jar` and :func:`catalog_jar`) and prints their paths. A second run
finds them and does nothing else. No jar is ever committed to the repository.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

SPARK_BINARY_VERSION = "4.2"
SCALA_BINARY_VERSION = "2.13"
DELTA_VERSION = "4.4.0"
MIN_JAVA = 17

#: (group, artifact, version) of every jar the driver and executors need besides Spark's own.
DELTA_ARTIFACTS: tuple[tuple[str, str, str], ...] = (
    ("io.delta", f"delta-spark_{SPARK_BINARY_VERSION}_{SCALA_BINARY_VERSION}", DELTA_VERSION),
    ("io.delta", "delta-storage", DELTA_VERSION),
)

#: The Hadoop version of Spark's own client jars (``hadoop-client-api-3.5.0.jar`` in pyspark).
HADOOP_VERSION = "3.5.0"
#: The AWS SDK v2 that hadoop-aws 3.5.0 is built with (``aws-java-sdk-v2.version`` in the pom of
#: ``hadoop-project`` 3.5.0, the parent of hadoop-aws's pom). S3A checks no version at run time,
#: so another SDK fails late, on the first request that differs.
AWS_SDK_VERSION = "2.35.4"
#: ``analyticsaccelerator-s3``, the other compile-scope dependency of hadoop-aws 3.5.0.
S3_ANALYTICS_ACCELERATOR_VERSION = "1.3.1"

#: Hadoop's S3A connector (``s3a://``) and what it needs at run time, resolved at set-up like
#: Delta's jars: on the class path of sessions whose tables live on an object store, and of
#: every local session once resolved (see :func:`lakehouse.platform.spark.get_spark`).
OBJECT_STORE_ARTIFACTS: tuple[tuple[str, str, str], ...] = (
    ("org.apache.hadoop", "hadoop-aws", HADOOP_VERSION),
    ("software.amazon.awssdk", "bundle", AWS_SDK_VERSION),
    (
        "software.amazon.s3.analyticsaccelerator",
        "analyticsaccelerator-s3",
        S3_ANALYTICS_ACCELERATOR_VERSION,
    ),
)


class SetupError(RuntimeError):
    """The machine lacks something the platform needs; the message says what to do."""


def m2_repository() -> Path:
    """The local Maven repository (``$M2_REPO`` or ``~/.m2/repository``)."""
    return Path(os.environ.get("M2_REPO", "~/.m2/repository")).expanduser()


def artifact_paths(
    artifacts: tuple[tuple[str, str, str], ...], repo: Path | None = None
) -> list[Path]:
    """Where each of ``artifacts`` (group, artifact, version) is in the local Maven repository."""
    repo = repo or m2_repository()
    return [
        repo.joinpath(*group.split("."), artifact, version, f"{artifact}-{version}.jar")
        for group, artifact, version in artifacts
    ]


def jar_paths(repo: Path | None = None) -> list[Path]:
    """Where each Delta jar lives in the local Maven repository."""
    return artifact_paths(DELTA_ARTIFACTS, repo)


def object_store_jar_paths(repo: Path | None = None) -> list[Path]:
    """Where each jar of :data:`OBJECT_STORE_ARTIFACTS` lives in the local Maven repository."""
    return artifact_paths(OBJECT_STORE_ARTIFACTS, repo)


def object_store_in_use() -> bool:
    """Whether the settings in effect keep the tables on an object store (``s3a://``).

    What :func:`resolve_jars` asks by default, so that ``lakehouse jars`` (the ``--jars`` of
    every ``spark-submit``) names the S3A jars exactly when the jobs it feeds need them.
    """
    from lakehouse.platform.settings import load_settings

    return load_settings().tables_on_object_store


def java_major_version(java: str = "java") -> int:
    """The major version of the ``java`` on the PATH (or of ``$JAVA_HOME``)."""
    java_home = os.environ.get("JAVA_HOME")
    exe = str(Path(java_home) / "bin" / "java") if java_home else shutil.which(java)
    if not exe or not Path(exe).exists():
        raise SetupError(
            f"Java {MIN_JAVA} or newer is required and no `java` was found. "
            "Install it (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME."
        )
    out = subprocess.run([exe, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise SetupError(f"could not read the Java version from `{exe} -version`")
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def check_java() -> int:
    """Fail with a clear message unless Java >= 17 is available."""
    major = java_major_version()
    if major < MIN_JAVA:
        raise SetupError(
            f"Java {major} found, but Spark 4 needs Java {MIN_JAVA} or newer: install it "
            "(Debian: apt-get install openjdk-17-jre-headless) or point JAVA_HOME at one."
        )
    return major


def check_python_package() -> None:
    """Warn when the installed delta-spark wheel does not match the JVM artifact."""
    try:
        installed = metadata.version("delta-spark")
    except metadata.PackageNotFoundError:
        return
    if installed != DELTA_VERSION:
        log.warning("delta-spark %s installed but jars are %s", installed, DELTA_VERSION)


def resolve_jars(repo: Path | None = None, object_store: bool | None = None) -> list[Path]:
    """Return the Delta jars, downloading them with Maven first when any is missing.

    Args:
        repo: the local Maven repository; default :func:`m2_repository`.
        object_store: also return (and resolve) the S3A jars of :data:`OBJECT_STORE_ARTIFACTS`,
            after Delta's; default: when the settings in effect keep tables on an object store
            (:func:`object_store_in_use`).
    """
    if object_store is None:
        object_store = object_store_in_use()
    paths = _resolve(DELTA_ARTIFACTS, repo)
    if object_store:
        paths.extend(resolve_object_store_jars(repo))
    return paths


def resolve_object_store_jars(repo: Path | None = None) -> list[Path]:
    """Return the S3A jars, downloading them with Maven first when any is missing, and the
    platform's LogStore for S3 (:func:`log_store_jar`) when it can be built."""
    paths = _resolve(OBJECT_STORE_ARTIFACTS, repo)
    log_store = log_store_jar() if repo is None else None
    return paths if log_store is None else [*paths, log_store]


def _resolve(artifacts: tuple[tuple[str, str, str], ...], repo: Path | None) -> list[Path]:
    """The jars of ``artifacts``, each fetched with ``mvn dependency:get`` when missing."""
    paths = artifact_paths(artifacts, repo)
    missing = [
        (coords, path) for coords, path in zip(artifacts, paths, strict=True) if not path.is_file()
    ]
    if not missing:
        return paths
    mvn = shutil.which("mvn")
    if mvn is None:
        what = "Delta Lake's jars are" if missing[0][0] in DELTA_ARTIFACTS else "S3A's jars are"
        raise SetupError(
            f"{what} not in ~/.m2 and Maven is not installed to fetch them. "
            "Install Maven (Debian: apt-get install maven) and run `make setup` again."
        )
    for (group, artifact, version), _ in missing:
        coords = f"{group}:{artifact}:{version}"
        log.info("resolving %s from Maven Central", coords)
        cmd = [mvn, "-q", "-B", "dependency:get", f"-Dartifact={coords}", "-Dtransitive=false"]
        if repo is not None:
            cmd.append(f"-Dmaven.repo.local={repo}")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise SetupError(
                f"Maven could not resolve {coords} from Maven Central.\n{tail}\n"
                "Check the network access to Maven Central (or a mirror in ~/.m2/settings.xml) "
                "and run `make setup` again."
            )
    still = [str(p) for p in paths if not p.is_file()]
    if still:
        raise SetupError(f"Maven finished but these jars are still missing: {still}")
    return paths


#: Hadoop's raw local file system, setting permissions with java.nio instead of a forked ``chmod``.
LOCAL_FS_CLASS = "io.lakehouse.fs.NioRawLocalFileSystem"
_LOCAL_FS_SOURCE = Path(__file__).with_name("jvm") / "NioRawLocalFileSystem.java"

#: The persistent catalog: Delta's session catalog over the folder layout, and its extension.
CATALOG_CLASS = "io.lakehouse.catalog.LakehouseCatalog"
CATALOG_EXTENSION = "io.lakehouse.catalog.LakehouseExtension"
_CATALOG_SOURCES = [
    Path(__file__).with_name("jvm") / name
    for name in ("FolderCatalog.java", "LakehouseCatalog.java", "LakehouseExtension.java")
]


#: Delta's LogStore for ``s3a://`` tables written by several applications at once.
LOG_STORE_CLASS = "io.lakehouse.storage.S3ConditionalLogStore"
_LOG_STORE_SOURCE = Path(__file__).with_name("jvm") / "S3ConditionalLogStore.java"


def spark_jars_dir() -> Path:
    """The jars of the Spark this Python runs: ``$SPARK_HOME/jars``, else pyspark's own."""
    spark_home = os.environ.get("SPARK_HOME")
    if spark_home and (Path(spark_home) / "jars").is_dir():
        return Path(spark_home) / "jars"
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def cache_dir() -> Path:
    """Where built jars are kept: ``$XDG_CACHE_HOME/lakehouse`` (default ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "lakehouse"


def local_fs_jar(cache: Path | None = None) -> Path | None:
    """The jar of :data:`LOCAL_FS_CLASS`, compiled from its source on first use.

    Without Hadoop's native library (not shipped with pyspark), Hadoop's local file system
    forks ``chmod`` for every file and directory it creates: each Delta commit, checkpoint
    file and data file. The class in ``lakehouse/jvm`` makes the same change with a system call.
    It is compiled with ``javac`` against Spark's own Hadoop jar, once per source and Hadoop
    version (both are in the jar's name), into :func:`cache_dir`. Returns ``None`` when the jar
    is missing and cannot be built (no ``javac``: a Java runtime without its development kit;
    no Hadoop jar; a failed build, logged); Spark then keeps Hadoop's own local file system.
    """
    hadoop = sorted(spark_jars_dir().glob("hadoop-client-api-*.jar"))
    if not hadoop:
        return None
    classpath = [str(hadoop[-1])]
    return _built_jar(
        "lakehouse-localfs", [_LOCAL_FS_SOURCE], classpath, cache, hadoop[-1].name.encode()
    )


def catalog_jar(cache: Path | None = None) -> Path | None:
    """The jar of the persistent catalog (:data:`CATALOG_CLASS`), compiled on first use.

    The catalog extends Delta's, so it is compiled against Spark's jars and Delta's, once per
    source, Spark and Delta version (all in the jar's name), into :func:`cache_dir`; it goes on
    the class path beside Delta's jars. Returns ``None`` when it is missing and cannot be built
    (no ``javac``, Delta's jars not resolved yet, a failed build, logged); sessions then keep
    Delta's own catalog, in memory.
    """
    spark_jars = spark_jars_dir()
    sql = sorted(spark_jars.glob("spark-sql_*.jar"))
    delta = jar_paths()
    if not sql or not all(p.is_file() for p in delta):
        return None
    classpath = [str(spark_jars / "*"), *(str(p) for p in delta)]
    versions = (sql[-1].name + DELTA_VERSION).encode()
    return _built_jar("lakehouse-catalog", _CATALOG_SOURCES, classpath, cache, versions)


def log_store_jar(cache: Path | None = None) -> Path | None:
    """The jar of :data:`LOG_STORE_CLASS`, compiled on first use.

    Compiled against Spark's Hadoop, Delta's storage jar and the S3A jars, once per source and
    version of each (all in the jar's name), into :func:`cache_dir`. Returns ``None`` when it
    is missing and cannot be built (no ``javac``, the jars not resolved yet, a failed build).
    """
    spark_jars = spark_jars_dir()
    hadoop = sorted(spark_jars.glob("hadoop-client-api-*.jar"))
    needed = [jar_paths()[1], *object_store_jar_paths()]
    if not hadoop or not all(p.is_file() for p in needed):
        return None
    classpath = [str(spark_jars / "*"), *(str(p) for p in needed)]
    versions = "".join([hadoop[-1].name, *(p.name for p in needed)]).encode()
    return _built_jar("lakehouse-logstore", [_LOG_STORE_SOURCE], classpath, cache, versions)


def _built_jar(
    prefix: str,
    sources: list[Path],
    classpath: list[str],
    cache: Path | None,
    versions: bytes,
) -> Path | None:
    """Compile ``sources`` into ``<cache>/<prefix>-<digest>.jar`` unless it is there already.

    The digest covers the sources and ``versions`` (the names of the jars compiled against), so
    a change of either builds a new jar. The jar is written beside its final name and renamed
    into place, so concurrent builds cannot tear it.
    """
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources) + versions).hexdigest()
    jar = (cache or cache_dir()) / f"{prefix}-{digest[:12]}.jar"
    if jar.is_file():
        return jar
    javac = shutil.which("javac")
    jar_tool = shutil.which("jar")
    if javac is None or jar_tool is None:
        return None
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=jar.parent) as work:
        classes = Path(work) / "classes"
        compile_ = [javac, "--release", "17", "-nowarn", "-cp", os.pathsep.join(classpath)]
        steps = [
            [*compile_, "-d", str(classes), *(str(p) for p in sources)],
            [jar_tool, "cf", str(Path(work) / jar.name), "-C", str(classes), "."],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                log.warning("could not build %s: %s", jar.name, (done.stdout + done.stderr)[-500:])
                return None
        os.replace(Path(work) / jar.name, jar)  # atomic: concurrent builds cannot tear it
    log.info("built %s", jar)
    return jar


def main() -> int:
    """Check Java and resolve the jars; print one path a line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        major = check_java()
        check_python_package()
        paths = resolve_jars(object_store=False)
        s3a = resolve_object_store_jars()
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"java {major}; delta {DELTA_VERSION} for spark {SPARK_BINARY_VERSION}:")
    for path in paths:
        print(f"  {path}")
    print(f"s3a (hadoop-aws {HADOOP_VERSION}, AWS SDK {AWS_SDK_VERSION}):")
    for path in s3a:
        print(f"  {path}")
    local_fs = local_fs_jar()
    if local_fs is None:
        print("local file system: Hadoop's own (the platform's was not built: it needs javac)")
    else:
        print(f"local file system: {local_fs}")
    catalog = catalog_jar()
    if catalog is None:
        print("catalog: Delta's, in memory (the persistent catalog was not built: it needs javac)")
    else:
        print(f"catalog: {catalog}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
