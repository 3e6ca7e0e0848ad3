"""docker-compose.yml: valid Compose, every program it runs is in its image, state off the volume.

No Docker engine runs here, so the file is checked the way Compose reads it (YAML anchors and
merge keys resolved, ``${VAR:-default}`` interpolated) against the Compose Specification's JSON
schema (vendored in ``tests/compose_spec``), and each program a service starts or probes is
looked up in what its image installs: for the image of ``docker/Dockerfile``, its base image,
the Debian packages it installs and the console scripts of every distribution its ``pip
install`` brings in (read from this virtual env, which installs the same requirements); for
third-party images, what their own Dockerfiles install (``THIRD_PARTY_IMAGES``). The two
set-up scripts compose mounts run against a real SeaweedFS and a real PostgreSQL.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lakehouse.platform.settings import load_settings
from tests.object_store import SeaweedFS, running_seaweedfs
from tests.services import PG_USER, running_postgres

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
SCHEMA = Path(__file__).parent / "compose_spec" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
IMAGE = "lakehouse:latest"

#: Programs of the Dockerfile's base image: Python's own, and Debian's essential packages.
BASE_IMAGE_PROGRAMS: dict[str, frozenset[str]] = {
    "python:3.11-slim-bookworm": frozenset(
        {"python", "python3", "pip", "pip3", "bash", "sh", "cat", "env", "ls", "sleep", "test"}
    ),
}
#: The programs each Debian package the Dockerfile installs puts on the PATH (those the file
#: may use; the test fails on a package missing here, so a new one gets its line).
APT_PROGRAMS: dict[str, frozenset[str]] = {
    "openjdk-17-jdk-headless": frozenset({"java", "javac", "jar", "jshell", "keytool"}),
    "maven": frozenset({"mvn"}),
    "procps": frozenset({"ps", "pgrep", "pkill", "free", "top", "uptime", "watch"}),
    "curl": frozenset({"curl"}),
}


@dataclass(frozen=True)
class KnownImage:
    """What a third-party image runs, from its own Dockerfile and entrypoint.

    Attributes:
        programs: programs on its PATH that a health check may run.
        command_heads: words its entrypoint accepts first in ``command`` (a program or a mode);
            ``None``: the entrypoint is the server itself and ``command`` holds only flags.
    """

    programs: frozenset[str]
    command_heads: frozenset[str] | None


THIRD_PARTY_IMAGES: dict[str, KnownImage] = {
    # docker/Dockerfile.go_build of seaweedfs/seaweedfs (the image's build): Alpine with
    # `apk add curl`, /usr/bin/weed, and docker/entrypoint.sh, which takes a mode first.
    "chrislusf/seaweedfs:4.53": KnownImage(
        programs=frozenset({"curl", "weed", "sh"}),
        command_heads=frozenset({"server", "master", "volume", "filer", "s3", "mini", "shell"}),
    ),
    # The official image builds Redis into /usr/local/bin (redis-server, redis-cli); its
    # entrypoint runs the command given.
    "redis:7-bookworm": KnownImage(
        programs=frozenset({"redis-server", "redis-cli", "bash", "sh"}),
        command_heads=frozenset({"redis-server"}),
    ),
    # The official image installs Debian's PostgreSQL 16 with its bin folder on the PATH
    # (postgres, psql, pg_isready); no command is given, its entrypoint starts postgres.
    "postgres:16-bookworm": KnownImage(
        programs=frozenset({"postgres", "psql", "pg_isready", "bash", "sh"}),
        command_heads=frozenset({"postgres"}),
    ),
    # Prometheus's busybox base (sh, wget; no curl) with ENTRYPOINT ["/bin/prometheus"]: the
    # command holds its flags only.
    "prom/prometheus:v2.53.4": KnownImage(
        programs=frozenset({"prometheus", "promtool", "sh", "wget"}), command_heads=None
    ),
    # Its entrypoint starts Grafana; no command is given and no health check runs in it, so
    # none of its programs is relied on.
    "grafana/grafana-oss:11.6.1": KnownImage(programs=frozenset(), command_heads=None),
}

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_SHELL_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}
_REDIRECTIONS = {"<", ">", ">>", "<>", ">&", "<&", ">|", "&>"}
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN")
_ONLY_A_VARIABLE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}$")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` with Compose's interpolation applied to every string in it.

    ``${VAR}``, ``$VAR``, ``${VAR:-default}`` / ``${VAR-default}``, ``${VAR:?error}`` /
    ``${VAR?error}``, ``${VAR:+alt}`` / ``${VAR+alt}``, and ``$$`` for a literal ``$``. A
    variable that is required and unset raises ``KeyError``, as Compose refuses the file.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        is_set = name in env
        is_empty = not env.get(name)
        missing = is_empty if op and op.startswith(":") else not is_set
        if op in (":-", "-"):
            return arg if missing else env[name]
        if op in (":?", "?"):
            if missing:
                raise KeyError(f"{name}: {arg}")
            return env[name]
        if op in (":+", "+"):
            return "" if missing else arg
        return env.get(name, "")

    return _VARIABLE.sub(one, value)


def raw_compose() -> dict[str, Any]:
    """The file with YAML anchors and merge keys resolved, before interpolation."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The file as Compose reads it with the shell environment ``env`` (default: empty)."""
    data = interpolate(raw_compose(), env or {})
    assert isinstance(data, dict)
    return data


def is_built_image(service: dict[str, Any]) -> bool:
    """Whether the service runs the image docker/Dockerfile builds."""
    return "build" in service or service.get("image") == IMAGE


def shell_programs(script: str) -> list[str]:
    """The programs a shell script starts: the first word of each simple command.

    ``exec``, variable assignments and redirections before it are not programs; an ``exec``
    of redirections alone (``exec 3<>/dev/tcp/host/port``) starts none.
    """
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    programs: list[str] = []
    at_start = True
    skip = 0
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if skip:
            skip -= 1
        elif token in _SHELL_SEPARATORS:
            at_start = True
        elif token in _REDIRECTIONS:
            skip = 1  # its target
        elif token.isdigit() and following in _REDIRECTIONS:
            continue  # a file descriptor
        elif at_start and (token == "exec" or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", token)):
            continue
        elif at_start:
            programs.append(token)
            at_start = False
    return programs


def argv_programs(argv: list[str]) -> list[str]:
    """The programs an exec-form command starts: its first word, and a ``-c`` script's."""
    programs = [argv[0]]
    if PurePosixPath(argv[0]).name in ("bash", "sh") and len(argv) > 2 and argv[1] == "-c":
        programs += shell_programs(argv[2])
    return programs


def healthcheck_programs(service: dict[str, Any]) -> list[str]:
    """The programs the service's health check runs (none when it has none)."""
    test = service.get("healthcheck", {}).get("test")
    if test is None or test == ["NONE"]:
        return []
    if isinstance(test, str):
        return shell_programs(test)
    kind, *rest = test
    if kind == "CMD":
        return argv_programs(rest)
    assert kind == "CMD-SHELL", test
    return ["sh", *shell_programs(rest[0])]


# --- what the image installs --------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of docker/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(p[0].upper(), p[1] if len(p) > 1 else "") for p in pairs]


def run_commands(program: str, subcommand: str) -> list[list[str]]:
    """The arguments of every ``<program> ... <subcommand> ARGS`` in the Dockerfile's RUNs."""
    found = []
    for instruction, args in dockerfile_instructions():
        if instruction != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            words = shlex.split(command)
            while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                words = words[1:]  # VAR=value before the program
            if words and PurePosixPath(words[0]).name == program and subcommand in words:
                found.append(words[words.index(subcommand) + 1 :])
    return found


def apt_packages() -> set[str]:
    """The Debian packages the Dockerfile installs with apt-get."""
    return {w for args in run_commands("apt-get", "install") for w in args if not w.startswith("-")}


def pip_requirements() -> list[Requirement]:
    """What the Dockerfile's ``pip install`` installs: the project (``.[extras]``) and others."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = []
    for args in run_commands("pip", "install"):
        for word in (w for w in args if not w.startswith("-")):
            if word.startswith("."):
                extras = re.findall(r"[\w-]+", word.partition("[")[2])
                names = list(project["dependencies"])
                for extra in extras:
                    names += project["optional-dependencies"][extra]
                requirements += [Requirement(n) for n in names]
            else:
                requirements.append(Requirement(word))
    return requirements


def distribution_programs(distribution: metadata.Distribution) -> set[str]:
    """The programs a distribution puts on the PATH: console scripts and files in bin/."""
    programs = {
        ep.name
        for ep in distribution.entry_points
        if ep.group in ("console_scripts", "gui_scripts")
    }
    for file in distribution.files or []:
        parts = PurePosixPath(str(file)).parts
        if len(parts) == 5 and parts[:4] == ("..", "..", "..", "bin"):
            programs.add(parts[4])
    return programs


def pip_programs() -> set[str]:
    """Every program the Dockerfile's ``pip install`` puts on the PATH, with its dependencies.

    The requirements are followed through the installed distributions' metadata (this virtual
    env installs the same ones), evaluating their markers for the extras asked for.
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    programs = set(project.get("scripts", {}))
    seen: set[tuple[str, str]] = set()
    pending = [(r, "") for r in pip_requirements()]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        distribution = metadata.distribution(name)
        programs |= distribution_programs(distribution)
        for wanted in {"", *requirement.extras}:
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            for text in distribution.requires or []:
                pending.append((Requirement(text), wanted))
    return programs


def image_programs() -> set[str]:
    """Every program on the PATH of the image docker/Dockerfile builds."""
    (base,) = [args for instruction, args in dockerfile_instructions() if instruction == "FROM"]
    assert base in BASE_IMAGE_PROGRAMS, f"programs of the base image {base} are not known"
    unknown = apt_packages() - set(APT_PROGRAMS)
    assert not unknown, f"programs of the Debian packages {unknown} are not known"
    programs = set(BASE_IMAGE_PROGRAMS[base]) | pip_programs()
    for package in apt_packages():
        programs |= APT_PROGRAMS[package]
    return programs


# --- the file against the Compose Specification -------------------------------------------


def schema() -> dict[str, Any]:
    """The vendored schema, checked against the digest its README records."""
    data = SCHEMA.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SCHEMA_SHA256, "tests/compose_spec/README.md"
    loaded = json.loads(data)
    assert isinstance(loaded, dict)
    return loaded


def schema_errors(document: dict[str, Any]) -> list[str]:
    """What the Compose Specification's schema finds wrong in ``document``."""
    spec = schema()
    validator_class = jsonschema.validators.validator_for(spec)
    validator_class.check_schema(spec)
    validator = validator_class(spec)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_the_file_follows_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


def _misspelt_key(doc: dict[str, Any]) -> None:
    doc["services"]["seaweedfs"]["comand"] = doc["services"]["seaweedfs"].pop("command")


def _unknown_condition(doc: dict[str, Any]) -> None:
    doc["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"


def _volume_as_list(doc: dict[str, Any]) -> None:
    doc["volumes"]["redis-data"] = ["not", "a", "mapping"]


def _port_as_mapping(doc: dict[str, Any]) -> None:
    doc["services"]["redis"]["ports"] = {"6379": "6379"}


@pytest.mark.parametrize(
    ("break_it", "where"),
    [
        (_misspelt_key, "services/seaweedfs: "),
        (_unknown_condition, "services/mlflow"),
        (_volume_as_list, "volumes/redis-data: "),
        (_port_as_mapping, "services/redis"),
    ],
    ids=lambda v: getattr(v, "__name__", v).strip("_"),
)
def test_the_schema_rejects_what_compose_would(break_it: Any, where: str) -> None:
    broken = copy.deepcopy(compose())
    break_it(broken)
    errors = schema_errors(broken)
    assert errors and all(e.startswith(where) for e in errors), errors


def test_interpolation_follows_compose() -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert interpolate("${SET:-d}|${EMPTY:-d}|${EMPTY-d}|${UNSET-d}", env) == "value|d||d"
    assert interpolate("$$HOME $SET ${SET:+alt} ${UNSET:+alt}.", env) == "$HOME value alt ."
    with pytest.raises(KeyError, match="UNSET: needed"):
        interpolate({"a": ["${UNSET:?needed}"]}, env)


# --- every program in its image -----------------------------------------------------------


def test_the_image_installs_the_programs_the_services_use() -> None:
    programs = image_programs()
    # Sanity of the lookup itself: the scripts of pyspark's wheel, the project's console
    # script, its dependencies' and its dev extra's, a Debian package's.
    assert {"spark-class", "spark-submit", "beeline", "lakehouse", "mlflow", "feast"} <= programs
    assert {"uvicorn", "jupyter", "curl", "java"} <= programs
    assert "weed" not in programs and "pg_isready" not in programs


def test_every_program_a_service_runs_is_in_its_image() -> None:
    programs = image_programs()
    services = compose()["services"]
    missing = []
    for name, service in services.items():
        command = service.get("command")
        if is_built_image(service):
            assert "entrypoint" not in service, name  # the image has none: command is the argv
            used = argv_programs(command) if command else []
            used += healthcheck_programs(service)
            missing += [(name, p) for p in used if p not in programs]
            continue
        image = THIRD_PARTY_IMAGES.get(service["image"])
        assert image is not None, f"{name}: what {service['image']} installs is not known"
        heads = image.command_heads
        if command is not None:
            if heads is None:
                assert all(arg.startswith("--") for arg in command), (name, command)
            else:
                assert command[0] in heads, (name, command)
        missing += [(name, p) for p in healthcheck_programs(service) if p not in image.programs]
    assert missing == []


def test_the_commands_name_the_files_they_are_given() -> None:
    """An absolute path a command runs is inside a folder compose mounts, and exists there."""
    checked = 0
    for name, service in compose()["services"].items():
        mounts = {}
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                mounts[PurePosixPath(target)] = REPO / source
        for arg in service.get("command") or []:
            path = PurePosixPath(arg)
            for target, source in mounts.items():
                if path.is_relative_to(target):
                    assert (source / path.relative_to(target)).is_file(), (name, arg)
                    checked += 1
    assert checked >= 1


# --- where the state lives ----------------------------------------------------------------


def service_settings(service: dict[str, Any]) -> Any:
    """The platform's settings inside a container of ``service`` (its environment only)."""
    env = {k: str(v) for k, v in service["environment"].items()}
    return load_settings(env=env)


def test_tables_live_on_the_object_store_not_on_the_shared_volume() -> None:
    services = compose()["services"]
    store = services["seaweedfs"]
    flags = dict(a.lstrip("-").split("=", 1) for a in store["command"] if "=" in a)
    endpoint = f"http://{flags['ip']}:{flags['s3.port']}"
    assert f"{flags['s3.port']}:{flags['s3.port']}" in store["ports"]
    assert any(v.endswith(":/data") for v in store["volumes"])
    (buckets_service,) = [
        s for s in services.values() if "create_buckets.py" in str(s.get("command"))
    ]
    buckets = set(buckets_service["command"][2:])
    built = {n: s for n, s in services.items() if is_built_image(s)}
    assert {"spark-master", "spark-worker-1", "spark-worker-2", "jupyter", "sql-server"} <= set(
        built
    )
    for name, service in built.items():
        settings = service_settings(service)
        assert settings.tables_on_object_store, name
        assert settings.tables_root == "s3a://lakehouse/tables", name
        assert urlsplit(settings.tables_root).netloc in buckets, name
        assert settings.object_store.endpoint == endpoint, name
        assert settings.object_store.path_style_access and not settings.object_store.ssl_enabled
        assert settings.object_store.has_credentials, name
        # The keys the store makes its admin identity from are the ones every client uses.
        assert settings.object_store.access_key == store["environment"]["AWS_ACCESS_KEY_ID"]
        assert settings.object_store.secret_key == store["environment"]["AWS_SECRET_ACCESS_KEY"]
    for name in ("spark-worker-1", "spark-worker-2", "jupyter", "sql-server", "mlflow"):
        condition = services[name]["depends_on"]["buckets"]["condition"]
        assert condition == "service_completed_successfully", name


def test_mlflow_keeps_runs_in_postgres_and_artifacts_on_the_object_store() -> None:
    services = compose()["services"]
    mlflow = services["mlflow"]
    argv = mlflow["command"]
    options = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    backend = urlsplit(options["--backend-store-uri"])
    assert backend.scheme == "postgresql+psycopg2"  # SQLAlchemy's bare postgresql is psycopg 3
    postgres = services["postgres"]["environment"]
    assert (backend.hostname, backend.port) == ("postgres", 5432)
    assert backend.username == postgres["POSTGRES_USER"]
    assert backend.password == postgres["POSTGRES_PASSWORD"]
    assert backend.path == f"/{postgres['POSTGRES_DB']}"
    artifacts = urlsplit(options["--artifacts-destination"])
    assert artifacts.scheme == "s3" and "--serve-artifacts" in argv
    buckets = services["buckets"]["command"][2:]
    assert artifacts.netloc in buckets
    env = mlflow["environment"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == env["LAKEHOUSE_S3_ENDPOINT"]
    assert env["MLFLOW_TRACKING_URI"] == ""  # the server is not its own client
    # Every other container reaches it by its service name, which it must accept as a host.
    for name, service in services.items():
        if is_built_image(service) and name != "mlflow":
            assert service_settings(service).tracking_uri == "http://mlflow:5000", name
    assert "mlflow:*" in options["--allowed-hosts"].split(",")


def test_feast_registry_is_in_postgres_and_its_server_serves_the_platform_config() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if is_built_image(service):
            settings = service_settings(service)
            registry = urlsplit(settings.feast_registry)
            assert registry.scheme == "postgresql+psycopg2", name
            assert (registry.hostname, registry.path) == ("postgres", "/feast"), name
            assert settings.online_store == "redis" and settings.redis_url == "redis:6379"
    postgres = services["postgres"]
    assert "./docker/postgres/initdb:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    registry = urlsplit(service_settings(services["feast"]).feast_registry)
    assert registry.password == postgres["environment"]["FEAST_DB_PASSWORD"]
    # The feature server reads the configuration the platform renders, not the repo's file.
    script = services["feast"]["command"][2]
    assert shell_programs(script) == ["lakehouse", "feast"]
    assert '-f "$LAKEHOUSE_HOME/feast/feature_store.yaml" serve' in script


def test_no_secret_is_written_in_the_file() -> None:
    """Passwords and keys come from the shell (``${VAR:-local default}``), never the file."""
    found = 0
    for name, service in raw_compose()["services"].items():
        env = service.get("environment", {})
        for key, value in env.items():
            if _SECRET_NAME.search(key):
                assert _ONLY_A_VARIABLE.match(str(value)), (name, key, value)
                found += 1
        for text in [*map(str, env.values()), *map(str, service.get("command") or [])]:
            for password in re.findall(r"://[^/@\s:]+:([^@\s]+)@", text):
                assert _ONLY_A_VARIABLE.match(password), (name, text)
                found += 1
    assert found >= 6


def test_the_shell_environment_overrides_the_secrets() -> None:
    env = {
        "LAKEHOUSE_S3_ACCESS_KEY": "team-key",
        "LAKEHOUSE_S3_SECRET_KEY": "team-secret",
        "FEAST_DB_PASSWORD": "feast-pw",
        "MLFLOW_DB_PASSWORD": "mlflow-pw",
    }
    services = compose(env)["services"]
    settings = service_settings(services["jupyter"])
    assert (settings.object_store.access_key, settings.object_store.secret_key) == (
        "team-key",
        "team-secret",
    )
    assert services["seaweedfs"]["environment"]["AWS_SECRET_ACCESS_KEY"] == "team-secret"
    assert urlsplit(settings.feast_registry).password == "feast-pw"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "mlflow-pw"
    assert "postgresql+psycopg2://mlflow:mlflow-pw@" in " ".join(services["mlflow"]["command"])


# --- the set-up scripts compose mounts, against real servers ------------------------------


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.mark.slow
@pytest.mark.service
def test_the_bucket_script_creates_the_buckets_once(seaweedfs: SeaweedFS) -> None:
    service = compose()["services"]["buckets"]
    script = REPO / "docker" / "seaweedfs" / Path(service["command"][1]).name
    env = {
        **os.environ,
        "LAKEHOUSE_S3_ENDPOINT": seaweedfs.endpoint,
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
    }
    argv = [sys.executable, str(script), *service["command"][2:], "compose-extra"]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines() == [
        "bucket lakehouse: created",
        "bucket compose-extra: created",
    ]
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines() == ["bucket lakehouse: exists", "bucket compose-extra: exists"]
    names = {b["Name"] for b in seaweedfs.client().list_buckets()["Buckets"]}
    assert {"lakehouse", "compose-extra"} <= names
    wrong = {**env, "AWS_SECRET_ACCESS_KEY": "wrong"}
    refused = subprocess.run(
        [*argv[:2], "--timeout", "2", "other"], env=wrong, capture_output=True, text=True
    )
    assert refused.returncode == 1 and "bucket other: the store did not answer" in refused.stderr


@pytest.mark.slow
@pytest.mark.service
def test_the_postgres_init_script_creates_the_feast_database() -> None:
    services = compose({"FEAST_DB_PASSWORD": "feast-pw"})["services"]
    postgres_env = services["postgres"]["environment"]
    registry = urlsplit(service_settings(services["feast"]).feast_registry)
    scripts = sorted((REPO / "docker" / "postgres" / "initdb").iterdir())
    assert scripts and all(os.access(s, os.X_OK) for s in scripts)  # the image runs, not sources
    with running_postgres() as server:
        env = {
            **os.environ,
            "PATH": f"{server.bin_dir}:{os.environ['PATH']}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(server.port),
            "POSTGRES_USER": PG_USER,
            "POSTGRES_DB": "postgres",
            "FEAST_DB_PASSWORD": postgres_env["FEAST_DB_PASSWORD"],
        }
        for script in scripts:
            done = subprocess.run([str(script)], env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        owner = server.query(
            "postgres",
            "SELECT r.rolname, r.rolcanlogin, a.rolpassword IS NOT NULL FROM pg_database d "
            "JOIN pg_roles r ON r.oid = d.datdba JOIN pg_authid a ON a.oid = r.oid "
            f"WHERE d.datname = '{registry.path.lstrip('/')}'",
        )
        assert owner == [(registry.username, True, True)]
        # The registry's role creates its tables in its database (as Feast's SQL registry does).
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=server.port, user=registry.username, dbname="feast"
        )
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("CREATE TABLE feast_probe (id int)")
                cursor.execute("SELECT current_user, current_database()")
                assert cursor.fetchone() == ("feast", "feast")
        finally:
            connection.close()
        # Initialising twice is not asked of it: the image runs the folder on an empty volume.
        again = subprocess.run([str(scripts[0])], env=env, capture_output=True, text=True)
        assert again.returncode != 0 and "already exists" in again.stderr
